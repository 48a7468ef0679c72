import { strict as assert } from 'node:assert';
import type { NatsConnection } from '@nats-io/transport-node';
import { exampleActors } from '../../actors/index.ts';
import { createClient, startHost, type Host, type MeshClient } from '../../runtime/index.ts';
import { systemClock } from '../../runtime/clock.ts';
import { DroppedMessages } from '../../runtime/dropped-messages.ts';
import { workerLiveness } from '../../runtime/liveness.ts';
import { connectionName, livenessConnectionName } from '../../runtime/membership.ts';
import { systemRandom } from '../../runtime/mesh-client.ts';
import { connectNats } from '../../runtime/nats-connect.ts';
import { natsKv, natsLog } from '../../runtime/nats-stores.ts';
import { natsTransport } from '../../runtime/nats-transport.ts';
import type { KvPort, Transport } from '../../runtime/ports.ts';
import { SnapshotStore } from '../../runtime/snapshot-store.ts';
import { storeNames, subjects } from '../../runtime/subjects.ts';
import { collectErrors } from '../helpers/errors.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { until } from '../helpers/until.ts';

/**
 * A host's membership record says "alive" a moment before the host learns
 * that its join landed. A client that reads the record in that moment and
 * places a session there is served once the join lands, not refused.
 */
describe('the moment between a join landing and the host knowing it', function () {
  const reported = collectErrors();
  afterEach(() => reported.assertNone());
  const nats = useNatsServer();
  const conns: NatsConnection[] = [];
  let host: Host | undefined;
  let client: MeshClient | undefined;
  after(async () => {
    await client?.close();
    await host?.close();
    for (const nc of conns) await nc.close().catch(() => undefined);
  });

  it('a placement sent to a host whose join is stored but not yet acknowledged to it waits and is served', async () => {
    const hostId = 'jw-1';
    client = await createClient({ nats: nats.url, onError: reported.onError });
    const nc = await connectNats(nats.url, { name: connectionName(hostId) });
    conns.push(nc);
    const dropped = new DroppedMessages(systemClock, reported.onError);

    // The join's write is stored at once; the host hears back only once a
    // control request reached it (the client acted on the stored record).
    let openGate!: () => void;
    const gate = new Promise<void>((resolve) => (openGate = resolve));
    const realHosts = await natsKv(nc, storeNames.hosts);
    const held =
      <A extends unknown[]>(write: (key: string, ...rest: A) => Promise<number>) =>
      async (key: string, ...rest: A) => {
        const revision = await write(key, ...rest);
        if (key === hostId) await gate;
        return revision;
      };
    const hostsKv: KvPort = {
      ...realHosts,
      create: held((k, v: Uint8Array) => realHosts.create(k, v)),
      update: held((k, v: Uint8Array, r: number) => realHosts.update(k, v, r)),
    };
    const realTransport = natsTransport(nc, dropped);
    let controlRequests = 0;
    const transport: Transport = {
      ...realTransport,
      subscribe: (subject, handler) =>
        realTransport.subscribe(
          subject,
          subject === subjects.hostControl(hostId)
            ? (msg) => {
                handler(msg);
                // The handler has decided whether to refuse: now the join may land.
                controlRequests++;
                openGate();
              }
            : handler,
        ),
    };
    const [ownersKv, log, snapshots] = await Promise.all([
      natsKv(nc, storeNames.owners),
      natsLog(nc),
      SnapshotStore.open(nc, { clock: systemClock, onError: reported.onError }),
    ]);
    const started = startHost(
      {
        transport,
        ownersKv,
        hostsKv,
        log,
        snapshots,
        liveness: workerLiveness([nats.url], hostId, livenessConnectionName(hostId), {}),
        clock: systemClock,
        random: systemRandom,
        dropped,
        release: () => Promise.resolve(),
      },
      { hostId, actors: exampleActors, onError: reported.onError, capacity: 10 },
    );
    // The client reads the stored record, while the host still waits for its join.
    await until(() => client!.liveHosts().includes(hostId));
    const placed = client.placeSession('counter', 'jw-s', { primary: hostId });
    host = await started;
    const record = await placed;
    assert.equal(record.primary, hostId);
    assert.ok(controlRequests >= 1);
    assert.equal(await client.request('jw-s', 'add', 2), 2);
  });
});
