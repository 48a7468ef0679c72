import type { HostLoad } from './membership-record.ts';
import { rendezvousScore } from './failover.ts';

/** A candidate host with its reported load. */
export type Candidate = { id: string; load: HostLoad };

/** Standbys are chosen among this many partners of the primary first (bounded failure watching). */
export const partnersPerHost = 3;

const count = (load: HostLoad) => load.primaries + load.standbys;

/**
 * Chooses hosts for sessions from the loads the membership records report.
 * Picks not reflected in a report yet are counted for a while, so a burst of
 * placements spreads instead of piling on the host that looked emptiest.
 */
export class Placement {
  /** host id → times it was picked (clock ms), forgotten once a report shows them or after a second. */
  private readonly picked = new Map<string, number[]>();
  private readonly lastCount = new Map<string, number>();

  constructor(private readonly now: () => number) {}

  /** Room left on `c`, counting recent picks. */
  private room(c: Candidate): number {
    const was = this.lastCount.get(c.id);
    const n = count(c.load);
    const picks = this.picked.get(c.id) ?? [];
    // A report whose count grew shows that many of our picks.
    if (was !== undefined && n > was) picks.splice(0, n - was);
    this.lastCount.set(c.id, n);
    const t = this.now();
    while (picks.length && t - picks[0]! > 1_000) picks.shift();
    return c.load.capacity - n - picks.length;
  }

  /**
   * The candidate with the most room, never one of `exclude` nor a draining
   * one; ties broken by id so that choices spread the same way everywhere.
   */
  pick(candidates: readonly Candidate[], exclude: ReadonlySet<string>): string | undefined {
    let best: string | undefined;
    let bestRoom = 0;
    for (const c of candidates) {
      if (exclude.has(c.id) || c.load.draining) continue;
      const room = this.room(c);
      if (room <= 0) continue;
      if (best === undefined || room > bestRoom || (room === bestRoom && c.id < best)) {
        best = c.id;
        bestRoom = room;
      }
    }
    if (best !== undefined) this.remember(best);
    return best;
  }

  /**
   * A standby for a primary on `primary`: among its {@link partnersPerHost}
   * partners (ranked by rendezvous hashing, the same on every host) the one
   * with the most room, else any host with room. Partners bound how many
   * hosts a host must watch: heartbeats grow with the standby relationships,
   * not with the square of the hosts.
   */
  pickStandby(
    primary: string,
    candidates: readonly Candidate[],
    exclude: ReadonlySet<string>,
  ): string | undefined {
    const ranked = candidates
      .filter((c) => c.id !== primary && !exclude.has(c.id))
      .map((c) => ({ c, score: rendezvousScore(primary, c.id) }))
      .sort((a, b) => b.score - a.score || (a.c.id < b.c.id ? -1 : 1))
      .map((x) => x.c);
    return (
      this.pick(ranked.slice(0, partnersPerHost), exclude) ??
      this.pick(ranked.slice(partnersPerHost), exclude)
    );
  }

  private remember(id: string): void {
    let picks = this.picked.get(id);
    if (!picks) this.picked.set(id, (picks = []));
    picks.push(this.now());
  }
}
