import { strict as assert } from 'node:assert';
import { writeFile } from 'node:fs/promises';
import { connect, type Session } from '../../gateway/index.ts';
import { stopAll, type NodeProcess } from '../helpers/processes.ts';
import { until } from '../helpers/until.ts';
import { importRuntime, isGone, startCli, useTempDir, writeModule } from './cli-helpers.ts';

/**
 * `ftmesh dev` end to end: it starts its own nats-server, hosts and gateway,
 * prints what to connect with; a client connects with a printed token (the
 * session opens on that first connect) and gets replies; a change of the
 * actor file reloads every host without losing the session; a host killed
 * behind dev's back is reported and started again; SIGINT stops every
 * process dev started.
 */

/**
 * The user's actor, version `v`: `add` replies with the total and the code
 * version; from version 3 on, clients may also call `get` (which the gateway
 * checks: a reload must restart it).
 */
const tallyModule = (v: number) => `${importRuntime}
export const tally = defineActor({
  name: 'tally',
  initialState: { n: 0 },
  clientHandlers: ${v >= 3 ? "['add', 'get']" : "['add']"},
  handlers: {
    add: (s, by) => { s.n += by; return { n: s.n, v: ${v} }; },
    get: (s) => s.n,
  },
});
`;

describe('cli: ftmesh dev', function () {
  this.timeout(90_000);
  const tmp = useTempDir('cli-dev');
  let dev: NodeProcess;
  let session: Session | undefined;
  /** Every pid dev said it started: all must be gone once it stopped. */
  const pids = new Set<number>();
  const collectPids = () => {
    for (const line of dev.stdout)
      for (const m of line.matchAll(/pid (\d+)/g)) pids.add(Number(m[1]));
  };
  let file: string;
  let url: string;
  let token: string;

  before(async () => {
    file = await writeModule(tmp.path, 'tally.ts', tallyModule(1));
    dev = startCli(['dev', '--actors', file, '--port', '0', '--hosts', '3']);
  });
  after(async () => {
    await session?.close();
    await stopAll();
    collectPids();
    // Whatever dev left behind when a test failed goes by pid.
    for (const pid of pids) if (!isGone(pid)) process.kill(pid, 'SIGKILL');
  });

  it('starts and prints the gateway URL, a join-or-create token per actor, an operator token, what to try and how to stop', async () => {
    await dev.waitForLine(/^stop: {2,}Ctrl-C$/, 60_000);
    collectPids();
    const out = dev.stdout.join('\n');
    url = /^gateway (ws:\/\/\S+) \(pid \d+\)$/m.exec(out)?.[1] ?? '';
    assert.match(url, /^ws:\/\/127\.0\.0\.1:\d+$/);
    token = /^client token for tally \(session tally-1\): (\S+)$/m.exec(out)?.[1] ?? '';
    const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as Record<
      string,
      unknown
    >;
    assert.equal(claims['actor'], 'tally');
    assert.match(out, /^operator token: \S+$/m);
    assert.match(out, /^try a failover: .*demo failover/m);
    assert.match(out, /^watch: .*status --nats nats:\/\/127\.0\.0\.1:\d+$/m);
    assert.match(out, /^ {2}hosts {5}dev-h1 \(pid \d+\), dev-h2 \(pid \d+\), dev-h3 \(pid \d+\)$/m);
    assert.equal(pids.size, 5, 'nats-server, 3 hosts and the gateway');
  });

  it('a client connects with the printed token and gets a reply (its session opens on the first connect)', async () => {
    session = await connect([url], { token });
    assert.deepEqual(await session.request('add', 5), { n: 5, v: 1 });
  });

  it('a change of the actor file reloads the hosts one at a time and the session keeps its state', async () => {
    const before = dev.stdout.length;
    await writeFile(file, tallyModule(2));
    const done = await dev.waitForLine(
      /^ftmesh dev: reloaded in [\d.]+ s; 1 sessions kept$/,
      60_000,
    );
    const lines = dev.stdout.slice(before);
    assert.deepEqual(
      lines.filter((l) => / reloaded \(pid/.test(l)).map((l) => /host (\S+)/.exec(l)?.[1]),
      ['dev-h1', 'dev-h2', 'dev-h3'],
      `one at a time:\n${lines.join('\n')} ${done}`,
    );
    collectPids();
    assert.deepEqual(await session!.request('add', 1), { n: 6, v: 2 });
    assert.equal(
      session!.reconnects,
      0,
      'the gateway was not restarted: the actors kept their handlers',
    );
  });

  it('a host killed behind its back is reported in one line and started again; the session lives on', async () => {
    const victim = /^ftmesh dev: host dev-h2 reloaded \(pid (\d+)\)$/m.exec(
      dev.stdout.join('\n'),
    )?.[1];
    process.kill(Number(victim), 'SIGKILL');
    await dev.waitForLine(
      new RegExp(
        `^ftmesh dev: host dev-h2 \\(pid ${victim}\\) was killed by SIGKILL; starting it again$`,
      ),
      10_000,
    );
    await dev.waitForLine(/^ftmesh dev: host dev-h2 is back \(pid \d+\)$/, 30_000);
    collectPids();
    assert.deepEqual(await session!.request('add', 1), { n: 7, v: 2 });
  });

  it('a reload that changes what clients may call restarts the gateway too; the client reconnects by itself', async () => {
    const before = dev.stdout.length;
    await writeFile(file, tallyModule(3));
    await dev.waitForLine(
      /^ftmesh dev: the actors changed: gateway restarted on ws:\/\/\S+ \(pid \d+\)/,
      60_000,
    );
    await dev.waitForLine(/^ftmesh dev: reloaded in [\d.]+ s; 1 sessions kept$/, 60_000);
    assert.ok(
      dev.stdout.slice(before).some((l) => /gateway restarted on (\S+)/.exec(l)?.[1] === url),
      'on the same URL',
    );
    collectPids();
    assert.equal(await session!.request('get'), 7);
    assert.equal(session!.reconnects, 1);
  });

  it('SIGINT stops every process it started and exits 0', async () => {
    await session!.close();
    session = undefined;
    dev.signal('SIGINT');
    const exit = await dev.exited;
    assert.equal(exit.code, 0, dev.stderr.slice(-10).join('\n'));
    assert.match(dev.stdout.at(-1)!, /^ftmesh dev: stopped$/);
    collectPids();
    await until(() => [...pids].every(isGone), {
      message: `every pid gone: ${[...pids].filter((p) => !isGone(p)).join(', ')}`,
    });
  });
});
