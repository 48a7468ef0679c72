import { ROOT_CONTEXT, SpanKind, trace, type Context, type Span } from '@opentelemetry/api';
import { Attr, SpanName, type Tracing } from './telemetry.ts';

/** A traced commit still waiting for the standby's ack or the log's. */
type Waiting = { ctx: Context; at: number; standby: boolean; log: boolean };

/** Traced commits kept at most: beyond, the oldest waits are given up (never recorded). */
const maxWaiting = 4096;

/**
 * The primary's half of a request trace after its transaction: for each
 * sampled commit, the replication wait (publication to the standby's ack of
 * its seq) and the log write (append to the log's ack), recorded as children
 * of the transaction's span when the acks come. Only sampled commits enter
 * here; the primary checks {@link size} before anything else, so an
 * untraced session pays one comparison per ack.
 */
export class CommitTraces {
  private readonly waiting = new Map<number, Waiting>();

  constructor(
    private readonly tracing: Tracing,
    private readonly sid: string,
  ) {}

  get size(): number {
    return this.waiting.size;
  }

  /** A traced commit of `seq` went out at `at`; `standby`: a named standby must ack it. */
  committed(span: Span, seq: number, at: number, standby: boolean): void {
    if (this.waiting.size >= maxWaiting) {
      const oldest = this.waiting.keys().next().value;
      if (oldest !== undefined) this.waiting.delete(oldest);
    }
    this.waiting.set(seq, { ctx: trace.setSpan(ROOT_CONTEXT, span), at, standby, log: true });
  }

  /** The standby acknowledged every seq up to `seq` at `now`. */
  acked(seq: number, now: number): void {
    this.settle(seq, now, 'standby');
  }

  /** The log holds every seq up to `seq` since `now`. */
  logged(seq: number, now: number): void {
    this.settle(seq, now, 'log');
  }

  /** No standby named any more: nothing waits for its ack. */
  standbyGone(): void {
    for (const [seq, w] of this.waiting) {
      w.standby = false;
      if (!w.log) this.waiting.delete(seq);
    }
  }

  /** The copy stopped: what still waits is never recorded. */
  clear(): void {
    this.waiting.clear();
  }

  private settle(upTo: number, now: number, what: 'standby' | 'log'): void {
    // Insertion order is seq order: stop at the first seq above `upTo`.
    for (const [seq, w] of this.waiting) {
      if (seq > upTo) break;
      if (!w[what]) continue;
      w[what] = false;
      const name = what === 'standby' ? SpanName.replicationWait : SpanName.logWrite;
      this.tracing.record(
        name,
        w.ctx,
        w.at,
        now,
        { [Attr.session]: this.sid, [Attr.seq]: seq },
        SpanKind.INTERNAL,
      );
      if (!w.standby && !w.log) this.waiting.delete(seq);
    }
  }
}
