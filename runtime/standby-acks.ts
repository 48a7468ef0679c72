/**
 * What a primary's named standby acknowledged, the commits it has not, and
 * when to send those again: a lost last frame has no later frame to reveal
 * the gap, so after a silence the primary retransmits, backing off while
 * the standby stays silent.
 */
export class StandbyAcks {
  /** Highest seq the named standby acknowledged in this epoch. */
  acked: number;
  /** Commits sent and not acknowledged, oldest first. */
  private readonly unacked: { seq: number; frame: Uint8Array; at: number }[] = [];
  private lastSentAt = 0;
  private backoff = 1;

  constructor(
    from: number,
    private readonly retransmitAfterMs: number,
  ) {
    this.acked = from;
  }

  /** A commit went out at `now`; `tracked` when a standby is named (it must acknowledge it). */
  sent(seq: number, frame: Uint8Array, now: number, tracked: boolean): void {
    if (tracked) {
      this.unacked.push({ seq, frame, at: now });
      // Beyond this the standby fills the gap from the log instead.
      if (this.unacked.length > 4096) this.unacked.shift();
    }
    this.lastSentAt = now;
    this.backoff = 1;
  }

  /** The standby acknowledged `seq` (never above `committed`); true when that is news. */
  ack(seq: number, committed: number): boolean {
    if (seq <= this.acked || seq > committed) return false;
    this.acked = seq;
    let n = 0;
    while (n < this.unacked.length && this.unacked[n]!.seq <= seq) n++;
    if (n) this.unacked.splice(0, n);
    return true;
  }

  get pending(): boolean {
    return this.unacked.length > 0;
  }

  /** When the oldest unacknowledged commit went out; undefined when none waits (the replication lag in time). */
  get oldestSentAt(): number | undefined {
    return this.unacked[0]?.at;
  }

  /** The frames to send again at `now` (none before the silence is long enough), oldest first. */
  due(now: number): readonly Uint8Array[] {
    if (!this.unacked.length) return [];
    if (now - this.lastSentAt < this.retransmitAfterMs * this.backoff) return [];
    this.lastSentAt = now;
    this.backoff = Math.min(this.backoff * 2, 64);
    return this.unacked.slice(0, 256).map((u) => u.frame);
  }

  /** No standby any more: nothing waits for an ack. */
  clear(): void {
    this.unacked.length = 0;
  }
}
