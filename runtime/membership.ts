import { Worker } from 'node:worker_threads';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { ValueCodec } from './codec.ts';
import { subjects } from './subjects.ts';
import { preciseNow } from './failover.ts';

/** How a host was found to be gone. */
export type DownCause = 'advisory' | 'heartbeat' | 'leave';

/** What a host says about itself in each heartbeat. */
export type HostLoad = {
  /** Sessions it is primary of, and standby of. */
  primaries: number;
  standbys: number;
  /** Most sessions (primaries + standbys) it takes; 0 for a client-only host. */
  capacity: number;
  /** A draining host takes no new sessions or standbys. */
  draining: boolean;
};

export type MembershipOptions = {
  /** Heartbeat period (default 5 ms). */
  heartbeatIntervalMs?: number;
  /** A host silent for this long is down (default 25 ms; bench/README.md has the figures). */
  heartbeatTimeoutMs?: number;
  /** Watch the $SYS disconnect advisories imported into the app account (default true). */
  advisories?: boolean;
  /**
   * A host without sessions beats this often (default 250 ms) and is down
   * after 4 periods of silence: it holds nobody's session.
   */
  slowHeartbeatIntervalMs?: number;
  /** A main thread that has not run for this long is hung: its heartbeats stop (default 1,000 ms). */
  mainHangMs?: number;
};

/**
 * A live peer: its load as it last reported it, and the times this host
 * picked it since (placements its reports may not show yet).
 */
type Peer = { load: HostLoad; picked: number[] };

/** A pick not reflected in a report after this long is forgotten (its placement failed). */
const pickedForgetMs = 1_000;

type FromWorker =
  | { type: 'ready' | 'stopped' }
  | { type: 'beat'; id: string; load: Uint8Array }
  | { type: 'down'; id: string; at: number; cause?: 'leave' };

const count = (load: HostLoad) => load.primaries + load.standbys;

/** The NATS connection name of a host: the advisories name the client, this maps it back. */
export const connectionName = (hostId: string) => `ftm-host-${hostId}`;
const namePrefix = 'ftm-host-';

/**
 * Which hosts are alive. Every host heartbeats on `ftm.hb.<host>`; a host
 * is down when the server reports its connection closed (the $SYS
 * DISCONNECT advisory, milliseconds after a crash) or when its heartbeats
 * stop (a hang or a cut-off). Registration is the heartbeat itself: a host
 * that stops beating expires after the timeout. Only hosts that hold
 * sessions beat fast; one with none (a spare, a client) beats every 250 ms.
 *
 * Heartbeats are sent and watched by a worker thread on a connection of its
 * own (liveness-worker.mjs): the main thread's pauses (GC, a burst of
 * requests) would otherwise look like a hang. The main thread ticks a shared
 * counter; when it stops ticking for `mainHangMs`, the beats stop too.
 */
export class Membership {
  readonly peers = new Map<string, Peer>();
  /** Hosts found down and not heard from since, with how: the server's word or missed heartbeats. */
  readonly down = new Map<string, DownCause>();
  private readonly subs: Subscription[] = [];
  private timers: NodeJS.Timeout[] = [];
  private worker: Worker | undefined;
  private readonly interval: number;
  private readonly timeout: number;

  constructor(
    private readonly nc: NatsConnection,
    private readonly servers: string | string[],
    private readonly codec: ValueCodec,
    readonly hostId: string,
    private readonly load: () => HostLoad,
    private readonly onDown: (hostId: string, cause: DownCause, at: number) => void,
    private readonly options: MembershipOptions = {},
  ) {
    this.interval = options.heartbeatIntervalMs ?? 5;
    this.timeout = options.heartbeatTimeoutMs ?? 25;
  }

  async start(): Promise<void> {
    if (this.options.advisories ?? true) {
      this.subs.push(
        this.nc.subscribe(subjects.disconnectAdvisory, {
          callback: (_e, m) => {
            const name = (m.json<{ client?: { name?: string } }>().client?.name ?? '').trim();
            if (name.startsWith(namePrefix))
              this.markDown(name.slice(namePrefix.length), 'advisory', preciseNow());
          },
        }),
      );
    }
    const ticks = new SharedArrayBuffer(4);
    const tick = new Int32Array(ticks);
    // Coarse on purpose: it only has to show within mainHangMs that this thread still runs.
    this.timers.push(setInterval(() => Atomics.add(tick, 0, 1), 100));
    const worker = new Worker(new URL('./liveness-worker.mjs', import.meta.url), {
      workerData: {
        servers: this.servers,
        hostId: this.hostId,
        intervalMs: this.interval,
        timeoutMs: this.timeout,
        slowIntervalMs: this.options.slowHeartbeatIntervalMs ?? 250,
        slowTimeoutMs: 4 * (this.options.slowHeartbeatIntervalMs ?? 250),
        mainHangMs: this.options.mainHangMs ?? 1_000,
        ticks,
      },
      execArgv: [],
    });
    this.worker = worker;
    const ready = new Promise<void>((resolve, reject) => {
      worker.once('error', reject);
      worker.on('message', (m: FromWorker) => {
        if (m.type === 'ready') resolve();
        else if (m.type === 'beat') {
          let peerLoad;
          try {
            peerLoad = this.codec.decode(m.load) as HostLoad;
          } catch {
            return; // not an ftmesh host's beat: ignore it
          }
          // A report whose count grew shows that many of our picks; an
          // unchanged one (sent before our placement landed) shows none.
          const before = this.peers.get(m.id);
          const picked = before?.picked ?? [];
          const grew = before ? count(peerLoad) - count(before.load) : 0;
          if (grew > 0) picked.splice(0, grew);
          this.peers.set(m.id, { load: peerLoad, picked });
          this.down.delete(m.id);
        } else if (m.type === 'down') this.markDown(m.id, m.cause ?? 'heartbeat', m.at);
      });
    });
    this.sendLoad();
    // Loads change slowly; the beats carry the latest one.
    this.timers.push(setInterval(() => this.sendLoad(), 200));
    await ready;
    await this.nc.flush();
  }

  /** The load for the beats; a host holding sessions beats fast. */
  private sendLoad(): void {
    const load = this.load();
    const fast = load.primaries + load.standbys > 0;
    this.worker?.postMessage({ type: 'load', load: this.codec.encode(load), fast });
  }

  /** Tells the others at once (a draining host's new load) instead of at the next beat. */
  beatNow(): void {
    this.sendLoad();
    this.worker?.postMessage({ type: 'beat-now' });
  }

  private markDown(id: string, cause: DownCause, at: number): void {
    if (id === this.hostId) return;
    this.peers.delete(id);
    const known = this.down.get(id);
    // Heartbeats first, then the advisory confirms it: report the confirmation too.
    if (known === cause || known === 'advisory' || known === 'leave') return;
    this.down.set(id, cause);
    this.onDown(id, cause, at);
  }

  isLive(id: string): boolean {
    return id === this.hostId || this.peers.has(id);
  }

  /**
   * The live host with the most room for one more session, never one of
   * `exclude`; ties broken by id so that choices spread the same way
   * everywhere. Undefined when no host has room.
   */
  pick(exclude: ReadonlySet<string>, self?: HostLoad): string | undefined {
    const now = performance.now();
    const candidates: [string, HostLoad, number][] = [...this.peers].map(([id, p]) => {
      while (p.picked.length && now - p.picked[0]! > pickedForgetMs) p.picked.shift();
      return [id, p.load, p.picked.length];
    });
    if (self) candidates.push([this.hostId, self, 0]);
    let best: string | undefined;
    let bestRoom = 0;
    for (const [id, load, picked] of candidates) {
      if (exclude.has(id) || load.draining) continue;
      const room = load.capacity - count(load) - picked;
      if (room <= 0) continue;
      if (best === undefined || room > bestRoom || (room === bestRoom && id < best)) {
        best = id;
        bestRoom = room;
      }
    }
    // Count the choice at once: the next pick, before the host reports it, spreads further.
    if (best !== undefined) this.peers.get(best)?.picked.push(now);
    return best;
  }

  /** Stops the beats (others see this host expire) and the worker. */
  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    for (const s of this.subs) s.unsubscribe();
    this.subs.length = 0;
    const worker = this.worker;
    this.worker = undefined;
    if (!worker) return;
    const stopped = new Promise<void>((resolve) => {
      worker.on('message', (m: FromWorker) => m.type === 'stopped' && resolve());
      worker.once('exit', () => resolve());
    });
    worker.postMessage({ type: 'stop' });
    await Promise.race([stopped, new Promise((r) => setTimeout(r, 500))]);
    await worker.terminate();
  }
}
