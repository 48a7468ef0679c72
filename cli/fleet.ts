import type { MeshClient } from '../runtime/index.ts';
import { describeExit, spawnCli, type Child, type ChildExit } from './child-process.ts';
import { StartupError } from './errors.ts';
import { waitUntil } from './wait.ts';

/**
 * The host and gateway processes of `dev` and `demo failover`: started as
 * children of this process, each waited on until the mesh sees it, restarted
 * one at a time with a drain, and stopped by pid. A child that exits when
 * nobody asked it to is reported to `onUnexpectedExit`.
 */

/** How long a child may take to print its ready line (a cold tsx start on a busy machine). */
const READY_TIMEOUT_MS = 30_000;
/** How long a drain may take before the child is stopped anyway. */
const DRAIN_GRACE_MS = 35_000;
/** How long a child asked to stop at once may take before SIGKILL. */
const STOP_GRACE_MS = 5_000;

export interface FleetOptions {
  readonly nats: string;
  /** Watches membership: a started host counts once it is live here. */
  readonly mesh: MeshClient;
  /** Arguments every host gets besides --nats and --id (e.g. --actors). */
  readonly hostArgs: readonly string[];
  /** Arguments the gateway gets besides --nats, --id and --port. */
  readonly gatewayArgs: readonly string[];
  /** Environment of every child (e.g. FTMESH_SECRET for the gateway). */
  readonly env?: Readonly<Record<string, string>>;
  /** A child exited without being asked to. */
  readonly onUnexpectedExit?: (name: string, exit: ChildExit, child: Child) => void;
  /** Every stderr line of every child, with the child's name. */
  readonly onStderr?: (name: string, line: string) => void;
}

/** A started host: its process and what its `host ... surface X` line said. */
export interface HostProcess {
  readonly id: string;
  readonly child: Child;
  /** Hash of the actors it runs, as the gateway checks them (load-actors.ts). */
  readonly surface: string;
}

export interface GatewayProcess {
  readonly id: string;
  readonly child: Child;
  readonly url: string;
  readonly port: number;
  readonly surface: string;
}

const surfaceOf = (line: string) => /surface (\S+)/.exec(line)?.[1] ?? '';

export class Fleet {
  readonly hosts = new Map<string, HostProcess>();
  gateway: GatewayProcess | undefined;
  /** Children this fleet asked to exit (a kill, a stop, a restart): their exit is no news. */
  private readonly expected = new WeakSet<Child>();
  /** Every child still running, ready or not: what {@link Fleet.stopAll} stops. */
  private readonly running = new Set<Child>();
  private stopped = false;

  constructor(private readonly options: FleetOptions) {}

  private spawn(name: string, args: string[], nice: boolean): Child {
    if (this.stopped) throw new StartupError(`not starting ${name}: stopping`);
    const child = spawnCli(args, {
      name,
      nice,
      ...(this.options.env ? { env: this.options.env } : {}),
      ...(this.options.onStderr
        ? { onStderr: (line: string) => this.options.onStderr!(name, line) }
        : {}),
    });
    this.running.add(child);
    void child.exited.then((exit) => {
      this.running.delete(child);
      if (!this.expected.has(child) && !this.stopped)
        this.options.onUnexpectedExit?.(name, exit, child);
    });
    return child;
  }

  /**
   * Starts host `id` and resolves once the mesh sees it live (a new
   * incarnation, when the id was live before). `nice`: start at a low
   * priority while other hosts serve (see child-process.ts).
   */
  async startHost(id: string, nice = false): Promise<HostProcess> {
    const { mesh } = this.options;
    const before = mesh.hosts().find((h) => h.id === id)?.view.record.incarnation;
    const child = this.spawn(
      `host ${id}`,
      ['host', '--nats', this.options.nats, '--id', id, ...this.options.hostArgs],
      nice,
    );
    try {
      const line = await child.waitForLine(new RegExp(`^host ${id} actors `), READY_TIMEOUT_MS);
      await child.waitForLine(new RegExp(`^ready ${id}$`), READY_TIMEOUT_MS);
      child.renice();
      const host = { id, child, surface: surfaceOf(line) };
      this.hosts.set(id, host);
      await waitUntil(
        () =>
          mesh
            .hosts()
            .some(
              (h) =>
                h.id === id &&
                h.view.record.state === 'alive' &&
                h.view.record.incarnation !== before,
            ),
        `host ${id} to be live on the mesh`,
      );
      return host;
    } catch (err) {
      this.expected.add(child);
      await child.stopNow(STOP_GRACE_MS);
      throw err;
    }
  }

  /** Starts the gateway; resolves once it listens. */
  async startGateway(id: string, port: number, nice = false): Promise<GatewayProcess> {
    const child = this.spawn(
      `gateway ${id}`,
      [
        'gateway',
        '--nats',
        this.options.nats,
        '--id',
        id,
        '--port',
        String(port),
        ...this.options.gatewayArgs,
      ],
      nice,
    );
    try {
      const line = await child.waitForLine(new RegExp(`^gateway ${id} actors `), READY_TIMEOUT_MS);
      const ready = await child.waitForLine(new RegExp(`^ready gateway ${id} `), READY_TIMEOUT_MS);
      child.renice();
      const url = ready.split(' ')[3] ?? '';
      const gw = { id, child, url, port: Number(new URL(url).port), surface: surfaceOf(line) };
      this.gateway = gw;
      return gw;
    } catch (err) {
      this.expected.add(child);
      await child.stopNow(STOP_GRACE_MS);
      throw err;
    }
  }

  /** SIGKILL to host `id`: a crash. Resolves once it is gone. */
  async kill(id: string): Promise<void> {
    const host = this.hosts.get(id);
    if (!host) throw new StartupError(`no host ${id} to kill`);
    this.expected.add(host.child);
    host.child.signal('SIGKILL');
    await host.child.exited;
  }

  /** Drains host `id` (SIGTERM) and waits for it to exit. */
  async drain(id: string): Promise<ChildExit | undefined> {
    const host = this.hosts.get(id);
    if (!host?.child.running) return undefined;
    this.expected.add(host.child);
    return host.child.stop(DRAIN_GRACE_MS);
  }

  /** Drains the gateway and waits for it to exit. */
  async drainGateway(): Promise<void> {
    const gw = this.gateway;
    if (!gw?.child.running) return;
    this.expected.add(gw.child);
    await gw.child.stop(DRAIN_GRACE_MS);
  }

  /**
   * Stops every child at once, those still starting too, cleanly and without
   * a drain (the whole mesh goes); SIGKILL after 5 s. Starts nothing after.
   */
  async stopAll(): Promise<void> {
    this.stopped = true;
    await Promise.all([...this.running].map((c) => c.stopNow(STOP_GRACE_MS)));
  }
}

/** One line for a child that exited on its own. */
export function unexpectedExitLine(name: string, exit: ChildExit, child: Child): string {
  const why = child.stderrTail.filter((l) => l.trim()).at(-1);
  return `${name} (pid ${child.pid}) ${describeExit(exit)}${why ? `: ${why}` : ''}`;
}
