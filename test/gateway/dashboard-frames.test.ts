/**
 * The operator frames the dashboard uses (PROTOCOL.md, "mesh" and "crash")
 * and the pages a gateway serves with `dashboard: true` ("Pages"): a real
 * nats-server, `ftmesh host` processes (two with --allow-crash, one
 * without), a gateway in this process, raw WebSocket clients.
 */
import { strict as assert } from 'node:assert';
import { request } from 'node:http';
import { exampleActors } from '../../actors/index.ts';
import { createGateway, mintToken, type Gateway } from '../../gateway/index.ts';
import type { CrashAnswer, MeshAnswer } from '../../gateway/operator-view.ts';
import type { MeshClient } from '../../runtime/index.ts';
import { collectErrors } from '../helpers/errors.ts';
import { RawClient } from '../helpers/gateway-clients.ts';
import { useNatsServer } from '../helpers/nats.ts';
import {
  createTestClient,
  startHostProcesses,
  stopAll,
  type NodeProcess,
} from '../helpers/processes.ts';
import { until } from '../helpers/until.ts';

const secret = 'dashboard-frames-test-secret-0123456789';
const operator = () => mintToken({ secret, sub: 'ops', role: 'operator' });

/** A plain HTTP GET (or another method) without redirects or path normalisation. */
function http(
  port: number,
  path: string,
  method = 'GET',
): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks).toString('utf8'),
        }),
      );
    });
    req.on('error', reject);
    req.end();
  });
}

describe('gateway: the dashboard frames (mesh, crash) and pages', function () {
  const reported = collectErrors();
  afterEach(() => reported.assertNone());
  const nats = useNatsServer();
  const procs = new Map<string, NodeProcess>();
  const raws: RawClient[] = [];
  let mesh: MeshClient & { errors: Error[] };
  let gw: Gateway;
  let plain: Gateway;
  let ops: RawClient;
  let frames = 0;

  /** Sends an operator frame and resolves with its answer frame. */
  const ask = async (frame: object) => {
    const id = `f${++frames}`;
    ops.send({ ...frame, id });
    return ops.answer(id, 10_000);
  };
  const meshAnswer = async () => {
    const f = await ask({ type: 'mesh' });
    assert.equal(f.type, 'reply', JSON.stringify(f));
    return (f as { result: MeshAnswer }).result;
  };

  before(async function () {
    this.timeout(40_000);
    mesh = await createTestClient(nats.url);
    await Promise.all([
      startHostProcesses(procs, nats.url, ['df-a', 'df-b'], mesh, ['--allow-crash']),
      startHostProcesses(procs, nats.url, ['df-c'], mesh),
    ]);
    gw = await createGateway({
      nats: nats.url,
      actors: exampleActors,
      auth: { secret },
      id: 'df-gw',
      udpPort: false,
      dashboard: true,
      onError: reported.onError,
    });
    plain = await createGateway({
      nats: nats.url,
      actors: exampleActors,
      auth: { secret },
      id: 'df-plain',
      udpPort: false,
      onError: reported.onError,
    });
    ops = await RawClient.hello(gw.url, operator());
    raws.push(ops);
  });
  after(async function () {
    this.timeout(30_000);
    for (const c of raws) c.close();
    await gw?.close();
    await plain?.close();
    await mesh?.close();
    await stopAll();
  });

  it('mesh: hosts with load and state, open sessions with both copies seq and the lag; a client token is refused', async () => {
    await mesh.placeSession('counter', 'df-1', { primary: 'df-a', standby: 'df-b' });
    for (let i = 0; i < 3; i++) await mesh.request('df-1', 'add', 1);
    // The hosts report their load a moment after the placement.
    const answer = (await until(
      async () => {
        const a = await meshAnswer();
        const s = a.sessions.find((x) => x.sid === 'df-1');
        const loaded = a.hosts.some((h) => h.id === 'df-a' && h.primaries === 1);
        return loaded && s?.primarySeq !== undefined && s.primarySeq >= 3 && s.lag === 0
          ? a
          : undefined;
      },
      { message: 'df-1 at seq 3 on both copies, df-a loaded' },
    ))!;
    assert.ok(Math.abs(answer.at - Date.now()) < 5_000, 'at: the gateway clock');
    const host = (id: string) => answer.hosts.find((h) => h.id === id);
    for (const id of ['df-a', 'df-b', 'df-c'])
      assert.equal(host(id)?.live, true, `${id} live: ${JSON.stringify(answer.hosts)}`);
    assert.equal(host('df-a')?.primaries, 1);
    assert.equal(host('df-b')?.standbys, 1);
    assert.equal(host('df-a')?.capacity, 10_000);
    assert.equal(host('df-a')?.draining, false);
    const session = answer.sessions.find((x) => x.sid === 'df-1')!;
    assert.ok(session.primarySeq! >= 3);
    assert.deepEqual(session, {
      sid: 'df-1',
      actor: 'counter',
      primary: 'df-a',
      standby: 'df-b',
      epoch: 1,
      term: mesh.owner('df-1')!.term,
      primarySeq: session.primarySeq,
      standbySeq: session.primarySeq,
      lag: 0,
    });
    assert.deepEqual(answer.failovers, []);
    assert.deepEqual(answer.unanswered, []);

    const client = await RawClient.hello(gw.url, mintToken({ secret, sub: 'ann', sid: 'df-1' }));
    raws.push(client);
    for (const frame of [
      { type: 'mesh', id: 'm1' },
      { type: 'crash', id: 'c1', sid: 'df-1' },
    ]) {
      client.send(frame);
      const refused = await client.answer(frame.id);
      assert.equal(refused.type === 'error' && refused.code, 'forbidden', JSON.stringify(refused));
    }
    assert.ok(procs.get('df-a')!.child.exitCode === null, 'nobody crashed');
  });

  it('crash: a host started without --allow-crash refuses (crash_not_allowed) and lives on', async () => {
    await mesh.placeSession('counter', 'df-2', { primary: 'df-c', standby: 'df-a' });
    const refused = await ask({ type: 'crash', sid: 'df-2' });
    assert.equal(refused.type, 'error');
    if (refused.type !== 'error') return;
    assert.equal(refused.code, 'crash_not_allowed');
    assert.equal(refused.retryable, false);
    assert.match(refused.message, /df-c refuses to crash: .*--allow-crash/);
    assert.equal(await mesh.request('df-2', 'add', 5), 5, 'df-c still serves df-2');
    assert.equal(procs.get('df-c')!.child.exitCode, null);
    assert.equal(mesh.owner('df-2')?.epoch, 1);
  });

  it('crash: malformed frames, an unknown session and a stale epoch are refused; nobody dies', async () => {
    const codes = async (frame: object) => {
      const f = await ask(frame);
      return f.type === 'error' ? f.code : `reply ${JSON.stringify(f)}`;
    };
    assert.equal(await codes({ type: 'crash' }), 'malformed_frame');
    assert.equal(await codes({ type: 'crash', sid: 'no such/sid' }), 'malformed_frame');
    assert.equal(await codes({ type: 'crash', sid: 'df-1', epoch: -1 }), 'malformed_frame');
    assert.equal(await codes({ type: 'crash', sid: 'df-none' }), 'unknown_session');
    assert.equal(await codes({ type: 'crash', sid: 'df-1', epoch: 7 }), 'stale_epoch');
    for (const id of ['df-a', 'df-b', 'df-c'])
      assert.equal(procs.get(id)!.child.exitCode, null, `${id} runs`);
    assert.equal(mesh.owner('df-1')?.epoch, 1);
  });

  it('crash: the host serving the primary answers, then dies of SIGKILL; the next mesh answer has the failover timeline with the kill before the detection', async () => {
    const before = mesh.owner('df-1')!;
    const reply = await ask({ type: 'crash', sid: 'df-1', epoch: before.epoch });
    assert.equal(reply.type, 'reply', JSON.stringify(reply));
    const crash = (reply as { result: CrashAnswer }).result;
    assert.deepEqual(
      { sid: crash.sid, host: crash.host, epoch: crash.epoch, pid: crash.pid },
      { sid: 'df-1', host: 'df-a', epoch: 1, pid: procs.get('df-a')!.pid },
    );
    const exit = await procs.get('df-a')!.exited;
    assert.equal(exit.signal, 'SIGKILL');
    await until(() => mesh.owner('df-1')?.epoch === 2 && mesh.owner('df-1')?.primary === 'df-b', {
      message: 'df-b primary of df-1 in epoch 2',
    });
    // A reply from the new primary: the record's first reply.
    assert.equal(await mesh.request('df-1', 'add', 1), 4);
    const f = (await until(
      async () => {
        const a = await meshAnswer();
        const x = a.failovers.find((r) => r.sid === 'df-1' && r.epoch === 2);
        return x?.firstReplyMs !== undefined && x.reprotectedMs !== undefined ? x : undefined;
      },
      { timeoutMs: 10_000, message: 'the failover of df-1, replied and re-protected' },
    ))!;
    assert.equal(f.from, 'df-a');
    assert.equal(f.to, 'df-b');
    assert.ok(Math.abs(f.detectedAt - crash.at) < 5_000);
    assert.ok(f.crashMs !== undefined && f.crashMs < 0, `kill before the detection: ${f.crashMs}`);
    assert.ok(f.promotedMs! >= 0 && f.firstReplyMs! >= f.promotedMs!, JSON.stringify(f));
    assert.equal(f.standby, 'df-c');
    // A second crash frame for the epoch that is over kills nobody.
    const again = await ask({ type: 'crash', sid: 'df-1', epoch: before.epoch });
    assert.equal(again.type === 'error' && again.code, 'stale_epoch');
    assert.equal(procs.get('df-b')!.child.exitCode, null);
  });

  it('pages: /dashboard/, /demo/ and the SDK bundle with dashboard on; /healthz and 426 as before; none of them without it', async () => {
    const page = await http(gw.port, '/dashboard/');
    assert.equal(page.status, 200);
    assert.match(String(page.headers['content-type']), /^text\/html/);
    const csp = String(page.headers['content-security-policy']);
    assert.match(csp, /default-src 'self'/);
    assert.ok(csp.includes(`connect-src 'self' ws://127.0.0.1:${gw.port} `), csp);
    assert.match(page.body, /<script type="module" src="dashboard.js"><\/script>/);
    assert.equal((await http(gw.port, '/dashboard')).headers['location'], '/dashboard/');
    assert.equal((await http(gw.port, '/dashboard?x=1')).status, 301);
    const script = await http(gw.port, '/dashboard/dashboard.js');
    assert.match(String(script.headers['content-type']), /^text\/javascript/);
    assert.match(script.body, /from '\.\.\/ftmesh-client\.js'/);
    assert.match((await http(gw.port, '/demo/')).body, /<canvas id="world"/);
    assert.match((await http(gw.port, '/demo/demo.js')).body, /session\.request\('input'/);
    assert.match(String((await http(gw.port, '/demo/style.css')).headers['content-type']), /css/);
    const sdk = await http(gw.port, '/ftmesh-client.js');
    assert.equal(sdk.status, 200);
    assert.match(String(sdk.headers['content-type']), /^text\/javascript/);
    assert.match(sdk.body, /ftmesh\.v1/);
    assert.match(sdk.body, /export\s*\{[^}]*\bconnect\b/);
    assert.equal((await http(gw.port, '/dashboard/', 'HEAD')).status, 200);
    assert.equal((await http(gw.port, '/dashboard/', 'POST')).status, 405);
    // Only the table's paths: nothing else reaches the disk.
    for (const path of [
      '/dashboard/..%2f..%2fpackage.json',
      '/dashboard/../package.json',
      '/dashboard/index.html',
      '/gateway.ts',
      '/',
    ])
      assert.equal((await http(gw.port, path)).status, 426, path);
    assert.deepEqual(
      [(await http(gw.port, '/healthz')).status, (await http(gw.port, '/healthz')).body],
      [200, 'ok'],
    );
    for (const path of ['/dashboard/', '/demo/', '/ftmesh-client.js'])
      assert.equal((await http(plain.port, path)).status, 426, `${path} without dashboard`);
    // The WebSocket still upgrades on any path of a gateway serving pages.
    const c = await RawClient.hello(`${gw.url}/dashboard/`, operator());
    raws.push(c);
  });
});
