import { strict as assert } from 'node:assert';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { get } from 'node:http';
import { createServer } from 'node:net';
import { WebSocket } from 'ws';
import { exampleActors } from '../../actors/index.ts';
import {
  CloseCode,
  ErrorCode,
  GatewayUnreachableError,
  SUBPROTOCOL,
  connect,
  createGateway,
  defaultLimits,
  mintToken,
  type Gateway,
  type ServerFrame,
} from '../../gateway/index.ts';
import { createClient, type MeshClient } from '../../runtime/index.ts';
import { collectErrors } from '../helpers/errors.ts';
import { RawClient } from '../helpers/gateway-clients.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { spawnNode, stopAll, type NodeProcess } from '../helpers/processes.ts';
import { until } from '../helpers/until.ts';

/**
 * One test per point where gateway/PROTOCOL.md and the gateway (or its SDK,
 * or the hosts behind it) once disagreed: real nats-server, host and gateway
 * processes, raw WebSocket clients where the point is about the wire.
 */

const secret = 'gateway-conformance-test-secret-0123456789';
const token = (sub: string, sid?: string, role: 'client' | 'operator' = 'client') =>
  mintToken({ secret, sub, role, ...(sid ? { sid } : {}) });

/** A token signed like mintToken's, with exactly these claims (mintToken refuses bad ones). */
function signClaims(claims: object): string {
  const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

const protocolDoc = readFileSync(new URL('../../gateway/PROTOCOL.md', import.meta.url), 'utf8');

/** The JSON examples of the `### <heading>` section of PROTOCOL.md, in order. */
function docExamples(heading: string): unknown[] {
  const start = protocolDoc.indexOf(`\n### ${heading}`);
  assert.ok(start >= 0, `PROTOCOL.md has a section "### ${heading}"`);
  const end = protocolDoc.indexOf('\n#', start + 1);
  const section = protocolDoc.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/```json\n([\s\S]*?)```/g)].map((m) => JSON.parse(m[1]!));
}

const sortedKeys = (o: unknown) => Object.keys(o as object).sort();

/** A WebSocket handshake: the HTTP status when refused, the selected subprotocol when open. */
function handshake(
  url: string,
  protocols: string[],
): Promise<{ status: number } | { protocol: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols);
    ws.on('error', reject);
    ws.once('unexpected-response', (req, res) => {
      resolve({ status: res.statusCode ?? 0 });
      req.destroy();
    });
    ws.once('open', () => {
      resolve({ protocol: ws.protocol });
      ws.terminate();
    });
  });
}

/** `GET /healthz` on a fresh connection (no keep-alive to hold the listener). */
function healthz(wsUrl: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = get(`${wsUrl.replace(/^ws/, 'http')}/healthz`, { agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
  });
}

/** A TCP port on 127.0.0.1 that nothing listens on (it did a moment ago). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as { port: number };
  await new Promise<void>((r) => server.close(() => r()));
  return port;
}

describe('gateway conformance: PROTOCOL.md and the gateway agree', function () {
  const reported = collectErrors();
  afterEach(() => reported.assertNone());
  const nats = useNatsServer();
  let client: MeshClient;
  /** Default limits. */
  let gw: Gateway;
  const hosts = new Map<string, NodeProcess>();
  const raws: RawClient[] = [];
  const raw = async (url: string, tok: string) => {
    const c = await RawClient.hello(url, tok);
    raws.push(c);
    return c;
  };
  /** Opens a socket, sends `hello`, resolves with the close code. */
  const refused = async (hello: object) => {
    const c = await RawClient.open(gw.url);
    raws.push(c);
    c.send(hello);
    return (await c.closed).code;
  };

  before(async function () {
    this.timeout(30_000);
    client = await createClient({ nats: nats.url, onError: reported.onError });
    // Detection is not under test: a host SIGSTOPped for a moment (the drain
    // test) must not be declared dead. cf2 traces, so its handler stacks show.
    for (const [id, extra] of [
      ['cf1', []],
      ['cf2', ['--trace']],
    ] as const)
      hosts.set(
        id,
        spawnNode('cli/ftmesh.ts', [
          'host',
          '--nats',
          nats.url,
          '--id',
          id,
          '--heartbeat-timeout',
          '5000',
          ...extra,
        ]),
      );
    await Promise.all(
      [...hosts].map(([id, p]) => p.waitForLine(new RegExp(`^ready ${id}`), 20_000)),
    );
    await until(() => ['cf1', 'cf2'].every((id) => client.liveHosts().includes(id)), {
      message: 'cf1 and cf2 heard',
    });
    await client.placeSession('counter', 'cf-a', { primary: 'cf1', standby: 'cf2' });
    gw = await createGateway({
      nats: nats.url,
      actors: exampleActors,
      auth: { secret },
      id: 'cf-gw',
      onError: reported.onError,
    });
  });
  after(async function () {
    this.timeout(30_000);
    for (const c of raws) c.close();
    await gw?.close();
    await client?.close();
    await stopAll();
  });

  it('1. a handshake offering only other subprotocols is refused with HTTP 400; none, or ftmesh.v1 among others, is accepted', async () => {
    assert.deepEqual(await handshake(gw.url, ['chat']), { status: 400 });
    assert.deepEqual(await handshake(gw.url, ['chat', 'superchat']), { status: 400 });
    assert.deepEqual(await handshake(gw.url, ['chat', SUBPROTOCOL]), { protocol: SUBPROTOCOL });
    assert.deepEqual(await handshake(gw.url, [SUBPROTOCOL]), { protocol: SUBPROTOCOL });
    // None offered: accepted, and the hello decides.
    const ws = new WebSocket(gw.url);
    try {
      const first = new Promise<ServerFrame>((resolve, reject) => {
        ws.once('message', (data: Buffer) => resolve(JSON.parse(data.toString()) as ServerFrame));
        ws.once('close', (code) => reject(new Error(`closed with ${code} instead of a welcome`)));
        ws.once('error', reject);
      });
      await new Promise((resolve) => ws.once('open', resolve));
      assert.equal(ws.protocol, '');
      ws.send(JSON.stringify({ type: 'hello', v: 1, token: token('ann', 'cf-a') }));
      assert.equal((await first).type, 'welcome');
    } finally {
      ws.terminate();
    }
  });

  it('2. the hello needs v (else 4400) and the token needs role (else 4401)', async () => {
    const claims = { sub: 'ann', sid: 'cf-a', exp: Math.floor(Date.now() / 1000) + 600 };
    // The same hello and claims with v and role are welcomed: what is missing is what fails.
    await raw(gw.url, signClaims({ ...claims, role: 'client' }));
    assert.equal(await refused({ type: 'hello', token: token('ann', 'cf-a') }), CloseCode.protocol);
    assert.equal(
      await refused({ type: 'hello', v: 1, token: signClaims(claims) }),
      CloseCode.tokenInvalid,
    );
  });

  it('3. a draining gateway answers /healthz with 503 draining and refuses handshakes with 503 until its last connection closed (1001) after its reply', async function () {
    this.timeout(40_000);
    const gwProc = spawnNode('cli/ftmesh.ts', ['gateway', '--nats', nats.url, '--id', 'cf-gw-d'], {
      env: { FTMESH_SECRET: secret },
    });
    const cf1 = hosts.get('cf1')!;
    try {
      const url = (await gwProc.waitForLine(/^ready gateway cf-gw-d /, 20_000)).split(' ')[3]!;
      assert.deepEqual(await healthz(url), { status: 200, body: 'ok' });
      await client.placeSession('counter', 'cf-drain', { primary: 'cf1', standby: 'cf2' });
      const dana = await raw(url, token('dana', 'cf-drain'));
      const op = await raw(url, token('root', undefined, 'operator'));
      // The session's primary stops: dana's request stays in flight, the drain waits for it.
      cf1.signal('SIGSTOP');
      try {
        dana.send({ type: 'request', id: 'held', name: 'add', payload: 1 });
        let n = 0;
        await until(
          async () => {
            op.send({ type: 'status', id: `s${++n}` });
            const r = await op.answer(`s${n}`);
            return (
              r.type === 'reply' &&
              (r.result as { gateway: { inFlight: number } }).gateway.inFlight === 1
            );
          },
          { message: 'the request forwarded, in flight' },
        );
        gwProc.signal('SIGTERM');
        const draining = await until(
          () => healthz(url).then((h) => (h.status === 503 ? h : undefined)),
          { message: '/healthz answers 503' },
        );
        assert.deepEqual(draining, { status: 503, body: 'draining' });
        assert.deepEqual(await handshake(url, [SUBPROTOCOL]), { status: 503 });
        assert.deepEqual(await healthz(url), { status: 503, body: 'draining' }, 'still draining');
        assert.equal(dana.closeCode, undefined, 'the connection with a request in flight stays');
      } finally {
        cf1.signal('SIGCONT');
      }
      const answer = await dana.answer('held', 10_000);
      assert.deepEqual(answer, { type: 'reply', id: 'held', result: 1 });
      assert.equal((await dana.closed).code, CloseCode.goingAway);
      assert.deepEqual(await gwProc.exited, { code: 0, signal: null });
      await assert.rejects(healthz(url), /ECONNREFUSED/, 'the listener is closed once stopped');
    } finally {
      cf1.signal('SIGCONT');
      await gwProc.stop();
    }
  });

  it('4. a client that resends each rate_limited request after its retryAfterMs is never closed 4429 and gets every reply', async () => {
    const limits = { requestsPerSecond: 200, requestBurst: 20, maxRejectedPerSecond: 200 };
    const gwRate = await createGateway({
      nats: nats.url,
      actors: exampleActors,
      auth: { secret },
      id: 'cf-gw-rate',
      limits,
      onError: reported.onError,
    });
    const timers = new Set<NodeJS.Timeout>();
    try {
      await client.placeSession('counter', 'cf-rate', { primary: 'cf1', standby: 'cf2' });
      const c = await raw(gwRate.url, token('eager', 'cf-rate'));
      // More at once than the burst, and more refused at once than 4429 allows twice.
      const n = 150;
      const waits: number[] = [];
      c.ws.on('message', (data, isBinary) => {
        if (isBinary) return;
        const f = JSON.parse((data as Buffer).toString()) as ServerFrame;
        if (f.type !== 'error' || f.id === undefined) return;
        assert.equal(f.code, ErrorCode.rateLimited, f.message);
        waits.push(f.retryAfterMs!);
        const id = f.id;
        const t = setTimeout(() => {
          timers.delete(t);
          c.send({ type: 'request', id, name: 'add', payload: 1 });
        }, f.retryAfterMs);
        timers.add(t);
      });
      for (let i = 0; i < n; i++) c.send({ type: 'request', id: `r${i}`, name: 'add', payload: 1 });
      const replies = () => new Set(c.frames.flatMap((f) => (f.type === 'reply' ? [f.id] : [])));
      await until(() => replies().size === n || c.closeCode !== undefined, {
        timeoutMs: 10_000,
        message: `${n} replies`,
      });
      assert.equal(c.closeCode, undefined, 'never closed (4429)');
      assert.equal(replies().size, n);
      assert.equal(await client.request('cf-rate', 'get'), n, 'each applied once');
      // The burst and what the refill brought while sending went through at once.
      const refusedAtOnce = n - limits.requestBurst - 10;
      assert.ok(waits.length >= refusedAtOnce, `refused: ${waits.length}`);
      assert.ok(
        Math.max(...waits) >= (refusedAtOnce * 1000) / limits.requestsPerSecond,
        `waits spread over the refill, not all 1 ms: max ${Math.max(...waits)}`,
      );
    } finally {
      for (const t of timers) clearTimeout(t);
      await gwRate.close();
    }
  });

  it('5. the default requestBurst is at least maxInFlight; the welcome announces the defaults, as PROTOCOL.md shows them', async () => {
    const c = await raw(gw.url, token('ann', 'cf-a'));
    const limits = c.welcome!.limits;
    assert.ok(
      limits.requestBurst >= limits.maxInFlight,
      `requestBurst ${limits.requestBurst} < maxInFlight ${limits.maxInFlight}`,
    );
    assert.deepEqual(limits, defaultLimits);
    const [welcome] = docExamples('welcome') as [{ limits: unknown }];
    assert.deepEqual(welcome.limits, defaultLimits, "the doc's welcome example has the defaults");
  });

  it("6. the status result has exactly the fields of PROTOCOL.md's example", async () => {
    const [, doc] = docExamples('status') as [
      unknown,
      { gateway: object; hosts: string[]; session: object },
    ];
    assert.ok(doc, 'PROTOCOL.md shows a status result');
    const op = await raw(gw.url, token('root', undefined, 'operator'));
    op.send({ type: 'status', id: 's1', sid: 'cf-a' });
    op.send({ type: 'status', id: 's2' });
    op.send({ type: 'status', id: 's3', sid: 'no-such-session' });
    const results = await Promise.all(
      ['s1', 's2', 's3'].map(async (id) => {
        const r = await op.answer(id);
        assert.equal(r.type, 'reply', JSON.stringify(r));
        return (r as { result: Record<string, unknown> }).result;
      }),
    );
    const [withSid, without, unknown] = results as [
      { gateway: object; hosts: string[]; session: object },
      object,
      { session: unknown },
    ];
    const hint = 'document a new field in PROTOCOL.md ("status"), or drop it';
    assert.deepEqual(sortedKeys(withSid), sortedKeys(doc), hint);
    assert.deepEqual(sortedKeys(withSid.gateway), sortedKeys(doc.gateway), hint);
    assert.deepEqual(sortedKeys(withSid.session), sortedKeys(doc.session), hint);
    assert.deepEqual(withSid.session, {
      actor: 'counter',
      primary: 'cf1',
      standby: 'cf2',
      epoch: (withSid.session as { epoch: number }).epoch,
      term: (withSid.session as { term: number }).term,
      closed: false,
    });
    assert.deepEqual(withSid.hosts.slice().sort(), ['cf1', 'cf2']);
    assert.deepEqual(sortedKeys(without), ['gateway', 'hosts'], 'no session without a sid');
    assert.equal(unknown.session, null);
  });

  it('7. connect() to gateways where nothing listens rejects after connectTimeoutMs (5 s) with GatewayUnreachableError naming them', async () => {
    // Two different closed ports (the system may hand the same free port out twice).
    const first = await closedPort();
    let second = await closedPort();
    while (second === first) second = await closedPort();
    const urls = [`ws://127.0.0.1:${first}`, `ws://127.0.0.1:${second}`];
    const started = performance.now();
    const err = await connect(urls, { token: token('ann', 'cf-a') }).then(
      () => assert.fail('connected to nothing'),
      (e: unknown) => e,
    );
    const took = performance.now() - started;
    assert.ok(err instanceof GatewayUnreachableError, String(err));
    assert.deepEqual(err.urls, urls);
    for (const u of urls) assert.ok(err.message.includes(u), err.message);
    assert.ok(took >= 4_900 && took < 6_500, `rejected after ${took.toFixed(0)} ms`);
  });

  it('8. a handler that throws prints one line on its host, the stack only when the host traces', async () => {
    await client.placeSession('room', 'cf-err', { primary: 'cf1', standby: 'cf2' });
    await client.placeSession('room', 'cf-err-t', { primary: 'cf2', standby: 'cf1' });
    for (const [sid, hostId] of [
      ['cf-err', 'cf1'],
      ['cf-err-t', 'cf2'],
    ] as const) {
      const host = hosts.get(hostId)!;
      const c = await raw(gw.url, token('ann', sid));
      // The first request of a new route is sent twice (runtime/session-client.ts
      // newEpoch re-sends the request whose answer taught it the epoch), and a
      // refused one runs twice: a separate bug. This test counts prints per run.
      assert.equal((await c.request('j', 'join', 'ann')).type, 'reply');
      const thrown = await c.request('t1', 'leave', `ghost-${sid}`);
      assert.equal(thrown.type === 'error' && thrown.code, ErrorCode.handlerError);
      // A second error as a marker: the host runs the session's inputs in order.
      await c.request('t2', 'leave', `marker-${sid}`);
      const lines = (who: string) =>
        host.stderr.filter((l) => l.startsWith(`[ftmesh ${hostId}]`) && l.includes(who));
      await until(() => lines(`marker-${sid}`).length, { message: `${hostId} printed the marker` });
      assert.deepEqual(lines(`ghost-${sid}`), [
        `[ftmesh ${hostId}] handler room.leave threw: ghost-${sid} is not in the room`,
      ]);
    }
    const stackLines = (id: string) => hosts.get(id)!.stderr.filter((l) => /^\s+at /.test(l));
    assert.deepEqual(stackLines('cf1'), [], 'no stack without --trace');
    assert.ok(stackLines('cf2').length > 0, 'the stack under --trace');
  });
});
