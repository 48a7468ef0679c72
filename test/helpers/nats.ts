import {
  startNatsCluster,
  startNatsServer,
  type NatsClusterHandle,
  type NatsClusterOptions,
  type NatsServerHandle,
  type NatsServerOptions,
} from '../../infra/index.ts';
import { jetstreamManager } from '@nats-io/jetstream';
import { connectNats } from '../../runtime/nats-connect.ts';

/** The server of the current suite; read it inside tests or hooks, not at describe() time. */
export interface NatsServerFixture {
  readonly url: string;
  readonly server: NatsServerHandle;
}

/** The cluster of the current suite; read it inside tests or hooks, not at describe() time. */
export interface NatsClusterFixture {
  /** All node URLs comma-joined. */
  readonly url: string;
  readonly urls: readonly string[];
  readonly cluster: NatsClusterHandle;
}

function notStarted(what: string): Error {
  return new Error(
    `${what} is not running: read it inside it()/before() hooks, after the suite's before() hook`,
  );
}

/**
 * Registers mocha `before`/`after` hooks in the calling `describe` that start one nats-server
 * for the suite and stop it afterwards (also when a test failed).
 *
 * @example
 * describe('replication', () => {
 *   const nats = useNatsServer();
 *   it('connects', async () => {
 *     const nc = await connect({ servers: nats.url });
 *     ...
 *   });
 * });
 */
export function useNatsServer(options?: NatsServerOptions): NatsServerFixture {
  let server: NatsServerHandle | undefined;
  before(async function () {
    this.timeout(20_000);
    server = await startNatsServer(options);
  });
  after(async function () {
    this.timeout(20_000);
    await server?.stop();
  });
  return {
    get url() {
      if (server === undefined) throw notStarted('useNatsServer().url');
      return server.url;
    },
    get server() {
      if (server === undefined) throw notStarted('useNatsServer().server');
      return server;
    },
  };
}

/** Like {@link useNatsServer}, with a local JetStream cluster (3 nodes by default). */
export function useNatsCluster(options?: NatsClusterOptions): NatsClusterFixture {
  let cluster: NatsClusterHandle | undefined;
  before(async function () {
    this.timeout(30_000);
    cluster = await startNatsCluster(options);
  });
  after(async function () {
    this.timeout(30_000);
    await cluster?.stop();
  });
  return {
    get url() {
      if (cluster === undefined) throw notStarted('useNatsCluster().url');
      return cluster.url;
    },
    get urls() {
      if (cluster === undefined) throw notStarted('useNatsCluster().urls');
      return cluster.urls;
    },
    get cluster() {
      if (cluster === undefined) throw notStarted('useNatsCluster().cluster');
      return cluster;
    },
  };
}

/**
 * For suites whose hosts share the test process and do not test detection:
 * several hosts' heartbeat threads on two busy cores can miss 25 ms and
 * move a session mid-test. A wide timeout keeps false detections out.
 */
export const quietDetection = { heartbeatTimeoutMs: 500 } as const;

/**
 * Empties what the mesh keeps in JetStream (ownership and membership records,
 * the log, snapshots) once a test's hosts are closed: the next test starts
 * from a clean mesh instead of restoring the last one's sessions.
 */
export async function purgeMesh(url: string): Promise<void> {
  const nc = await connectNats(url);
  try {
    const jsm = await jetstreamManager(nc);
    for await (const name of jsm.streams.names()) await jsm.streams.purge(name);
  } finally {
    await nc.close();
  }
}
