import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { Clock } from './clock.ts';
import type { ValueCodec } from './codec.ts';
import { subjects } from './subjects.ts';
import { preciseNow } from './failover.ts';

/** How a host was found to be gone. */
export type DownCause = 'advisory' | 'heartbeat';

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
  /** A host silent for this long is down (default 20 ms; see the closing note for the figures). */
  heartbeatTimeoutMs?: number;
  /** Watch the $SYS disconnect advisories imported into the app account (default true). */
  advisories?: boolean;
};

type Peer = { lastSeen: number; load: HostLoad };

/** The NATS connection name of a host: the advisories name the client, this maps it back. */
export const connectionName = (hostId: string) => `ftm-host-${hostId}`;
const namePrefix = 'ftm-host-';

/**
 * Which hosts are alive. Every host heartbeats on `ftm.hb.<host>`; a host
 * is down when the server reports its connection closed (the $SYS
 * DISCONNECT advisory, milliseconds after a crash) or when its heartbeats
 * stop (a hang or a cut-off). Registration is the heartbeat itself: a host
 * that stops beating expires after the timeout.
 */
export class Membership {
  readonly peers = new Map<string, Peer>();
  /** Hosts found down and not heard from since. */
  readonly down = new Set<string>();
  private readonly subs: Subscription[] = [];
  private timers: NodeJS.Timeout[] = [];
  private lastCheck = 0;
  private readonly interval: number;
  private readonly timeout: number;

  constructor(
    private readonly nc: NatsConnection,
    private readonly codec: ValueCodec,
    readonly hostId: string,
    private readonly clock: Clock,
    private readonly load: () => HostLoad,
    private readonly onDown: (hostId: string, cause: DownCause, at: number) => void,
    private readonly options: MembershipOptions = {},
  ) {
    this.interval = options.heartbeatIntervalMs ?? 5;
    this.timeout = options.heartbeatTimeoutMs ?? 20;
  }

  async start(): Promise<void> {
    this.subs.push(
      this.nc.subscribe(subjects.heartbeatAll, {
        callback: (_e, m) => {
          const id = m.subject.slice(subjects.heartbeatAll.length - 1);
          if (id === this.hostId) return;
          const load = this.codec.decode(m.data) as HostLoad;
          this.peers.set(id, { lastSeen: this.clock.now(), load });
          this.down.delete(id);
        },
      }),
    );
    if (this.options.advisories ?? true) {
      this.subs.push(
        this.nc.subscribe(subjects.disconnectAdvisory, {
          callback: (_e, m) => {
            const name = (m.json<{ client?: { name?: string } }>().client?.name ?? '').trim();
            if (name.startsWith(namePrefix))
              this.markDown(name.slice(namePrefix.length), 'advisory');
          },
        }),
      );
    }
    const beat = () =>
      this.nc.publish(subjects.heartbeat(this.hostId), this.codec.encode(this.load()));
    beat();
    this.timers.push(setInterval(beat, this.interval));
    // Check often enough that detection adds at most a few ms to the timeout.
    this.lastCheck = this.clock.now();
    this.timers.push(setInterval(() => this.check(), Math.max(1, this.interval / 2)));
    await this.nc.flush();
  }

  /** Tells the others at once (a draining host's new load) instead of at the next beat. */
  beatNow(): void {
    this.nc.publish(subjects.heartbeat(this.hostId), this.codec.encode(this.load()));
  }

  private check(): void {
    const now = this.clock.now();
    const stalled = now - this.lastCheck > this.timeout / 2;
    this.lastCheck = now;
    // Our own event loop stalled: the heartbeats may be waiting in our socket. Judge next time.
    if (stalled) {
      for (const p of this.peers.values()) p.lastSeen = Math.max(p.lastSeen, now - this.interval);
      return;
    }
    for (const [id, p] of this.peers) {
      if (now - p.lastSeen > this.timeout) this.markDown(id, 'heartbeat');
    }
  }

  private markDown(id: string, cause: DownCause): void {
    if (id === this.hostId) return;
    this.peers.delete(id);
    if (this.down.has(id)) return;
    this.down.add(id);
    this.onDown(id, cause, preciseNow());
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
    const candidates: [string, HostLoad][] = [...this.peers].map(([id, p]) => [id, p.load]);
    if (self) candidates.push([this.hostId, self]);
    let best: string | undefined;
    let bestRoom = 0;
    for (const [id, load] of candidates) {
      if (exclude.has(id) || load.draining) continue;
      const room = load.capacity - load.primaries - load.standbys;
      if (room <= 0) continue;
      if (best === undefined || room > bestRoom || (room === bestRoom && id < best)) {
        best = id;
        bestRoom = room;
      }
    }
    // Count the choice at once: the next pick, before the next heartbeat, spreads further.
    const peer = best === undefined ? undefined : this.peers.get(best);
    if (peer) peer.load = { ...peer.load, standbys: peer.load.standbys + 1 };
    return best;
  }

  stop(): void {
    for (const t of this.timers) clearInterval(t);
    this.timers = [];
    for (const s of this.subs) s.unsubscribe();
    this.subs.length = 0;
  }
}
