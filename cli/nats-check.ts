import { jetstreamManager } from '@nats-io/jetstream';
import type { NatsConnection } from '@nats-io/transport-node';
import { connectNats, subjects } from '../runtime/index.ts';
import { StartupError, UsageError, firstLine } from './errors.ts';

/**
 * Checks, before a command starts anything, that NATS at a URL is one ftmesh
 * can run on, and says what to do when it is not: answering at all (within a
 * few seconds, never a hang), JetStream on, and a cluster when JetStream
 * replicas above 1 are asked for. The runtime would otherwise wait or fail
 * deep inside with JetStream's own words.
 */

/** How long the first connection may take before NATS counts as unreachable. */
const CONNECT_TIMEOUT_MS = 3_000;
/** How long a probe connection's disconnect advisory may take to arrive. */
const ADVISORY_WAIT_MS = 500;

const startHint = 'start one with JetStream (ftmesh nats prints a config) or run ftmesh dev';

/** Options of {@link checkNats}. */
export interface CheckOptions {
  /** JetStream replicas the command will ask for (default 1). */
  replicas?: number;
  /** Also check that the server delivers disconnect advisories (hosts); warns when not. */
  advisories?: boolean;
  /** Where a warning goes (default stderr). */
  warn?: (line: string) => void;
}

/** Opens a short-lived connection; unreachable NATS is a StartupError in at most 3 s. */
async function connectChecked(url: string, name: string): Promise<NatsConnection> {
  try {
    return await connectNats(url, {
      name,
      timeout: CONNECT_TIMEOUT_MS,
      reconnect: false,
      maxReconnectAttempts: 0,
    });
  } catch (err) {
    const why = firstLine(err);
    if (/invalid url|malformed|parse/i.test(why))
      throw new UsageError(`--nats ${url}: ${why}; use nats://HOST:PORT`);
    if (/authori[sz]ation|authentication|permission/i.test(why))
      throw new StartupError(
        `NATS at ${url} refused the connection (${why}): ftmesh connects without credentials; give the server a no_auth_user in an account with JetStream (ftmesh nats prints such a config)`,
      );
    throw new StartupError(`cannot reach NATS at ${url} (${why}): ${startHint}`);
  }
}

/**
 * Resolves when NATS at `url` answers, has JetStream for this account, and is
 * a cluster if `replicas` > 1.
 * @throws StartupError saying what is missing and how to get it
 */
export async function checkNats(url: string, options: CheckOptions = {}): Promise<void> {
  const nc = await connectChecked(url, 'ftmesh-check');
  try {
    const info = nc.info;
    if (!info?.jetstream)
      throw new StartupError(
        `NATS at ${url} has no JetStream (a nats-server started without -js, like Debian's packaged /etc/nats-server.conf): ${startHint}`,
      );
    try {
      const jsm = await jetstreamManager(nc, { timeout: CONNECT_TIMEOUT_MS });
      await jsm.getAccountInfo();
    } catch (err) {
      throw new StartupError(
        `JetStream at ${url} does not answer for this connection's account (${firstLine(err)}): enable JetStream for the account, or ${startHint}`,
      );
    }
    const replicas = options.replicas ?? 1;
    if (replicas > 1 && !info.cluster)
      throw new StartupError(
        `--replicas ${replicas} needs a JetStream cluster of ${replicas} servers at least, and NATS at ${url} is a single server (JetStream refuses replicas there): use --replicas 1, or a cluster (ftmesh nats --cluster)`,
      );
    if (options.advisories && !(await deliversAdvisories(nc, url))) {
      (options.warn ?? ((line: string) => console.error(line)))(
        `ftmesh: warning: NATS at ${url} does not deliver disconnect advisories on ${subjects.disconnectAdvisory}: crashes are found by heartbeats only (a little later); ftmesh nats prints a config with the import`,
      );
    }
  } finally {
    await nc.close().catch(() => undefined);
  }
}

/**
 * True when a connection closing here is announced on the advisory subject
 * the runtime watches (the system account's export imported into APP).
 */
async function deliversAdvisories(nc: NatsConnection, url: string): Promise<boolean> {
  const sub = nc.subscribe(subjects.disconnectAdvisory, { max: 1 });
  try {
    await nc.flush();
    const probe = await connectChecked(url, 'ftmesh-check-advisory');
    await probe.close();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), ADVISORY_WAIT_MS);
    });
    const heard = (async () => {
      for await (const _ of sub) return true;
      return false;
    })();
    const result = await Promise.race([heard, timeout]);
    clearTimeout(timer);
    return result;
  } finally {
    sub.unsubscribe();
  }
}
