import type { Clock } from './clock.ts';
import { FtmError } from './errors.ts';
import type { SessionCopies } from './session-copies.ts';

/**
 * Flushes the primaries' pending log frames and retransmits what their
 * standbys have not acknowledged, on one timer per host, armed only while
 * some primary has work: an idle host does not wake.
 */
export class LogFlusher {
  private timer: unknown;
  private stopped = false;
  private lastFlush = 0;
  /** The timer's period: retransmissions need it short even when log flushes are rare. */
  private readonly tickMs: number;

  constructor(
    private readonly copies: SessionCopies,
    private readonly clock: Clock,
    private readonly intervalMs: number,
    private readonly onError: (err: FtmError) => void,
  ) {
    this.tickMs = Math.min(intervalMs, 10);
    this.lastFlush = clock.now();
  }

  /** A primary committed: make sure the timer runs. */
  wake(): void {
    if (this.timer === undefined && !this.stopped)
      this.timer = this.clock.setTimeout(() => this.flushNow(), this.tickMs);
  }

  private flushNow(): void {
    this.timer = undefined;
    const now = this.clock.now();
    const flush = now - this.lastFlush >= this.intervalMs;
    if (flush) this.lastFlush = now;
    let busy = false;
    for (const copy of this.copies.values()) {
      const p = copy.primary;
      if (!p || p.isStopped) continue;
      p.retransmit(now);
      if (p.log.hasPending && !flush) busy = true;
      else if (p.log.hasPending)
        p.log
          .flush()
          .catch((err: unknown) =>
            this.onError(new FtmError(`log flush of ${p.sid}`, { cause: err })),
          );
      if (p.hasUnacked) busy = true;
    }
    if (busy) this.wake();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
    this.timer = undefined;
  }
}
