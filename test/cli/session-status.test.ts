import { strict as assert } from 'node:assert';
import type { MeshClient } from '../../runtime/index.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { createTestClient, stopAll, type NodeProcess } from '../helpers/processes.ts';
import { until } from '../helpers/until.ts';
import { assertOneLineError, DEMO_ACTORS, runCli, startCli } from './cli-helpers.ts';

/**
 * `ftmesh session open|list|close` and `ftmesh status` against two real host
 * processes: what they print, the JSON shapes, and a failover (a SIGKILL of
 * the primary) as status shows it.
 */

describe('cli: session and status', function () {
  this.timeout(60_000);
  const nats = useNatsServer();
  const hosts = new Map<string, NodeProcess>();
  let mesh: MeshClient & { errors: Error[] };
  const sid = 'cli-ss-1';

  before(async () => {
    mesh = await createTestClient(nats.url);
    for (const id of ['ss1', 'ss2'])
      hosts.set(id, startCli(['host', '--nats', nats.url, '--id', id, '--actors', DEMO_ACTORS]));
    await Promise.all(
      [...hosts].map(([id, p]) => p.waitForLine(new RegExp(`^ready ${id}$`), 30_000)),
    );
    await until(() => mesh.liveHosts().length === 2, { message: 'both hosts live' });
  });
  after(async () => {
    await mesh?.close();
    await stopAll();
  });

  const json = async (args: string[]) => {
    const run = await runCli([...args, '--json', '--nats', nats.url]);
    assert.equal(run.code, 0, run.stderr.join('\n'));
    return JSON.parse(run.stdout.at(-1)!) as Record<string, any>;
  };

  it('session open places a session and says where', async () => {
    const run = await runCli(['session', 'open', 'demo-ledger', sid, '--nats', nats.url]);
    assert.equal(run.code, 0, run.stderr.join('\n'));
    assert.match(
      run.stdout[0]!,
      new RegExp(`^opened ${sid} \\(demo-ledger\\): primary ss\\d, standby ss\\d, epoch 1$`),
    );
    for (let n = 0; n < 3; n++) await mesh.request(sid, 'append', `t:${n}`);
  });

  it('session open of an actor no host runs: one line, exit 1', async () => {
    const run = await runCli(['session', 'open', 'no-such-actor', 'cli-ss-x', '--nats', nats.url]);
    assertOneLineError(run, 1, /does not run actor no-such-actor: start hosts with --actors/);
  });

  it('session list --json: actor, primary, standby, epoch, both seqs and the lag', async () => {
    const { sessions } = await json(['session', 'list']);
    const row = (sessions as Record<string, unknown>[]).find((s) => s['sid'] === sid)!;
    const owner = mesh.owner(sid)!;
    assert.deepEqual(
      { ...row, primary_seq: undefined, standby_seq: undefined, lag: undefined },
      {
        sid,
        actor: 'demo-ledger',
        primary: owner.primary,
        standby: owner.standby,
        epoch: 1,
        term: owner.term,
        primary_seq: undefined,
        standby_seq: undefined,
        lag: undefined,
      },
    );
    assert.equal(row['primary_seq'], 3);
    assert.equal(row['lag'], (row['primary_seq'] as number) - (row['standby_seq'] as number));
  });

  it('session list prints a table', async () => {
    const run = await runCli(['session', 'list', '--nats', nats.url]);
    assert.equal(run.code, 0);
    assert.match(run.stdout[0]!, /^SESSION\s+ACTOR\s+PRIMARY\s+STANDBY\s+EPOCH\s+SEQ\s+LAG$/);
    assert.ok(
      run.stdout.some((l) =>
        new RegExp(`^${sid}\\s+demo-ledger\\s+ss\\d\\s+ss\\d\\s+1\\s+3\\s`).test(l),
      ),
    );
  });

  it('status --json: hosts, sessions and failovers', async () => {
    const status = await json(['status']);
    assert.deepEqual(Object.keys(status).sort(), ['failovers', 'hosts', 'sessions', 'unanswered']);
    const live = (status['hosts'] as Record<string, unknown>[]).filter((h) => h['live']);
    assert.deepEqual(live.map((h) => h['id']).sort(), ['ss1', 'ss2']);
    for (const h of live)
      assert.deepEqual(Object.keys(h).sort(), [
        'capacity',
        'draining',
        'id',
        'live',
        'primaries',
        'standbys',
      ]);
    assert.ok((status['sessions'] as { sid: string }[]).some((s) => s.sid === sid));
    assert.deepEqual(status['failovers'], []);
  });

  it('status shows a failover as a timeline in ms from its detection', async () => {
    const { primary, epoch } = mesh.owner(sid)!;
    hosts.get(primary)!.signal('SIGKILL');
    await until(() => (mesh.owner(sid)?.epoch ?? 0) > epoch, {
      timeoutMs: 10_000,
      message: 'the failover',
    });
    await mesh.request(sid, 'append', 't:3'); // the new primary's first reply
    const status = await json(['status']);
    const f = (status['failovers'] as Record<string, any>[]).find((r) => r['sid'] === sid)!;
    assert.equal(f['from'], primary);
    assert.notEqual(f['to'], primary);
    assert.match(f['cause'] as string, /^(advisory|heartbeat|probe)$/);
    for (const k of ['promoted_ms', 'first_reply_ms']) assert.equal(typeof f[k], 'number', k);
    assert.ok(f['promoted_ms'] >= 0 && f['first_reply_ms'] >= f['promoted_ms']);
    const gone = (status['hosts'] as Record<string, any>[]).find((h) => h['id'] === primary)!;
    assert.equal(gone['live'], false);

    const text = await runCli(['status', '--nats', nats.url]);
    assert.equal(text.code, 0);
    const line = text.stdout.find((l) => l.startsWith(`${sid} ${primary}→`));
    assert.match(
      line ?? '',
      /: detected \+0 ms, promoted \+[\d.]+ ms, .*first reply \+[\d.]+ ms, re-protected/,
    );
    assert.ok(!/\d{13}/.test(text.stdout.join('\n')), 'no raw epoch timestamps');
  });

  it('session close ends it; closing it again: one line, exit 1', async () => {
    const run = await runCli(['session', 'close', sid, '--nats', nats.url]);
    assert.equal(run.code, 0, run.stderr.join('\n'));
    assert.deepEqual(run.stdout, [`closed ${sid}`]);
    assertOneLineError(
      await runCli(['session', 'close', sid, '--nats', nats.url]),
      1,
      new RegExp(`session ${sid} is not open`),
    );
    const { sessions } = await json(['session', 'list']);
    assert.ok(!(sessions as { sid: string }[]).some((s) => s.sid === sid));
  });
});
