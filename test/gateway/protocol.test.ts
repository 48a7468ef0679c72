import { strict as assert } from 'node:assert';
import type { NatsConnection } from '@nats-io/transport-node';
import { exampleActors } from '../../actors/index.ts';
import type { RequestError } from '../../gateway/index.ts';
import {
  CloseCode,
  ConnectionClosedError,
  ErrorCode,
  connect,
  createGateway,
  mintToken,
  type Gateway,
  type Session,
} from '../../gateway/index.ts';
import { connectNats, createHost, subjects, type Host } from '../../runtime/index.ts';
import { decodeFrame, FrameKind } from '../../runtime/wire.ts';
import { RawClient, UdpClient } from '../helpers/gateway-clients.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { spawnNode, stopAll, type NodeProcess } from '../helpers/processes.ts';
import { exactlyOnce } from '../helpers/stream.ts';
import { until } from '../helpers/until.ts';
import { collectErrors, type ExpectedError } from '../helpers/errors.ts';

/** What the runtime may report here, and why. */
const expectedErrors: ExpectedError[] = [];

const secret = 'gateway-protocol-test-secret-0123456789';
const token = (
  sub: string,
  sid?: string,
  extra: { role?: 'client' | 'operator'; exp?: number } = {},
) => mintToken({ secret, sub, ...(sid ? { sid } : {}), ...extra });
const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');

/** Every input frame published on a session's subject: what reached NATS (and so the actor). */
function tapInputs(nc: NatsConnection, sid: string): { ids: string[]; names: string[] } {
  const seen = { ids: [] as string[], names: [] as string[] };
  nc.subscribe(subjects.input(sid), {
    callback: (_e, m) => {
      const f = decodeFrame(m.data);
      if (f.kind !== FrameKind.input) return;
      seen.ids.push(f.requestId);
      seen.names.push(f.type);
    },
  });
  return seen;
}

/** A well-behaved client of the same session, sending all along: it must notice nothing. */
function steadyClient(session: Session, name: string, payload: () => unknown, everyMs: number) {
  const result = { replies: 0, errors: [] as string[], stop: () => Promise.resolve() };
  let running = true;
  const loop = (async () => {
    while (running) {
      try {
        await session.request(name, payload());
        result.replies++;
      } catch (err) {
        result.errors.push(`${(err as Error).name}: ${(err as Error).message}`);
        if (err instanceof ConnectionClosedError) break; // a failed test closed it
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  result.stop = async () => {
    running = false;
    await loop;
  };
  return result;
}

describe('gateway: tokens, bad input, gateways side by side', function () {
  const reported = collectErrors();
  afterEach(() => reported.assertNone(expectedErrors));
  const nats = useNatsServer();
  let client: Host;
  let nc: NatsConnection;
  /** Tight limits for the flood test; default ones otherwise. */
  let gwA: Gateway;
  /** A small send buffer, for the slow consumer. */
  let gwB: Gateway;
  const procs: NodeProcess[] = [];
  const sessions: Session[] = [];
  const raws: RawClient[] = [];
  const raw = async (url: string, tok: string, extra?: object) => {
    const c = await RawClient.hello(url, tok, extra);
    raws.push(c);
    return c;
  };
  const sdk = async (url: string | string[], tok: string) => {
    const s = await connect(url, { token: tok });
    sessions.push(s);
    return s;
  };
  /** Opens a socket, sends `hello`, resolves with the close code. */
  const refused = async (hello: object | string) => {
    const c = await RawClient.open(gwA.url);
    raws.push(c);
    c.send(hello);
    return (await c.closed).code;
  };

  before(async function () {
    this.timeout(30_000);
    client = await createHost({
      nats: nats.url,
      actors: exampleActors,
      hostId: 'gp-client',
      capacity: 0,
      onError: reported.onError,
    });
    nc = await connectNats(nats.url);
    for (const id of ['gp1', 'gp2', 'gp3'])
      procs.push(spawnNode('cli/ftmesh.ts', ['host', '--nats', nats.url, '--id', id]));
    await Promise.all(procs.map((p, i) => p.waitForLine(new RegExp(`^ready gp${i + 1}`), 20_000)));
    await until(() => ['gp1', 'gp2', 'gp3'].every((id) => client.liveHosts().includes(id)));
    gwA = await createGateway({
      nats: nats.url,
      actors: exampleActors,
      auth: { secret },
      id: 'gp-gw-a',
      limits: {
        requestsPerSecond: 500,
        requestBurst: 50,
        maxRejectedPerSecond: 1_000,
        helloTimeoutMs: 500,
      },
      onError: reported.onError,
    });
    gwB = await createGateway({
      nats: nats.url,
      actors: exampleActors,
      auth: { secret },
      id: 'gp-gw-b',
      limits: { maxBufferedBytes: 64 * 1024 },
      onError: reported.onError,
    });
  });
  after(async function () {
    this.timeout(30_000);
    for (const c of raws) c.close();
    for (const s of sessions) await s.close();
    await gwA?.close();
    await gwB?.close();
    await nc?.close();
    await client?.close();
    await stopAll();
  });

  describe('tokens', () => {
    before(async () => {
      await client.placeSession('counter', 'auth-a', { primary: 'gp1', standby: 'gp2' });
      await client.placeSession('counter', 'auth-b', { primary: 'gp2', standby: 'gp1' });
    });

    it('a valid token is welcomed with its client id, session, limits and a UDP key', async () => {
      const c = await raw(gwA.url, token('ann', 'auth-a'));
      assert.deepEqual(
        [c.welcome!.client, c.welcome!.sid, c.welcome!.role, c.welcome!.gateway],
        ['ann', 'auth-a', 'client', 'gp-gw-a'],
      );
      assert.equal(c.welcome!.limits.requestBurst, 50);
      assert.equal(c.welcome!.udp?.port, gwA.udpPort);
    });

    it('forged, tampered, alg-none and malformed tokens are refused with 4401', async () => {
      const valid = token('ann', 'auth-a');
      const [h, , s] = valid.split('.');
      const forged = mintToken({
        secret: 'another-secret-that-is-32-bytes-long!!',
        sub: 'ann',
        sid: 'auth-a',
      });
      const tampered = `${h}.${b64({ sub: 'ann', sid: 'auth-b', role: 'operator', exp: 4e9 })}.${s}`;
      const none = `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: 'ann', sid: 'auth-a', role: 'client', exp: 4e9 })}.`;
      for (const tok of [forged, tampered, none, 'not-a-token', '', 42])
        assert.equal(
          await refused({ type: 'hello', v: 1, token: tok }),
          CloseCode.tokenInvalid,
          String(tok),
        );
      assert.equal(await refused({ type: 'hello', v: 1 }), CloseCode.tokenInvalid);
    });

    it('an expired token is refused with 4402, and a connection ends when its token expires', async () => {
      const expired = token('ann', 'auth-a', { exp: Math.floor(Date.now() / 1000) - 5 });
      assert.equal(await refused({ type: 'hello', v: 1, token: expired }), CloseCode.tokenExpired);
      const short = await raw(
        gwA.url,
        token('ann', 'auth-a', { exp: Math.floor(Date.now() / 1000) + 1 }),
      );
      assert.equal((await short.closed).code, CloseCode.tokenExpired);
    });

    it('a client cannot reach another session: a hello for it is refused with 4403, a frame naming it still goes to its own', async () => {
      assert.equal(
        await refused({ type: 'hello', v: 1, token: token('ann', 'auth-a'), sid: 'auth-b' }),
        CloseCode.forbidden,
      );
      const c = await raw(gwA.url, token('ann', 'auth-a'));
      const before = await client.request('auth-b', 'get');
      const answer = await c.request('x1', 'add', 1);
      c.send({ type: 'request', id: 'x2', name: 'add', payload: 1, sid: 'auth-b' });
      await c.answer('x2');
      assert.equal(answer.type, 'reply');
      assert.equal(await client.request('auth-b', 'get'), before, 'auth-b untouched');
      assert.equal(await client.request('auth-a', 'get'), 2);
    });

    it('an unknown session is refused with 4404; the SDK does not retry a refused token', async () => {
      assert.equal(
        await refused({ type: 'hello', v: 1, token: token('ann', 'no-such-session') }),
        CloseCode.unknownSession,
      );
      await assert.rejects(
        connect([gwA.url, gwB.url], { token: token('ann', 'no-such-session') }),
        (e: ConnectionClosedError) => e.closeCode === CloseCode.unknownSession,
      );
      await assert.rejects(
        connect([gwA.url, gwB.url], {
          token: mintToken({ secret: 'x'.repeat(32), sub: 'ann', sid: 'auth-a' }),
        }),
        (e: ConnectionClosedError) => e.closeCode === CloseCode.tokenInvalid,
      );
    });

    it('protocol errors before the welcome: no hello (4408), another frame first or another version (4400)', async () => {
      const silent = await RawClient.open(gwA.url);
      raws.push(silent);
      assert.equal((await silent.closed).code, CloseCode.helloTimeout);
      assert.equal(
        await refused({ type: 'request', id: '1', name: 'add', payload: 1 }),
        CloseCode.protocol,
      );
      assert.equal(
        await refused({ type: 'hello', v: 2, token: token('ann', 'auth-a') }),
        CloseCode.protocol,
      );
      assert.equal(await refused('not json'), CloseCode.protocol);
    });

    it('operator frames need an operator token: status and the drain of a host', async () => {
      const c = await raw(gwA.url, token('ann', 'auth-a'));
      c.send({ type: 'status', id: 's1' });
      c.send({ type: 'drain', id: 'd1', host: 'gp3' });
      for (const id of ['s1', 'd1']) {
        const e = await c.answer(id);
        assert.deepEqual([e.type, e.type === 'error' && e.code], ['error', ErrorCode.forbidden]);
      }
      await client.placeSession('counter', 'auth-drain', { primary: 'gp3', standby: 'gp1' });
      await client.request('auth-drain', 'add', 5);
      const op = await sdk(gwA.url, token('root', undefined, { role: 'operator' }));
      const status = (await op.status('auth-drain')) as {
        hosts: string[];
        session: { primary: string };
      };
      assert.ok(
        ['gp1', 'gp2', 'gp3'].every((h) => status.hosts.includes(h)),
        String(status.hosts),
      );
      assert.equal(status.session.primary, 'gp3');
      await assert.rejects(
        op.drainHost('no-such-host'),
        (e: RequestError) => e.code === ErrorCode.unknownHost,
      );
      await assert.rejects(
        op.request('add', 1),
        (e: RequestError) => e.code === ErrorCode.forbidden,
      );
      const report = (await op.drainHost('gp3')) as { primaries: number };
      assert.equal(report.primaries, 1);
      await until(() => client.owner('auth-drain')?.primary === 'gp1', {
        message: 'moved to its standby',
      });
      assert.equal(await client.request('auth-drain', 'get'), 5);
    });
  });

  describe('bad input', () => {
    it('each class of bad frame gets its documented answer; nothing reaches NATS, no state changes, other clients see nothing', async () => {
      await client.placeSession('room', 'bad', { primary: 'gp1', standby: 'gp2' });
      const tap = tapInputs(nc, 'bad');
      await nc.flush();
      // Bob talks to the room all along, through the same gateway, and hears every event.
      const bob = await sdk(gwA.url, token('bob', 'bad'));
      const heard: number[] = [];
      bob.on('said', (p) => heard.push((p as { n: number }).n));
      await bob.request('join', 'bob');
      const steady = steadyClient(bob, 'say', () => 'still here', 10);
      const m = await raw(gwA.url, token('mallory', 'bad'));
      const expect = async (frame: object | string, code: string, id?: string) => {
        m.frames.length = 0;
        m.send(frame);
        const e = await m.next((f) => f.type === 'error');
        assert.equal(e.type === 'error' && e.code, code, JSON.stringify(frame).slice(0, 80));
        assert.equal(e.type === 'error' && e.id, id, 'the error names the request');
      };
      // Malformed frames.
      await expect('not json', ErrorCode.malformedFrame);
      await expect('[1,2,3]', ErrorCode.malformedFrame);
      await expect('"a string"', ErrorCode.malformedFrame);
      await expect({ id: 'm0' }, ErrorCode.malformedFrame, 'm0');
      await expect({ type: 'request', name: 'say', payload: 'no id' }, ErrorCode.malformedFrame);
      await expect({ type: 'request', id: 'has space', name: 'say' }, ErrorCode.malformedFrame);
      await expect({ type: 'request', id: 'x'.repeat(65), name: 'say' }, ErrorCode.malformedFrame);
      await expect({ type: 'request', id: 'm1', name: 5 }, ErrorCode.malformedFrame, 'm1');
      await expect({ type: 'hello', v: 1, token: 'again' }, ErrorCode.malformedFrame);
      // Unknown frame types.
      await expect({ type: 'explode', id: 'm2' }, ErrorCode.unknownFrameType, 'm2');
      // Unknown message types, including names every object has.
      for (const name of ['explode', '__proto__', 'constructor', 'toString', 'hasOwnProperty', ''])
        await expect(
          { type: 'request', id: `u-${name.length}`, name, payload: 'x' },
          ErrorCode.unknownMessageType,
          `u-${name.length}`,
        );
      // Payloads failing the actor's checks.
      await expect(
        { type: 'request', id: 'c1', name: 'join', payload: 42 },
        ErrorCode.invalidMessage,
        'c1',
      );
      await expect({ type: 'request', id: 'c2', name: 'join' }, ErrorCode.invalidMessage, 'c2');
      await expect(
        { type: 'request', id: 'c3', name: 'join', payload: 'x'.repeat(41) },
        ErrorCode.invalidMessage,
        'c3',
      );
      await expect(
        { type: 'request', id: 'c4', name: 'say', payload: 'x'.repeat(1001) },
        ErrorCode.invalidMessage,
        'c4',
      );
      await expect(
        { type: 'request', id: 'c5', name: 'say', payload: { text: 'hi' } },
        ErrorCode.invalidMessage,
        'c5',
      );
      // A handler that throws: forwarded (it is valid input), refused by the actor, rolled back.
      const thrown = await m.request('h1', 'leave', 'nobody');
      assert.equal(thrown.type === 'error' && thrown.code, ErrorCode.handlerError);
      // Still connected, and still able to do something valid.
      assert.equal(m.closeCode, undefined);
      assert.equal((await m.request('ok1', 'join', 'mallory')).type, 'reply');

      // Oversized frames (text or binary) close that connection with 1009.
      const big = await raw(gwA.url, token('mallory', 'bad'));
      big.send({ type: 'request', id: 'big', name: 'say', payload: 'x'.repeat(70_000) });
      assert.equal((await big.closed).code, CloseCode.tooLarge);
      const bigBinary = await raw(gwA.url, token('mallory', 'bad'));
      bigBinary.send(Buffer.alloc(70_000));
      assert.equal((await bigBinary.closed).code, CloseCode.tooLarge);
      // Text that is not UTF-8 closes with 1007.
      const garbled = await raw(gwA.url, token('mallory', 'bad'));
      garbled.ws.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
      assert.equal((await garbled.closed).code, CloseCode.invalidUtf8);

      await until(() => steady.replies >= 20, { message: 'bob goes on' });
      await steady.stop();
      // Only valid requests reached NATS: bob's and mallory's two valid ones.
      const mallorys = new Set(tap.ids.filter((id) => id.startsWith('mallory.')));
      assert.deepEqual([...mallorys].sort(), ['mallory.h1', 'mallory.ok1']);
      assert.ok(tap.ids.every((id) => id.startsWith('bob.') || id.startsWith('mallory.')));
      // The state is what the valid requests made it.
      const state = (await client.inspect(client.owner('bad')!.primary, 'bad')).info;
      assert.equal(state.seq, steady.replies + 2, 'bob: join + says; mallory: one join');
      // Bob noticed nothing: every request answered, no reconnect, every event in order.
      assert.deepEqual(steady.errors, []);
      assert.equal(bob.reconnects, 0);
      await until(() => heard.length === steady.replies, { message: 'every said event heard' });
      assert.deepEqual(
        heard,
        Array.from({ length: steady.replies }, (_, i) => i + 1),
      );
    });

    it('a flood is rate limited per client (rate_limited, then close 4429); the refused frames never reach NATS', async () => {
      await client.placeSession('counter', 'flood', { primary: 'gp2', standby: 'gp1' });
      const tap = tapInputs(nc, 'flood');
      await nc.flush();
      const bob = await sdk(gwA.url, token('bob', 'flood'));
      const steady = steadyClient(bob, 'add', () => 0, 10);
      const m = await raw(gwA.url, token('mallory', 'flood'));
      const n = 600;
      for (let i = 0; i < n; i++) m.send({ type: 'request', id: `f${i}`, name: 'add', payload: 1 });
      const answered = () => m.frames.filter((f) => f.type === 'reply' || f.type === 'error');
      await until(() => answered().length === n, { message: 'every flood request answered' });
      const answers = answered();
      const replies = answers.filter((f) => f.type === 'reply').length;
      const limited = answers.filter((f) => f.type === 'error' && f.code === ErrorCode.rateLimited);
      assert.equal(replies + limited.length, n, 'each answered: a reply or rate_limited');
      assert.ok(replies >= 50 && replies < 300, `the burst and the refill got through: ${replies}`);
      const first = limited[0];
      assert.ok(first?.type === 'error' && first.retryable && (first.retryAfterMs ?? 0) >= 1);
      assert.equal(
        await client.request('flood', 'get'),
        replies,
        'only what was let through applied',
      );
      // Distinct ids: a failover makes the gateway re-send unreleased requests under their ids.
      assert.equal(new Set(tap.ids.filter((id) => id.startsWith('mallory.'))).size, replies);
      // Keeping it up: the connection closes with 4429.
      for (let i = 0; i < 3_000 && m.closeCode === undefined; i++) m.send({ type: 'ping' });
      assert.equal((await m.closed).code, CloseCode.flood);
      await until(() => steady.replies >= 20, { message: 'bob goes on' });
      await steady.stop();
      assert.deepEqual(steady.errors, []);
      assert.equal(bob.reconnects, 0);
    });

    it('a slow consumer is closed with 4409 once its send buffer is full; the session and its other clients go on', async () => {
      await client.placeSession('room', 'slow', { primary: 'gp1', standby: 'gp2' });
      const slow = await raw(gwB.url, token('slowpoke', 'slow'));
      const listener = await sdk(gwB.url, token('listener', 'slow'));
      let heard = 0;
      listener.on('said', () => heard++);
      const speaker = await sdk(gwB.url, token('speaker', 'slow'));
      // The slow client stops reading; events (about 1 KB each) pile up for it.
      (slow.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
      const text = 'y'.repeat(1000);
      let said = 0;
      const errors: string[] = [];
      const talk = async () => {
        while (!gwB.stats().closes[CloseCode.slowConsumer] && said < 30_000) {
          said++;
          await speaker.request('say', text).catch((e: Error) => errors.push(e.message));
        }
      };
      await Promise.all(Array.from({ length: 16 }, talk));
      assert.ok(gwB.stats().closes[CloseCode.slowConsumer], `closed after ${said} events`);
      (slow.ws as unknown as { _socket: { resume(): void } })._socket.resume();
      assert.equal((await slow.closed).code, CloseCode.slowConsumer);
      assert.deepEqual(errors, []);
      await until(() => heard === said, { message: `the listener heard all ${said}` });
      assert.equal(listener.reconnects + speaker.reconnects, 0);
      console.log(`      slow consumer closed after ${said} events of ~1 KB`);
    });
  });

  describe('several gateways side by side', () => {
    it('clients of one session on two gateways share its events, datagrams (UDP and WebSocket) and state', async () => {
      await client.placeSession('room', 'side', { primary: 'gp2', standby: 'gp1' });
      const ann = await raw(gwA.url, token('ann', 'side'));
      const ben = await raw(gwB.url, token('ben', 'side'));
      const annUdp = await UdpClient.register(ann.welcome!);
      try {
        assert.equal((await ann.request('j1', 'join', 'ann')).type, 'reply');
        await ben.next((f) => f.type === 'event' && f.name === 'joined');
        // Ann by UDP through gateway A; Ben (no UDP) by WebSocket binary frames through gateway B.
        annUdp.send(new TextEncoder().encode('from ann'));
        await until(() => ben.datagrams.find((d) => d.from === 'ann'), {
          message: 'ben got ann’s datagram',
        });
        ben.send(Buffer.from('from ben'));
        await until(() => annUdp.received.find((d) => d.from === 'ben'), {
          message: 'ann got ben’s datagram',
        });
        assert.equal(
          Buffer.from(annUdp.received.find((d) => d.from === 'ben')!.payload).toString(),
          'from ben',
        );
        // Concurrent requests through both gateways: each applied once, in one order.
        const both = await Promise.all(
          Array.from({ length: 40 }, (_, i) =>
            (i % 2 ? ann : ben).request(`s${i}`, 'say', `n${i}`),
          ),
        );
        const ns = both
          .map((f) => (f.type === 'reply' ? (f.result as number) : -1))
          .sort((a, b) => a - b);
        assert.deepEqual(
          ns,
          Array.from({ length: 40 }, (_, i) => i + 1),
        );
        await until(
          () => ann.frames.filter((f) => f.type === 'event' && f.name === 'said').length === 40,
        );
        await until(
          () => ben.frames.filter((f) => f.type === 'event' && f.name === 'said').length === 40,
        );
        // The SDK's UDP (Node): Cy on gateway B sends and receives by UDP.
        const cy = await connect(gwB.url, { token: token('cy', 'side'), udp: true });
        sessions.push(cy);
        const cyGot: string[] = [];
        cy.onDatagram((d, from) => cyGot.push(`${from}:${Buffer.from(d).toString()}`));
        await until(
          () => {
            annUdp.send(new TextEncoder().encode('to all'));
            return cyGot.includes('ann:to all');
          },
          { message: 'cy got ann’s datagram by UDP', intervalMs: 50 },
        );
        const before = gwB.stats().datagramsIn;
        assert.ok(cy.sendDatagram(new TextEncoder().encode('from cy')));
        await until(() => annUdp.received.find((d) => d.from === 'cy'), {
          message: 'ann got cy’s',
        });
        assert.equal(gwB.stats().datagramsIn, before + 1, 'by UDP through gateway B');
      } finally {
        annUdp.close();
      }
    });

    it('a draining gateway answers what is in flight and closes with 1001; the SDK moves to the next gateway and nothing is lost', async () => {
      await client.placeSession('counter', 'drain-gw', { primary: 'gp1', standby: 'gp2' });
      const gwC = await createGateway({
        nats: nats.url,
        actors: exampleActors,
        auth: { secret },
        id: 'gp-gw-c',
        onError: reported.onError,
      });
      const s = await sdk([gwC.url, gwB.url], token('mover', 'drain-gw'));
      assert.equal(s.gateway, 'gp-gw-c');
      const total = 300;
      const replies = new Array<number>(total);
      let answered = 0;
      let next = 0;
      let draining: Promise<void> | undefined;
      const worker = async () => {
        for (let i = next++; i < total; i = next++) {
          replies[i] = await s.request<number>('add', 1);
          if (++answered === 100) draining = gwC.drain();
        }
      };
      await Promise.all(Array.from({ length: 8 }, worker));
      await draining;
      assert.deepEqual(exactlyOnce(replies), { lost: [], doubled: [] });
      assert.equal(await client.request('drain-gw', 'get'), total);
      assert.equal(s.gateway, 'gp-gw-b');
      assert.equal(s.reconnects, 1);
      assert.equal(gwC.stats().closes[CloseCode.goingAway], 1);
    });
  });
});
