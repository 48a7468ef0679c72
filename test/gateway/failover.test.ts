import { strict as assert } from 'node:assert';
import { exampleActors } from '../../actors/index.ts';
import { connect, createGateway, mintToken, type Gateway } from '../../gateway/index.ts';
import type { MeshClient } from '../../runtime/index.ts';
import { RawClient, UdpClient } from '../helpers/gateway-clients.ts';
import { useNatsServer } from '../helpers/nats.ts';
import {
  stopAll,
  useProcessesPerTest,
  startHostProcesses,
  createTestClient,
} from '../helpers/processes.ts';
import { exactlyOnce } from '../helpers/stream.ts';
import { until } from '../helpers/until.ts';
import { collectErrors, type ExpectedError } from '../helpers/errors.ts';
import { useOutputMonitors } from '../helpers/output-monitor.ts';

/** What the runtime may report here, and why. */
const expectedErrors: ExpectedError[] = [];

const secret = 'gateway-failover-test-secret-0123456789';
const now = () => performance.timeOrigin + performance.now();

describe('gateway: clients keep their connection through a failover', function () {
  const reported = collectErrors();
  afterEach(() => reported.assertNone(expectedErrors));
  const nats = useNatsServer();
  const watchOutput = useOutputMonitors(() => nats.url);
  let client: MeshClient;
  let gateway: Gateway;
  const procs = useProcessesPerTest();

  const startHosts = (...ids: string[]) => startHostProcesses(procs, nats.url, ids, client);

  before(async () => {
    client = await createTestClient(nats.url);
    gateway = await createGateway({
      nats: nats.url,
      actors: exampleActors,
      auth: { secret },
      id: 'gf-gw',
      onError: reported.onError,
    });
  });
  after(async () => {
    await gateway?.close();
    await client?.close();
    await stopAll();
  });

  it('a client streaming requests keeps the same WebSocket across a SIGKILL of the primary: every request answered once, the state matches', async () => {
    await startHosts('gf1', 'gf2', 'gf3');
    await client.placeSession('counter', 'gf-stream', { primary: 'gf1', standby: 'gf2' });
    await watchOutput('gf-stream');
    const opened = gateway.stats().connectionsOpened;
    const session = await connect(gateway.url, {
      token: mintToken({ secret, sub: 'streamer', sid: 'gf-stream' }),
    });
    try {
      const total = 300;
      const replies = new Array<number>(total);
      let answered = 0;
      let next = 0;
      const worker = async () => {
        for (let i = next++; i < total; i = next++) {
          replies[i] = await session.request<number>('add', 1);
          if (++answered === 100) procs.get('gf1')!.signal('SIGKILL');
        }
      };
      await Promise.all(Array.from({ length: 4 }, worker));
      assert.deepEqual(exactlyOnce(replies), { lost: [], doubled: [] });
      assert.equal(await session.request('get'), total, 'the state the replies imply');
      assert.notEqual(client.owner('gf-stream')?.primary, 'gf1', 'the primary moved');
      // One WebSocket all along: no reconnect, and the gateway saw one connection open, none close.
      assert.equal(session.reconnects, 0);
      assert.equal(session.connected, true);
      assert.equal(gateway.stats().connectionsOpened, opened + 1);
      assert.deepEqual(gateway.stats().closes, {});
    } finally {
      await session.close();
    }
  });

  it('UDP datagrams from a client reach the new primary after the failover (measured from the kill)', async () => {
    await startHosts('gu1', 'gu2', 'gu3');
    await client.placeSession('room', 'gf-udp', { primary: 'gu1', standby: 'gu2' });
    await watchOutput('gf-udp');
    const alice = await RawClient.hello(
      gateway.url,
      mintToken({ secret, sub: 'alice', sid: 'gf-udp' }),
    );
    const bob = await RawClient.hello(
      gateway.url,
      mintToken({ secret, sub: 'bob', sid: 'gf-udp' }),
    );
    const aliceUdp = await UdpClient.register(alice.welcome!);
    const bobUdp = await UdpClient.register(bob.welcome!);
    // Alice streams datagrams [u32 n][f64 sent at] every 2 ms; the room forwards them to bob.
    let n = 0;
    const sender = setInterval(() => {
      const d = new DataView(new ArrayBuffer(12));
      d.setUint32(0, n++);
      d.setFloat64(4, now());
      aliceUdp.send(new Uint8Array(d.buffer));
    }, 2);
    try {
      const sentAt = (p: Uint8Array) => new DataView(p.buffer, p.byteOffset).getFloat64(4);
      await until(() => bobUdp.received.length > 20, { message: 'datagrams forwarded before' });
      const killedAt = now();
      procs.get('gu1')!.signal('SIGKILL');
      // A datagram sent after the kill can only have been forwarded by the new primary.
      const first = (await until(
        () => bobUdp.received.find((d) => d.payload.length === 12 && sentAt(d.payload) > killedAt),
        { timeoutMs: 10_000, message: 'a datagram forwarded by the new primary' },
      ))!;
      await until(() => client.owner('gf-udp')?.primary !== 'gu1', { message: 'new owner' });
      const owner = client.owner('gf-udp')!;
      const record = (await client.failoversOf(owner.primary)).find((f) => f.sid === 'gf-udp')!;
      const fromKill = first.at - killedAt;
      const fromPromotion = first.at - record.promotedAt!;
      console.log(
        `      UDP re-routed: first datagram through the new primary ${owner.primary} ` +
          `${fromKill.toFixed(1)} ms after the kill, ${fromPromotion.toFixed(1)} ms after the promotion ` +
          `(detected ${(record.detectedAt - killedAt).toFixed(1)} ms, promoted ${(record.promotedAt! - killedAt).toFixed(1)} ms after the kill)`,
      );
      assert.ok(first.at > record.promotedAt!, 'forwarded once the new primary took over');
      // Neither WebSocket moved.
      assert.equal(alice.closeCode, undefined);
      assert.equal(bob.closeCode, undefined);
      const before = bobUdp.received.length;
      await until(() => bobUdp.received.length > before + 20, { message: 'the stream goes on' });
    } finally {
      clearInterval(sender);
      aliceUdp.close();
      bobUdp.close();
      alice.close();
      bob.close();
    }
  });
});
