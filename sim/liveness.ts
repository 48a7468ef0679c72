import type { Liveness } from '../runtime/liveness.ts';
import { subjects } from '../runtime/subjects.ts';
import type { SimEvent } from './event-queue.ts';
import type { Connection, Network, Subscription } from './network.ts';
import type { Prng } from './prng.ts';
import type { SimProcess } from './process.ts';
import type { World } from './world.ts';

/** A watched host that never beat is suspected after this long (liveness-worker.mjs `firstBeatMs`). */
const firstBeatMs = 1_000;

/** One watcher's view of one watched host. */
type Pair = { event: SimEvent | undefined; fired: boolean; heardOnce: boolean };

/** The Liveness port of one host process (see {@link LivenessHub}). */
class SimLiveness implements Liveness {
  onSuspect: ((host: string, at: number, confirmed: boolean, why: string) => void) | undefined;
  started = false;
  stopped = false;
  beating = false;
  connected = true;
  incarnation = new Uint8Array(0);
  watched: readonly string[] = [];
  readonly pairs = new Map<string, Pair>();
  private probe: Subscription | undefined;

  constructor(
    private readonly hub: LivenessHub,
    readonly proc: SimProcess,
    readonly hostId: string,
    private readonly conn: Connection,
  ) {}

  async start(): Promise<void> {
    const network = this.hub.network;
    this.probe = network.subscribe(this.conn, subjects.probe(this.hostId), (m) => {
      if (this.stopped || !this.connected || !m.replyTo) return;
      network.publish(this.conn, m.replyTo, this.incarnation);
    });
    await network.flush(this.conn);
    this.started = true;
    this.hub.update();
  }

  watch(hosts: readonly string[]): void {
    this.watched = [...hosts];
    this.hub.update();
  }

  setBeating(on: boolean): void {
    this.beating = on;
    this.hub.update();
  }

  setIncarnation(incarnation: string): void {
    this.incarnation = new TextEncoder().encode(incarnation);
  }

  setConnected(on: boolean): void {
    this.connected = on;
    this.hub.update();
  }

  /** Beats are not simulated, nor the early probe: the membership probes every suspicion. */
  setProbeTimeout(): void {}

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.probe) this.hub.network.unsubscribe(this.probe);
    for (const p of this.pairs.values()) if (p.event) p.event.cancelled = true;
    this.pairs.clear();
    this.hub.update();
    return Promise.resolve();
  }

  /** Heard by others: running, reachable, beating, connected. */
  get audible(): boolean {
    return this.started && !this.stopped && this.proc.reachable && this.beating && this.connected;
  }
}

/**
 * Heartbeats without the beats: simulating a beat every 5 ms would cost more
 * than everything else, so the hub tracks, per watcher and watched host,
 * whether the watched host is silent toward the watcher (crashed, hung, cut
 * off, not beating) and fires the watcher's `onSuspect` after a sampled
 * detection delay unless the silence ended first, once per silence. A
 * watcher cut off from the server or hung judges nobody (its own beats do
 * not come back: liveness-worker.mjs), and starts over once it runs again.
 * Probes are real requests on `ftm.h.<id>.probe`, answered with the
 * incarnation by the host's liveness connection.
 */
export class LivenessHub {
  private readonly members: SimLiveness[] = [];
  suspicions = 0;

  constructor(
    readonly world: World,
    readonly network: Network,
    private readonly rng: Prng,
  ) {}

  /** The Liveness port of host `hostId` in process `proc`, on its own connection `conn`. */
  create(proc: SimProcess, hostId: string, conn: Connection): Liveness {
    const l = new SimLiveness(this, proc, hostId, conn);
    this.members.push(l);
    return l;
  }

  private audible(hostId: string): boolean {
    for (const m of this.members) if (m.hostId === hostId && m.audible) return true;
    return false;
  }

  /** Recomputes every watcher's silences; called on every change of a host's state or watch list. */
  update(): void {
    for (let i = this.members.length - 1; i >= 0; i--)
      if (this.members[i]!.proc.crashed) this.members.splice(i, 1);
    for (const w of this.members) {
      if (!w.started || w.stopped) continue;
      const judging = !w.proc.hung && !w.proc.partitioned;
      for (const [id, p] of w.pairs)
        if (!w.watched.includes(id)) {
          if (p.event) p.event.cancelled = true;
          w.pairs.delete(id);
        }
      for (const id of w.watched) {
        let p = w.pairs.get(id);
        if (!p) w.pairs.set(id, (p = { event: undefined, fired: false, heardOnce: false }));
        if (this.audible(id)) {
          if (p.event) p.event.cancelled = true;
          p.event = undefined;
          p.fired = false;
          p.heardOnce = true;
          continue;
        }
        if (!judging) {
          if (p.event) p.event.cancelled = true;
          p.event = undefined;
          continue;
        }
        if (p.fired || p.event) continue;
        const pair = p;
        const delay = p.heardOnce ? this.rng.range(15, 30) : firstBeatMs;
        p.event = this.world.schedule(
          delay,
          () => {
            pair.event = undefined;
            if (w.stopped || !w.watched.includes(id) || this.audible(id)) return;
            pair.fired = true;
            this.suspicions++;
            w.onSuspect?.(id, this.world.now, false, 'silent');
          },
          w.proc,
        );
      }
    }
  }

  /**
   * A false suspicion: a watcher suspects a host it hears. Resolves with
   * `watcher->watched`, or undefined when no watcher watches anyone audible.
   */
  falseSuspicion(): string | undefined {
    const pairs: [SimLiveness, string][] = [];
    for (const w of this.members)
      if (w.started && !w.stopped && w.proc.reachable)
        for (const id of w.watched) if (this.audible(id)) pairs.push([w, id]);
    if (!pairs.length) return undefined;
    const [w, id] = this.rng.pick(pairs);
    this.world.schedule(0, () => w.onSuspect?.(id, this.world.now, false, 'silent'), w.proc);
    return `${w.hostId}->${id}`;
  }
}
