import { createGateway, type Gateway } from '../gateway/index.ts';
import { OptionCheck, natsUrl, parseCommand, secretOption } from './args.ts';
import { StartupError, firstLine } from './errors.ts';
import { actorSurface, loadActors } from './load-actors.ts';
import { checkNats } from './nats-check.ts';
import { listenForStop } from './stop-signal.ts';
import { setupTelemetry } from './telemetry.ts';

/**
 * `ftmesh gateway`: the client-facing process. Prints
 * `ready gateway ID URL udp PORT|off` once both ports listen (tests and `dev`
 * read the URL from it). SIGTERM or SIGINT drains it, a second signal stops it
 * at once.
 */

const spec = {
  name: 'gateway',
  options: {
    nats: { type: 'string' },
    actors: { type: 'list' },
    id: { type: 'string' },
    port: { type: 'string' },
    'udp-port': { type: 'string' },
    bind: { type: 'string' },
    secret: { type: 'string' },
    dashboard: { type: 'boolean' },
  },
} as const;

/** Runs `ftmesh gateway`; resolves once it has stopped. */
export async function gateway(argv: readonly string[]): Promise<void> {
  const { values } = parseCommand(spec, argv);
  const check = new OptionCheck(spec.name);
  const nats = natsUrl(spec.name, values.nats);
  const id = values.id === undefined ? undefined : check.id('--id', values.id);
  const port = values.port === undefined ? 0 : check.port('port', values.port);
  const udp = values['udp-port'];
  const udpPort = udp === 'off' ? false : udp === undefined ? 0 : check.port('udp-port', udp);
  const bind = values.bind ?? '127.0.0.1';
  const secret = secretOption(spec.name, values.secret);

  const { actors } = await loadActors(values.actors ?? []);
  await checkNats(nats);
  // OpenTelemetry from the OTEL_* variables (off without an endpoint), before the gateway's instruments exist.
  const telemetry = await setupTelemetry({
    name: 'ftmesh-gateway',
    instance: id ?? `pid-${process.pid}`,
  });
  if (telemetry.summary) console.error(telemetry.summary);

  // Errors reported while starting are the start's failure, said once by the caller.
  let started = false;
  const onError = (err: Error) => {
    if (started) console.error(`[ftmesh gateway ${id ?? ''}] ${err.name}: ${err.message}`);
  };
  const stop = listenForStop();
  let gw: Gateway;
  try {
    gw = await createGateway({
      nats,
      actors,
      auth: { secret },
      port,
      udpPort,
      bind,
      onError,
      ...(id ? { id } : {}),
      ...(values.dashboard ? { dashboard: true } : {}),
    });
  } catch (err) {
    stop.dispose();
    await telemetry.shutdown();
    const e = err as NodeJS.ErrnoException & { port?: number; syscall?: string };
    if (e.code === 'EADDRINUSE') {
      const which = e.syscall === 'bind' ? `--udp-port ${udpPort}` : `--port ${port}`;
      throw new StartupError(
        `${which} is in use on ${bind}: pick another port, or 0 for any free one`,
      );
    }
    if (e.code === 'EADDRNOTAVAIL' || e.code === 'ENOTFOUND')
      throw new StartupError(`--bind ${bind} is not an address of this machine`);
    if (e.code === 'EACCES')
      throw new StartupError(`port ${port} needs privileges here: use a port above 1023`);
    throw new StartupError(`the gateway did not start: ${firstLine(err)}`);
  }
  started = true;
  console.log(
    `gateway ${gw.id} actors ${actors.map((a) => a.name).join(',')} surface ${actorSurface(actors)}`,
  );
  if (values.dashboard) {
    const http = gw.url.replace(/^ws/, 'http');
    console.log(`dashboard ${http}/dashboard/ demo ${http}/demo/`);
  }
  console.log(`ready gateway ${gw.id} ${gw.url} udp ${gw.udpPort ?? 'off'}`);

  await stop.requested;
  // Answer what is in flight, then send every client to another gateway (close code 1001).
  const drained = stop.isUrgent
    ? false
    : await Promise.race([
        gw.drain().then(
          () => true,
          (err: unknown) => {
            console.error(`ftmesh: gateway ${gw.id}: drain failed: ${firstLine(err)}`);
            return false;
          },
        ),
        stop.urgent.then(() => false),
      ]);
  if (!drained) await gw.close();
  console.log(`${drained ? 'drained' : 'stopped'} ${JSON.stringify(gw.stats())}`);
  await telemetry.shutdown();
  stop.dispose();
}
