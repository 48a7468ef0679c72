/**
 * The ftmesh command line.
 *
 *   ftmesh demo [--nats URL]            a primary and a standby change state and compare it
 *   ftmesh host --nats URL [--id ID] [--replicas N] [--heartbeat-timeout MS] [--trace]
 *                                       runs a host with the example actors; SIGTERM drains it, then it exits
 *   ftmesh gateway --nats URL [--id ID] [--port N] [--udp-port N|off] [--bind ADDR] [--secret S]
 *                                       runs a gateway for the example actors (secret also from
 *                                       FTMESH_SECRET); SIGTERM drains it, then it exits
 *   ftmesh token --sub ID [--sid SID] [--role client|operator] [--ttl SECONDS] [--secret S]
 *                                       prints a signed token (HS256 JWT) for a gateway
 */
import { parseArgs } from 'node:util';
import { exampleActors } from '../actors/index.ts';
import { startNatsServer } from '../infra/index.ts';
import { createClient, createHost } from '../runtime/index.ts';
import { createGateway, mintToken } from '../gateway/index.ts';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    nats: { type: 'string' },
    id: { type: 'string' },
    'heartbeat-timeout': { type: 'string' },
    replicas: { type: 'string' },
    port: { type: 'string' },
    'udp-port': { type: 'string' },
    bind: { type: 'string' },
    secret: { type: 'string' },
    sub: { type: 'string' },
    sid: { type: 'string' },
    role: { type: 'string' },
    ttl: { type: 'string' },
    trace: { type: 'boolean' },
  },
});

async function demo(): Promise<void> {
  const server = values.nats ? undefined : await startNatsServer();
  const url = values.nats ?? server!.url;
  console.log(server ? `started nats-server ${url} (pid ${server.pid})` : `using nats ${url}`);
  const primary = await createHost({ nats: url, actors: exampleActors, hostId: 'primary' });
  const standby = await createHost({ nats: url, actors: exampleActors, hostId: 'standby' });
  // A third party that only sends requests: a light client, it serves nothing.
  const client = await createClient({ nats: url });
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
    console.log(
      'the primary host closes (a clean stop: it leaves, and its standby takes over at once)...',
    );
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
    ...(values.replicas ? { jetstreamReplicas: Number(values.replicas) } : {}),
    ...(values['heartbeat-timeout']
      ? { heartbeatTimeoutMs: Number(values['heartbeat-timeout']) }
      : {}),
    ...(values.trace
      ? {
          trace: (line: string) =>
            console.error(
              `[ftmesh-trace ${values.id ?? ''} ${(performance.timeOrigin + performance.now()).toFixed(1)}] ${line}`,
            ),
        }
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

function secret(command: string): string {
  const s = values.secret ?? process.env.FTMESH_SECRET;
  if (!s) throw new Error(`${command}: pass --secret S or set FTMESH_SECRET (at least 32 bytes)`);
  return s;
}

async function gateway(): Promise<void> {
  if (!values.nats) throw new Error('gateway: pass --nats URL');
  const udp = values['udp-port'];
  const gw = await createGateway({
    nats: values.nats,
    actors: exampleActors,
    auth: { secret: secret('gateway') },
    port: Number(values.port ?? 0),
    udpPort: udp === 'off' ? false : Number(udp ?? 0),
    ...(values.bind ? { bind: values.bind } : {}),
    ...(values.id ? { id: values.id } : {}),
  });
  console.log(`ready gateway ${gw.id} ${gw.url} udp ${gw.udpPort ?? 'off'}`);
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  // Answer what is in flight, then send every client to another gateway (close code 1001).
  await gw.drain();
  console.log(`drained ${JSON.stringify(gw.stats())}`);
}

function token(): Promise<void> {
  if (!values.sub) throw new Error('token: pass --sub CLIENT_ID');
  const role = values.role ?? 'client';
  if (role !== 'client' && role !== 'operator') throw new Error('token: --role client|operator');
  console.log(
    mintToken({
      secret: secret('token'),
      sub: values.sub,
      role,
      ...(values.sid ? { sid: values.sid } : {}),
      ...(values.ttl ? { ttlSeconds: Number(values.ttl) } : {}),
    }),
  );
  return Promise.resolve();
}

const command = positionals[0] ?? 'demo';
const commands: Record<string, () => Promise<void>> = { demo, host, gateway, token };
const run = commands[command];
if (!run) {
  console.error(`unknown command ${command}: use demo, host, gateway or token`);
  process.exitCode = 2;
} else {
  run().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  });
}
