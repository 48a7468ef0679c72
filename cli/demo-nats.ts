import { NatsServerNotFoundError, NatsServerStartError, startNatsServer } from '../infra/index.ts';
import { StartupError, firstLine } from './errors.ts';
import { checkNats } from './nats-check.ts';

/**
 * The NATS a local command (dev, demo) runs on: the one given with `--nats`
 * (checked), or a nats-server it starts itself on free ports with the
 * reference config (JetStream, the advisory import), stopped with it.
 */
export interface LocalNats {
  readonly url: string;
  /** The started server's pid; undefined when `--nats` was given. */
  readonly pid: number | undefined;
  /** Resolves when a started server exits (never for a given one). */
  readonly exited: Promise<unknown>;
  stop(): Promise<void>;
}

/** Starts (or checks) NATS for a local command. */
export async function localNats(given: string | undefined): Promise<LocalNats> {
  if (given !== undefined) {
    await checkNats(given, { advisories: true });
    return {
      url: given,
      pid: undefined,
      exited: new Promise(() => undefined),
      stop: () => Promise.resolve(),
    };
  }
  try {
    const server = await startNatsServer();
    return { url: server.url, pid: server.pid, exited: server.exited, stop: () => server.stop() };
  } catch (err) {
    if (err instanceof NatsServerNotFoundError) throw new StartupError(err.message);
    if (err instanceof NatsServerStartError)
      throw new StartupError(`${firstLine(err)}; or pass --nats URL of a server with JetStream`);
    throw err;
  }
}
