import type { NatsConnection } from '@nats-io/transport-node';
import { systemClock } from './clock.ts';
import { DroppedMessages } from './dropped-messages.ts';
import { HandlerError, InvalidArgumentError, type FtmError } from './errors.ts';
import { defaultOnError, type Host, type HostOptions } from './host-api.ts';
import { startHost } from './host.ts';
import { workerLiveness } from './liveness.ts';
import { connectionName, livenessConnectionName } from './membership.ts';
import { systemRandom } from './mesh-client.ts';
import { connectNats } from './nats-connect.ts';
import { natsKv, natsLog } from './nats-stores.ts';
import { natsTransport } from './nats-transport.ts';
import { SnapshotStore } from './snapshot-store.ts';
import { assertId, storeNames } from './subjects.ts';

/**
 * Creates a host on a NATS connection.
 * @example
 * const host = await createHost({ nats: 'nats://127.0.0.1:4222', actors: [counter] });
 */
export async function createHost(options: HostOptions): Promise<Host> {
  const hostId = options.hostId ?? `h-${systemRandom.hex(5)}`;
  assertId('hostId', hostId);
  if (!options.actors?.length)
    throw new InvalidArgumentError('actors: pass at least one actor definition');
  const owned = typeof options.nats === 'string';
  const nc =
    typeof options.nats === 'string'
      ? await connectNats(options.nats, { name: connectionName(hostId) })
      : options.nats;
  const clock = options.clock ?? systemClock;
  const onError = options.onError ?? printErrors(hostId, options.trace);
  const dropped = new DroppedMessages(clock, onError);
  const replicas = options.jetstreamReplicas ?? 1;
  const [ownersKv, hostsKv, log, snapshots] = await Promise.all([
    natsKv(nc, storeNames.owners, replicas),
    natsKv(nc, storeNames.hosts, replicas),
    natsLog(nc, replicas),
    SnapshotStore.open(nc, { replicas, clock, onError }),
  ]);
  const servers = typeof options.nats === 'string' ? options.nats : nc.getServer();
  const liveness = workerLiveness(servers.split(','), hostId, livenessConnectionName(hostId), {
    ...(options.heartbeatIntervalMs ? { heartbeatIntervalMs: options.heartbeatIntervalMs } : {}),
    ...(options.heartbeatTimeoutMs ? { minSilenceMs: options.heartbeatTimeoutMs } : {}),
    ...(options.detector ? { detector: options.detector } : {}),
  });
  // The main connection's state reaches the liveness worker: a host cut off
  // from its sessions' subjects must not answer probes for them.
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') liveness.setConnected(false);
      else if (s.type === 'reconnect') liveness.setConnected(true);
    }
  })().catch(() => undefined);
  void nc.closed().then(() => liveness.setConnected(false));
  const host = await startHost(
    {
      transport: natsTransport(nc, dropped),
      ownersKv,
      hostsKv,
      log,
      snapshots,
      liveness,
      clock,
      random: systemRandom,
      dropped,
      release: async () => {
        // close() alone drops publishes not yet written (the last acks): flush first.
        await Promise.race([
          nc.flush().catch(() => undefined),
          new Promise((r) => setTimeout(r, 1_000).unref()),
        ]);
        if (owned) await nc.close();
      },
      ...(options.allowCrash ? { crash: { pid: process.pid, kill: () => crashNow(nc) } } : {}),
    },
    { ...options, hostId, onError },
  );
  // A connection closed under the host (by its owner, or for good) leaves it
  // nothing to do: it stops instead of retrying into a closed connection.
  void nc.closed().then(() => host.close());
  return host;
}

/** How long a crash waits for its answer to reach NATS before it kills the process anyway. */
const CRASH_FLUSH_MS = 2_000;

/**
 * SIGKILL of this process, once what it published (the answer to the crash
 * request) reached the server: a crash as a power cut would make it, with
 * nothing closed, drained or said goodbye to.
 */
function crashNow(nc: NatsConnection): void {
  const kill = () => process.kill(process.pid, 'SIGKILL');
  setTimeout(kill, CRASH_FLUSH_MS).unref();
  nc.flush().then(kill, kill);
}

/**
 * How a host reports what it handled without throwing, when not told
 * otherwise: one line on stderr per error. A handler that threw is the
 * actor's code failing, not the host's: its line names the handler and the
 * message, and the stack goes to `trace` only (`ftmesh host --trace`).
 */
function printErrors(hostId: string, trace?: (line: string) => void): (err: FtmError) => void {
  const print = defaultOnError(hostId);
  return (err) => {
    if (!(err instanceof HandlerError)) return print(err);
    // The message already names the handler and carries the cause's message.
    console.error(`[ftmesh ${hostId}] ${err.message}`);
    if (trace && err.cause instanceof Error && err.cause.stack) trace(err.cause.stack);
  };
}
