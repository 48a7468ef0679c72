/** Why a session changed primary. */
export type FailoverCause = 'advisory' | 'heartbeat' | 'leave' | 'probe' | 'drain' | 'restore';

/**
 * One failover, as the new primary saw it. Times are milliseconds on the
 * host's clock (`performance.timeOrigin + performance.now()` by default, so
 * sub-millisecond and comparable across processes of one machine).
 */
export interface FailoverRecord {
  sid: string;
  cause: FailoverCause;
  /** The host that was primary, and the one that is now. */
  from: string;
  to: string;
  /** The new epoch. */
  epoch: number;
  /** The seq the new primary started from. */
  seq: number;
  /** The old primary was found gone (or, for a drain, asked to hand over). */
  detectedAt: number;
  /**
   * This host knew the verdict (the membership record declared the old
   * primary dead); for a drain or a restore, the same as `detectedAt`.
   */
  declaredAt?: number;
  /** The ownership record names the new primary (the compare-and-swap won). */
  promotedAt?: number;
  /**
   * The log is the new epoch's: a promotion's first batch (the epoch marker
   * and the frames the old primary had not logged) is stored; a restore's
   * marker is written (before its `promotedAt`: it read the log first).
   */
  logHandedOverAt?: number;
  /** The inputs no commit had covered were run again. */
  replayedAt?: number;
  /** How many inputs were run again. */
  replayed: number;
  /** The new primary sent its first reply. */
  firstReplyAt?: number;
  /** Re-protection began: the new primary looked for a new standby. */
  reprotectStartedAt?: number;
  /** The new standby's attach began (after the new epoch's first log batch, 100 ms at most). */
  standbySyncStartedAt?: number;
  /** The new standby holds the state (attached and synced), before the record names it. */
  standbySyncedAt?: number;
  /** A new standby holds the state and the ownership record names it. */
  reprotectedAt?: number;
  /** The new standby; empty when no live host had room. */
  standby?: string;
  /**
   * The id of this failover's trace (its `ftmesh.failover` root span), set
   * when the record is made; empty when tracing is off or not sampled.
   */
  traceId: string;
}

/**
 * Rendezvous hashing: every host ranks the candidates for a key the same
 * way, so hosts agree on who restores a session without talking.
 */
export function rendezvous(key: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestScore = -1;
  for (const c of candidates) {
    const score = rendezvousScore(key, c);
    if (score > bestScore || (score === bestScore && best !== undefined && c < best)) {
      best = c;
      bestScore = score;
    }
  }
  return best;
}

/** A candidate's rendezvous score for a key: higher ranks first. */
export function rendezvousScore(key: string, candidate: string): number {
  let h = 2166136261;
  const s = `${key}/${candidate}`;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** Wall-clock milliseconds with sub-millisecond resolution, for failover timelines. */
export const preciseNow = (): number => performance.timeOrigin + performance.now();
