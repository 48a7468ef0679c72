import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { NatsServerStartError } from './errors.ts';
import { findNatsServer } from './find-nats-server.ts';
import { freePorts } from './free-ports.ts';
import { configString, renderConfig } from './nats-config.ts';
import { createTempDir, removeTempDir } from './process-registry.ts';
import {
  settlesWithin,
  spawnServer,
  type NatsServerHandle,
  type ServerProcess,
  type ServerSpec,
} from './server-process.ts';

/** Options of {@link startNatsServer}; every field is optional. */
export interface NatsServerOptions {
  /** Enable JetStream (default true). */
  jetstream?: boolean;
  /** `max_payload` in nats-server syntax, e.g. `'8MB'` or `'1048576'` (default `'8MB'`). */
  maxPayload?: string;
  /**
   * Write the server's stdout and stderr to `nats-server.log` in its directory (default true).
   * Without it a failed start cannot show the server's own error message.
   */
  logFile?: boolean;
  /** How long to wait for `/healthz` to answer 200, in ms (default 10 000). */
  startTimeoutMs?: number;
}

/** Options of {@link startNatsCluster}; every field is optional. */
export interface NatsClusterOptions {
  /** Number of nodes (default 3; 3 is what R3 streams need). */
  size?: number;
  /** `max_payload` in nats-server syntax (default `'8MB'`). */
  maxPayload?: string;
  /** How long to wait for every node's `/healthz` to answer 200, in ms (default 10 000). */
  startTimeoutMs?: number;
}

/** A local JetStream cluster started by {@link startNatsCluster}. */
export interface NatsClusterHandle {
  /** Client URL of each node, in node order. */
  readonly urls: readonly string[];
  /** All client URLs comma-joined, as `connect({ servers })` accepts them. */
  readonly url: string;
  /** The current process of each node; {@link NatsClusterHandle.restartNode} replaces an entry. */
  readonly nodes: readonly NatsServerHandle[];
  /**
   * Starts node `index` again with the same name, ports, config and store, after it was killed
   * or stopped (a node's own stop() keeps its store: the cluster owns the directory). Waits up to
   * 5 s for the old process to exit, then resolves once the new one answers `/healthz` 200.
   * Rejects if the old process is still running (e.g. SIGSTOPped) or the cluster was stopped.
   */
  restartNode(index: number): Promise<NatsServerHandle>;
  /** Stops every node in parallel and removes the cluster's directory. Safe to call twice. */
  stop(): Promise<void>;
  /** Same as {@link NatsClusterHandle.stop}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void>;
}

const DEFAULTS = {
  jetstream: true,
  maxPayload: '8MB',
  logFile: true,
  startTimeoutMs: 10_000,
  clusterSize: 3,
} as const;

/** Free ports are only free until someone binds them: retry a start that lost that race. */
const MAX_START_ATTEMPTS = 3;
const MAX_CLUSTER_SIZE = 9;
const CONFIG_FILE = 'nats-server.conf';
const LOG_FILE = 'nats-server.log';

function checkMaxPayload(value: string): string {
  if (!/^\d+(?:B|K|KB|M|MB|G|GB)?$/i.test(value)) {
    throw new RangeError(
      `maxPayload must be a size such as '8MB' or '1048576', got ${JSON.stringify(value)}`,
    );
  }
  return value;
}

function checkTimeout(value: number): number {
  if (!Number.isFinite(value) || value <= 0) {
    throw new RangeError(`startTimeoutMs must be a positive number of ms, got ${value}`);
  }
  return value;
}

function isPortClash(error: unknown): boolean {
  return error instanceof NatsServerStartError && /address already in use/i.test(error.logTail);
}

/**
 * Starts one nats-server on free loopback ports, configured from infra/nats/single.conf
 * (JetStream, the APP account without credentials, `$SYS.ACCOUNT.APP.>` advisories imported).
 * Its config, log and store live in a fresh `ftm-nats-*` directory under the OS temp dir, which
 * stop() removes.
 *
 * @returns once `/healthz` answers 200.
 * @throws NatsServerNotFoundError if there is no nats-server binary.
 * @throws NatsServerStartError if it exits or is not healthy in time; the message has the log tail.
 * @example
 * const server = await startNatsServer();
 * try {
 *   const nc = await connect({ servers: server.url });
 *   // ...
 * } finally {
 *   await server.stop();
 * }
 */
export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServerHandle> {
  const jetstream = options.jetstream ?? DEFAULTS.jetstream;
  const maxPayload = checkMaxPayload(options.maxPayload ?? DEFAULTS.maxPayload);
  const logFile = options.logFile ?? DEFAULTS.logFile;
  const startTimeoutMs = checkTimeout(options.startTimeoutMs ?? DEFAULTS.startTimeoutMs);
  const bin = findNatsServer();

  const dir = await createTempDir();
  try {
    for (let attempt = 1; ; attempt++) {
      const [port, httpPort] = (await freePorts(2)) as [number, number];
      const spec: ServerSpec = {
        bin,
        name: `ftm-${port}`,
        port,
        httpPort,
        dir,
        configPath: join(dir, CONFIG_FILE),
        logPath: logFile ? join(dir, LOG_FILE) : undefined,
        ownsDir: true,
      };
      const config = await renderConfig('single', {
        SERVER_NAME: spec.name,
        PORT: String(port),
        HTTP_PORT: String(httpPort),
        MAX_PAYLOAD: maxPayload,
        JETSTREAM: String(jetstream),
        STORE_DIR: configString(join(dir, 'store')),
      });
      await writeFile(spec.configPath, config);
      // A fresh log per attempt, so the port-clash check reads this attempt's output only.
      if (spec.logPath !== undefined) await rm(spec.logPath, { force: true });

      const server = await spawnServer(spec);
      try {
        await server.waitUntilHealthy(startTimeoutMs);
        return server.handle;
      } catch (error) {
        server.handle.kill('SIGKILL');
        await server.handle.exited;
        if (attempt < MAX_START_ATTEMPTS && isPortClash(error)) continue;
        throw error;
      }
    }
  } catch (error) {
    await removeTempDir(dir);
    throw error;
  }
}

/** Allocates ports and writes every node's config under `dir`; ports are taken in one go. */
async function writeClusterSpecs(
  bin: string,
  dir: string,
  size: number,
  maxPayload: string,
): Promise<ServerSpec[]> {
  const ports = await freePorts(size * 3);
  const port = (node: number, kind: 0 | 1 | 2): number => ports[node * 3 + kind] as number;
  const specs: ServerSpec[] = [];
  for (let i = 0; i < size; i++) {
    const nodeDir = join(dir, `n${i + 1}`);
    await rm(nodeDir, { recursive: true, force: true });
    await mkdir(nodeDir);
    const routes = [];
    for (let j = 0; j < size; j++) {
      if (j !== i) routes.push(`"nats-route://127.0.0.1:${port(j, 2)}"`);
    }
    const spec: ServerSpec = {
      bin,
      name: `ftm-n${i + 1}`,
      port: port(i, 0),
      httpPort: port(i, 1),
      dir: nodeDir,
      configPath: join(nodeDir, CONFIG_FILE),
      logPath: join(nodeDir, LOG_FILE),
      ownsDir: false,
    };
    const config = await renderConfig('clusterNode', {
      SERVER_NAME: spec.name,
      PORT: String(spec.port),
      HTTP_PORT: String(spec.httpPort),
      CLUSTER_PORT: String(port(i, 2)),
      ROUTES: routes.join(', '),
      MAX_PAYLOAD: maxPayload,
      STORE_DIR: configString(join(nodeDir, 'store')),
    });
    await writeFile(spec.configPath, config);
    specs.push(spec);
  }
  return specs;
}

/**
 * Spawns every node, then waits for all of them together: a node's `/healthz` is 200 only once
 * it is current with the JetStream meta leader, which needs a quorum of nodes up. On failure
 * every node is stopped before the error is rethrown.
 */
async function startNodes(
  specs: readonly ServerSpec[],
  timeoutMs: number,
): Promise<ServerProcess[]> {
  const servers: ServerProcess[] = [];
  try {
    for (const spec of specs) servers.push(await spawnServer(spec));
    await Promise.all(servers.map((server) => server.waitUntilHealthy(timeoutMs)));
    return servers;
  } catch (error) {
    await Promise.all(servers.map((server) => server.handle.stop()));
    throw error;
  }
}

/**
 * Starts a local JetStream cluster (default 3 nodes, routes between all of them, loopback only),
 * configured from infra/nats/cluster-node.conf. Node directories live under one `ftm-nats-*`
 * temp directory that the cluster's stop() removes.
 *
 * @returns once every node's `/healthz` answers 200, i.e. a meta leader is elected and known.
 * @throws NatsServerNotFoundError if there is no nats-server binary.
 * @throws NatsServerStartError if a node exits or the cluster is not healthy in time.
 * @example
 * const cluster = await startNatsCluster();
 * const nc = await connect({ servers: cluster.urls });
 * cluster.nodes[1]?.kill('SIGKILL');
 * await cluster.restartNode(1);
 */
export async function startNatsCluster(
  options: NatsClusterOptions = {},
): Promise<NatsClusterHandle> {
  const size = options.size ?? DEFAULTS.clusterSize;
  if (!Number.isInteger(size) || size < 1 || size > MAX_CLUSTER_SIZE) {
    throw new RangeError(`size must be an integer from 1 to ${MAX_CLUSTER_SIZE}, got ${size}`);
  }
  const maxPayload = checkMaxPayload(options.maxPayload ?? DEFAULTS.maxPayload);
  const startTimeoutMs = checkTimeout(options.startTimeoutMs ?? DEFAULTS.startTimeoutMs);
  const bin = findNatsServer();

  const dir = await createTempDir();
  try {
    for (let attempt = 1; ; attempt++) {
      const specs = await writeClusterSpecs(bin, dir, size, maxPayload);
      try {
        const servers = await startNodes(specs, startTimeoutMs);
        return clusterHandle(dir, specs, servers, startTimeoutMs);
      } catch (error) {
        if (attempt < MAX_START_ATTEMPTS && isPortClash(error)) continue;
        throw error;
      }
    }
  } catch (error) {
    await removeTempDir(dir);
    throw error;
  }
}

function clusterHandle(
  dir: string,
  specs: readonly ServerSpec[],
  servers: readonly ServerProcess[],
  startTimeoutMs: number,
): NatsClusterHandle {
  const nodes: NatsServerHandle[] = servers.map((server) => server.handle);
  const urls = nodes.map((node) => node.url);
  let stopping: Promise<void> | undefined;

  // Shutdown order: all nodes at once (sequential SIGTERMs would make each survivor hold a
  // leader election first), then the directory with every store in it.
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      await Promise.all(nodes.map((node) => node.stop()));
      await removeTempDir(dir);
    })());

  const restartNode = async (index: number): Promise<NatsServerHandle> => {
    const spec = specs[index];
    const old = nodes[index];
    if (!Number.isInteger(index) || spec === undefined || old === undefined) {
      throw new RangeError(`restartNode: index must be 0 to ${specs.length - 1}, got ${index}`);
    }
    if (stopping !== undefined) throw new Error('restartNode: the cluster has been stopped');
    if (!(await settlesWithin(old.exited, 5_000))) {
      throw new Error(
        `restartNode(${index}): ${old.name} (pid ${old.pid}) is still running; kill('SIGKILL') or stop() it first`,
      );
    }
    const server = await spawnServer(spec);
    // Visible to stop() before it is healthy, so a later stop() cannot leak it; a stop() that
    // began while we spawned has already passed this node by.
    nodes[index] = server.handle;
    if (stopping !== undefined) {
      await server.handle.stop();
      throw new Error('restartNode: the cluster was stopped during the restart');
    }
    try {
      await server.waitUntilHealthy(startTimeoutMs);
    } catch (error) {
      await server.handle.stop();
      throw error;
    }
    return server.handle;
  };

  return {
    urls,
    url: urls.join(','),
    nodes,
    restartNode,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
