/**
 * The ftmesh command line.
 *
 *   ftmesh demo [--nats URL]            a primary and a standby change state and compare it
 *   ftmesh host --nats URL [--id ID]    runs a host with the example actors; SIGTERM drains it, then it exits
 */
import { parseArgs } from 'node:util';
import { exampleActors } from '../actors/index.ts';
import { startNatsServer } from '../infra/index.ts';
import { createHost } from '../runtime/index.ts';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    nats: { type: 'string' },
    id: { type: 'string' },
    'heartbeat-timeout': { type: 'string' },
  },
});

async function demo(): Promise<void> {
  const server = values.nats ? undefined : await startNatsServer();
  const url = values.nats ?? server!.url;
  console.log(server ? `started nats-server ${url} (pid ${server.pid})` : `using nats ${url}`);
  const primary = await createHost({ nats: url, actors: exampleActors, hostId: 'primary' });
  const standby = await createHost({ nats: url, actors: exampleActors, hostId: 'standby' });
  // A third party that only sends requests (capacity 0: it serves nothing).
  const client = await createHost({
    nats: url,
    actors: exampleActors,
    hostId: 'client',
    capacity: 0,
  });
  try {
    await primary.openSession('counter', 'demo-room', { standby: 'standby' });
    for (const by of [1, 2, 3, 4, 5]) {
      const value = await primary.request('demo-room', 'add', by);
      console.log(`add ${by} -> ${String(value)} (released after the standby acknowledged it)`);
    }
    const p = primary.info('demo-room')!;
    const s = standby.info('demo-room')!;
    console.log(`primary: seq ${p.seq} hash ${primary.hash('demo-room').slice(0, 16)}`);
    console.log(`standby: seq ${s.seq} hash ${standby.hash('demo-room').slice(0, 16)}`);
    const equal = primary.hash('demo-room') === standby.hash('demo-room');
    console.log(equal ? 'standby state equals the primary' : 'STANDBY DIFFERS FROM PRIMARY');
    process.exitCode = equal ? 0 : 1;

    // The primary goes away; the standby takes over and the session goes on.
    await client.placeSession('counter', 'demo-failover', {
      primary: 'primary',
      standby: 'standby',
    });
    await client.request('demo-failover', 'add', 1);
    console.log('primary host closes its NATS connection, as a crash would...');
    await primary.close();
    const value = await client.request('demo-failover', 'add', 10);
    const f = standby.failovers().find((x) => x.sid === 'demo-failover');
    const owner = client.owner('demo-failover');
    console.log(
      `add 10 -> ${String(value)}, answered by ${owner?.primary} in epoch ${owner?.epoch}` +
        (f
          ? ` (${f.cause}: promoted ${(f.promotedAt! - f.detectedAt).toFixed(1)} ms after detection, ` +
            `first reply ${(f.firstReplyAt! - f.detectedAt).toFixed(1)} ms after)`
          : ''),
    );
    if (value !== 11) process.exitCode = 1;
  } finally {
    await client.close();
    await primary.close();
    await standby.close();
    await server?.stop();
  }
}

async function host(): Promise<void> {
  if (!values.nats) throw new Error('host: pass --nats URL');
  const h = await createHost({
    nats: values.nats,
    actors: exampleActors,
    ...(values.id ? { hostId: values.id } : {}),
    ...(values['heartbeat-timeout']
      ? { heartbeatTimeoutMs: Number(values['heartbeat-timeout']) }
      : {}),
  });
  console.log(`ready ${h.id}`);
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  // A planned stop: hand every session over before leaving, so no client notices.
  const report = await h.drain();
  console.log(`drained ${JSON.stringify(report)}`);
  await h.close();
}

const command = positionals[0] ?? 'demo';
const commands: Record<string, () => Promise<void>> = { demo, host };
const run = commands[command];
if (!run) {
  console.error(`unknown command ${command}: use demo or host`);
  process.exitCode = 2;
} else {
  run().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  });
}
