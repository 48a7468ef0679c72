import { createHost, type Host } from '../runtime/index.ts';
import { OptionCheck, natsUrl, parseCommand } from './args.ts';
import { StartupError, firstLine } from './errors.ts';
import { actorSurface, loadActors } from './load-actors.ts';
import { checkNats } from './nats-check.ts';
import { listenForStop } from './stop-signal.ts';
import { setupTelemetry } from './telemetry.ts';

/**
 * `ftmesh host`: one host process serving the user's actors. Prints
 * `ready ID` once joined (tests and `dev` wait for that exact line). SIGTERM
 * or SIGINT drains it, a second signal stops it at once.
 */

const spec = {
  name: 'host',
  options: {
    nats: { type: 'string' },
    actors: { type: 'list' },
    id: { type: 'string' },
    capacity: { type: 'string' },
    replicas: { type: 'string' },
    'heartbeat-timeout': { type: 'string' },
    'drain-timeout': { type: 'string' },
    trace: { type: 'boolean' },
    'allow-crash': { type: 'boolean' },
  },
} as const;

const DEFAULT_DRAIN_TIMEOUT_MS = 30_000;

/** JetStream's own words for what it refuses at start-up, turned into what to do. */
function startupError(err: unknown, nats: string, replicas: number, id: string | undefined): Error {
  const why = firstLine(err);
  if ((err as { code?: unknown }).code === 'host_id_in_use')
    return new StartupError(`host id ${id} is in use by a live host process: pick another --id`);
  if (/replicas > 1 not supported in non-clustered mode/i.test(why))
    return new StartupError(
      `--replicas ${replicas} needs a JetStream cluster, and NATS at ${nats} is a single server: use --replicas 1, or a cluster (ftmesh nats --cluster)`,
    );
  if (/insufficient resources|no suitable peers/i.test(why))
    return new StartupError(
      `JetStream at ${nats} cannot place ${replicas} replicas (${why}): the cluster needs ${replicas} JetStream servers up, or use a lower --replicas`,
    );
  if (/already in use with a different configuration|stream name already in use/i.test(why))
    return new StartupError(
      `the mesh's JetStream streams at ${nats} exist with other settings (${why}): start hosts with the --replicas they were made with`,
    );
  return new StartupError(`the host did not start: ${why}`);
}

/** Runs `ftmesh host`; resolves once it has stopped. */
export async function host(argv: readonly string[]): Promise<void> {
  const { values } = parseCommand(spec, argv);
  const check = new OptionCheck(spec.name);
  const nats = natsUrl(spec.name, values.nats);
  const id = values.id === undefined ? undefined : check.id('--id', values.id);
  const replicas =
    values.replicas === undefined ? 1 : check.integer('replicas', values.replicas, 1, 5);
  const capacity =
    values.capacity === undefined
      ? undefined
      : check.integer('capacity', values.capacity, 0, 1_000_000);
  const heartbeatTimeoutMs =
    values['heartbeat-timeout'] === undefined
      ? undefined
      : check.milliseconds('heartbeat-timeout', values['heartbeat-timeout']);
  const drainTimeoutMs =
    values['drain-timeout'] === undefined
      ? DEFAULT_DRAIN_TIMEOUT_MS
      : check.milliseconds('drain-timeout', values['drain-timeout'], true);

  const { actors } = await loadActors(values.actors ?? []);
  await checkNats(nats, { replicas, advisories: true });
  // OpenTelemetry from the OTEL_* variables (off without an endpoint), before the host's instruments exist.
  const telemetry = await setupTelemetry({
    name: 'ftmesh-host',
    instance: id ?? `pid-${process.pid}`,
  });
  if (telemetry.summary) console.error(telemetry.summary);

  const stop = listenForStop();
  let h: Host;
  try {
    h = await createHost({
      nats,
      actors,
      jetstreamReplicas: replicas,
      ...(id ? { hostId: id } : {}),
      ...(capacity === undefined ? {} : { capacity }),
      ...(heartbeatTimeoutMs === undefined ? {} : { heartbeatTimeoutMs }),
      // The dashboard's kill button: a crash request SIGKILLs this process (dev passes it).
      ...(values['allow-crash'] ? { allowCrash: true } : {}),
      ...(values.trace
        ? {
            trace: (line: string) =>
              console.error(
                `[ftmesh-trace ${id ?? ''} ${(performance.timeOrigin + performance.now()).toFixed(1)}] ${line}`,
              ),
          }
        : {}),
    });
  } catch (err) {
    stop.dispose();
    await telemetry.shutdown();
    throw startupError(err, nats, replicas, id);
  }
  // `dev` compares the surface line of a reloaded host with its gateway's.
  console.log(
    `host ${h.id} actors ${actors.map((a) => a.name).join(',')} surface ${actorSurface(actors)}`,
  );
  console.log(`ready ${h.id}`);

  await stop.requested;
  // A planned stop hands every session over first, so that no client notices;
  // a second signal (or the parent gone) cuts the drain short.
  const report = stop.isUrgent
    ? undefined
    : await Promise.race([
        h.drain(drainTimeoutMs).catch((err: unknown) => {
          console.error(`ftmesh: host ${h.id}: drain failed: ${firstLine(err)}`);
          return undefined;
        }),
        stop.urgent.then(() => undefined),
      ]);
  console.log(report ? `drained ${JSON.stringify(report)}` : `stopped ${h.id} without draining`);
  await h.close();
  await telemetry.shutdown();
  stop.dispose();
}
