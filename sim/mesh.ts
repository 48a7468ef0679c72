import { createValueCodec } from '../runtime/codec.ts';
import { DroppedMessages } from '../runtime/dropped-messages.ts';
import type { FtmError } from '../runtime/errors.ts';
import { startHost, type Host } from '../runtime/host.ts';
import { parseHostRecord } from '../runtime/membership-record.ts';
import { connectionName, livenessConnectionName } from '../runtime/membership.ts';
import { storeNames, subjects } from '../runtime/subjects.ts';
import { simActors } from './actors.ts';
import { processClock } from './clock.ts';
import { KvBucket, type KvWrite } from './kv-store.ts';
import { LivenessHub } from './liveness.ts';
import { LogStream } from './log-store.ts';
import { Network, type Connection } from './network.ts';
import type { SimProcess } from './process.ts';
import { seededRandom } from './random.ts';
import { SnapshotStore } from './snapshot-store.ts';
import { StoreServer } from './store-server.ts';
import { simTransport } from './transport.ts';
import type { World } from './world.ts';

/** One host id of the mesh: its current process and, once started, its Host. */
export type SimHost = {
  readonly id: string;
  proc: SimProcess;
  conns: Connection[];
  host: Host | undefined;
  /** Processes started under this id so far. */
  starts: number;
};

/** Options of {@link Mesh}. */
export type MeshOptions = {
  /** The log ignores expected last sequences (shows what fencing prevents). */
  fenceOff?: boolean;
  /** Sessions (primaries + standbys) a host takes. */
  capacity?: number;
  /** A snapshot every this many commits of a session. */
  snapshotEvery?: number;
};

/** Grace before a restore (host.ts default): the dead-serve-nothing invariant uses it too. */
export const restoreGraceMs = 1_000;

/**
 * The simulated mesh: the NATS server (network), the KV buckets, the log
 * and the snapshot store, the liveness hub, and hosts running the real
 * runtime through `startHost` on those ports. Faults act on hosts through
 * it: crash (the process is gone, the server sends the disconnect
 * advisories), restart (a new process under the same id), hang and resume,
 * partition and heal.
 */
export class Mesh {
  readonly network: Network;
  readonly owners: KvBucket;
  readonly hostsKv: KvBucket;
  readonly log: LogStream;
  readonly snapshots: SnapshotStore;
  readonly liveness: LivenessHub;
  readonly hosts = new Map<string, SimHost>();
  /** Every Host ever started (crashed ones too): their failover records count. */
  readonly started: Host[] = [];
  /** Errors the hosts reported through onError. */
  onHostError: ((hostId: string, err: FtmError) => void) | undefined;
  /** Writes to either bucket, at the server. */
  onKvWrite: ((bucket: string, w: KvWrite, prev: KvWrite | undefined) => void) | undefined;
  private readonly codec = createValueCodec();

  constructor(
    readonly world: World,
    readonly options: MeshOptions = {},
  ) {
    const rng = world.rng;
    this.network = new Network(world, rng.fork());
    const server = (name: string) => new StoreServer(name, world, rng.fork());
    this.owners = new KvBucket(storeNames.owners, world, server(storeNames.owners));
    this.hostsKv = new KvBucket(storeNames.hosts, world, server(storeNames.hosts));
    this.log = new LogStream(server('log'), options.fenceOff ?? false);
    this.snapshots = new SnapshotStore(server('snapshots'));
    this.liveness = new LivenessHub(world, this.network, rng.fork());
    this.owners.onWrite = (w, prev) => this.onKvWrite?.(storeNames.owners, w, prev);
    this.hostsKv.onWrite = (w, prev) => {
      this.trackIncarnation(w);
      this.onKvWrite?.(storeNames.hosts, w, prev);
    };
  }

  /** A process joined: publishes from it carry its incarnation from now on. */
  private trackIncarnation(w: KvWrite): void {
    if (!w.value || w.by.hostId !== w.key) return;
    try {
      const r = parseHostRecord(this.codec.decode(w.value));
      if (r.state === 'alive') w.by.incarnation = r.incarnation;
    } catch {
      // Not a host record: the invariants report it.
    }
  }

  /** Starts a process for `id` (a new one after a crash); resolves with its Host, or undefined if it failed. */
  async start(id: string): Promise<Host | undefined> {
    const { world } = this;
    const prev = this.hosts.get(id);
    const n = (prev?.starts ?? 0) + 1;
    const proc = world.process(`${id}#${n}`, id);
    const clock = processClock(world, proc);
    const random = seededRandom(world.rng.fork());
    const onError = (err: FtmError) => this.onHostError?.(id, err);
    const dropped = new DroppedMessages(clock, onError);
    const main = this.network.connect(proc, connectionName(id), dropped);
    const live = this.network.connect(proc, livenessConnectionName(id), dropped);
    const sim: SimHost = { id, proc, conns: [main, live], host: undefined, starts: n };
    this.hosts.set(id, sim);
    world.trace.add(`mesh: start ${proc.name}`);
    try {
      const host = await startHost(
        {
          transport: simTransport(world, this.network, main),
          ownersKv: this.owners.port(proc),
          hostsKv: this.hostsKv.port(proc),
          log: this.log.port(proc),
          snapshots: this.snapshots.port(proc),
          liveness: this.liveness.create(proc, id, live),
          clock,
          random,
          dropped,
        },
        {
          hostId: id,
          actors: simActors,
          onError,
          trace: (line) => world.trace.add(`${id}: ${line}`),
          capacity: this.options.capacity ?? 8,
          snapshotEvery: this.options.snapshotEvery ?? 12,
          restoreGraceMs,
        },
      );
      if (proc.crashed) return undefined;
      sim.host = host;
      this.started.push(host);
      world.trace.add(`mesh: ${proc.name} started as ${proc.incarnation}`);
      return host;
    } catch (err) {
      world.trace.add(`mesh: ${proc.name} failed to start: ${(err as Error).message}`);
      if (!proc.crashed) this.crash(id);
      return undefined;
    }
  }

  /** Hosts whose process runs (maybe hung or cut off) and whose Host is up. */
  running(): SimHost[] {
    return [...this.hosts.values()].filter((h) => !h.proc.crashed);
  }

  /** The process is gone: its timers, answers and subscriptions with it; the server tells the others. */
  crash(id: string): void {
    const h = this.hosts.get(id);
    if (!h || h.proc.crashed) return;
    this.world.crash(h.proc);
    for (const c of h.conns) this.network.close(c);
    this.liveness.update();
    this.world.trace.add(`mesh: crash ${h.proc.name}`);
    for (const c of h.conns) {
      const advisory = new TextEncoder().encode(JSON.stringify({ client: { name: c.name } }));
      this.world.schedule(this.world.rng.range(3, 8), () =>
        this.network.publish(this.network.server, subjects.disconnectAdvisory, advisory),
      );
    }
  }

  hang(id: string): boolean {
    const h = this.hosts.get(id);
    if (!h || h.proc.crashed || h.proc.hung) return false;
    h.proc.hung = true;
    this.liveness.update();
    return true;
  }

  resume(id: string): boolean {
    const h = this.hosts.get(id);
    if (!h || h.proc.crashed || !h.proc.hung) return false;
    this.world.resume(h.proc);
    this.liveness.update();
    return true;
  }

  partition(id: string): boolean {
    const h = this.hosts.get(id);
    if (!h || h.proc.crashed || h.proc.partitioned) return false;
    h.proc.partitioned = true;
    this.liveness.update();
    return true;
  }

  heal(id: string): boolean {
    const h = this.hosts.get(id);
    if (!h || h.proc.crashed || !h.proc.partitioned) return false;
    h.proc.partitioned = false;
    for (const c of h.conns) this.network.healed(c);
    this.owners.resync();
    this.hostsKv.resync();
    this.liveness.update();
    return true;
  }

  /**
   * Starts `id` again, as a supervisor would: a start that fails (a store
   * that does not answer) is tried again after a while, until one runs.
   */
  restart(id: string): void {
    if (this.world.stopped || !this.hosts.get(id)?.proc.crashed) return;
    void this.start(id).then((host) => {
      if (!host) this.world.schedule(this.world.rng.range(200, 500), () => this.restart(id));
    });
  }

  /** The latest ownership record of `sid` as stored, decoded. */
  record(sid: string):
    | {
        primary: string;
        standby: string;
        epoch: number;
        term: number;
        closed?: true;
        actor: string;
      }
    | undefined {
    const w = this.owners.get(sid);
    if (!w?.value) return undefined;
    return this.codec.decode(w.value) as any;
  }
}
