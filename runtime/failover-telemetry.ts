import {
  ROOT_CONTEXT,
  SpanKind,
  metrics,
  trace,
  type Attributes,
  type Counter,
  type Histogram,
  type Span,
  type SpanContext,
} from '@opentelemetry/api';
import type { Clock } from './clock.ts';
import type { FailoverCause, FailoverRecord } from './failover.ts';
import { Attr, SpanName, instrumentationScope, isSampled, type Tracing } from './telemetry.ts';

/** A failover whose re-protection never completes is recorded after this long anyway. */
export const failoverTraceBoundMs = 10_000;

/** A failover whose trace is still open: its root span, until re-protection. */
type Open = { span: Span; actor: string; oldEpoch: number; timer: unknown };

/**
 * One trace per failover (a promotion after a crash or hang, a drain's
 * hand-off, a restore), and one per false suspicion, as the new primary
 * (or the suspecting host) saw it.
 *
 * The root span `ftmesh.failover` opens when the failover record is made
 * (right after the winning compare-and-swap), started at the record's
 * detection time, so its trace id is known at once (`FailoverRecord.traceId`,
 * and the link of the requests served meanwhile). Its children are built
 * from the record's timeline with explicit start and end times when the
 * failover is over: re-protected and first reply sent, or
 * {@link failoverTraceBoundMs} after it began. No span travels through the
 * control plane: the parts stamp times on the record, as they always did.
 *
 * Without an SDK (or when a sampler drops it) nothing is kept: no map
 * entry, no timer. Metrics (failovers by cause, time to first reply) are
 * recorded either way: the API's meter is a no-op without an SDK.
 */
export class FailoverTelemetry {
  private readonly open = new Map<FailoverRecord, Open>();
  private readonly failovers: Counter;
  private readonly firstReply: Histogram;

  constructor(
    private readonly tracing: Tracing,
    private readonly clock: Clock,
    private readonly hostId: string,
  ) {
    const meter = metrics.getMeter(instrumentationScope);
    this.failovers = meter.createCounter('ftmesh.failovers', {
      description:
        'Sessions this host took over as the new primary, by cause (drains and restores included)',
      unit: '{failover}',
    });
    this.firstReply = meter.createHistogram('ftmesh.failover.first_reply', {
      description: "From a failover's detection to the new primary's first reply",
      unit: 'ms',
      advice: {
        explicitBucketBoundaries: [5, 10, 15, 20, 30, 40, 50, 75, 100, 150, 250, 500, 1000, 5000],
      },
    });
  }

  /**
   * A failover record was just made (this host is the new primary): counts
   * it and opens its trace. `oldEpoch` is the epoch it took over from.
   */
  begin(rec: FailoverRecord, actor: string, oldEpoch: number): void {
    this.failovers.add(1, { [Attr.cause]: rec.cause, [Attr.host]: this.hostId });
    this.tracing.safely(() => {
      const span = this.tracing.tracer.startSpan(
        SpanName.failover,
        {
          kind: SpanKind.INTERNAL,
          root: true,
          startTime: rec.detectedAt,
          attributes: {
            [Attr.session]: rec.sid,
            [Attr.actor]: actor,
            [Attr.cause]: rec.cause,
            [Attr.fromHost]: rec.from,
            [Attr.toHost]: rec.to,
            [Attr.oldEpoch]: oldEpoch,
            [Attr.newEpoch]: rec.epoch,
            [Attr.seq]: rec.seq,
          },
        },
        ROOT_CONTEXT,
      );
      if (!span.isRecording() || !isSampled(span.spanContext())) return;
      rec.traceId = span.spanContext().traceId;
      const timer = this.clock.setTimeout(() => this.finish(rec), failoverTraceBoundMs);
      this.open.set(rec, { span, actor, oldEpoch, timer });
    });
  }

  /** The new primary sent its first reply (the record has `firstReplyAt`). */
  firstReplied(rec: FailoverRecord): void {
    if (rec.firstReplyAt !== undefined)
      this.firstReply.record(rec.firstReplyAt - rec.detectedAt, {
        [Attr.cause]: rec.cause,
        [Attr.host]: this.hostId,
      });
    this.maybeFinish(rec);
  }

  /** A new standby is named (the record has `reprotectedAt`). */
  reprotected(rec: FailoverRecord): void {
    this.maybeFinish(rec);
  }

  /**
   * The root of `sid`'s failover while its trace is open here: requests
   * this primary serves meanwhile link to it.
   */
  link(sid: string): SpanContext | undefined {
    if (!this.open.size) return undefined;
    for (const [rec, o] of this.open) if (rec.sid === sid) return o.span.spanContext();
    return undefined;
  }

  /**
   * A suspicion that a probe answered: `host` was suspected (`cause`) at
   * `at`, probed at `probedAt`, and answered at `answeredAt`. No verdict,
   * no failover: one short trace, with its cause.
   */
  falseSuspicion(
    host: string,
    cause: FailoverCause | 'probe',
    at: number,
    probedAt: number,
    answeredAt: number,
  ): void {
    this.tracing.safely(() => {
      const attributes = { [Attr.suspect]: host, [Attr.cause]: cause, [Attr.host]: this.hostId };
      const root = this.tracing.tracer.startSpan(
        SpanName.falseSuspicion,
        { kind: SpanKind.INTERNAL, root: true, startTime: at, attributes },
        ROOT_CONTEXT,
      );
      if (!root.isRecording()) return;
      const ctx = trace.setSpan(ROOT_CONTEXT, root);
      this.tracing.record(SpanName.probe, ctx, probedAt, answeredAt, { [Attr.suspect]: host });
      root.end(Math.max(at, answeredAt));
    });
  }

  /** The host closes: every open trace is recorded as it stands. */
  close(): void {
    for (const rec of [...this.open.keys()]) this.finish(rec);
  }

  private maybeFinish(rec: FailoverRecord): void {
    if (this.open.has(rec) && rec.reprotectedAt !== undefined && rec.firstReplyAt !== undefined)
      this.finish(rec);
  }

  /** Builds the children from the record's timeline and ends the root. */
  private finish(rec: FailoverRecord): void {
    const o = this.open.get(rec);
    if (!o) return;
    this.open.delete(rec);
    this.clock.clearTimeout(o.timer);
    this.tracing.safely(() => {
      const ctx = trace.setSpan(ROOT_CONTEXT, o.span);
      const child = (name: string, start?: number, end?: number, attributes: Attributes = {}) =>
        start === undefined || end === undefined
          ? undefined
          : this.tracing.record(name, ctx, start, end, { [Attr.session]: rec.sid, ...attributes });
      const declared = rec.declaredAt ?? rec.promotedAt;
      child(SpanName.detect, rec.detectedAt, declared, {
        [Attr.cause]: rec.cause,
        [Attr.suspect]: rec.from,
      });
      child(SpanName.promote, declared, rec.promotedAt, {
        [Attr.oldEpoch]: o.oldEpoch,
        [Attr.newEpoch]: rec.epoch,
      });
      // A promotion hands the log over after its swap; a restore reads it and writes its marker before.
      const logStart =
        rec.logHandedOverAt !== undefined &&
        rec.promotedAt !== undefined &&
        rec.logHandedOverAt < rec.promotedAt
          ? declared
          : rec.promotedAt;
      child(SpanName.logHandover, logStart, rec.logHandedOverAt);
      child(SpanName.replay, rec.promotedAt, rec.replayedAt, { [Attr.replayed]: rec.replayed });
      // From serving to the first reply (often one of the replayed inputs': it ends inside the replay).
      child(SpanName.firstReply, rec.promotedAt, rec.firstReplyAt);
      const reprotect = child(SpanName.reprotect, rec.reprotectStartedAt, rec.reprotectedAt, {
        [Attr.standby]: rec.standby ?? '',
      });
      if (reprotect && rec.standbySyncedAt !== undefined)
        this.tracing.record(
          SpanName.standbySync,
          trace.setSpan(ROOT_CONTEXT, reprotect),
          rec.standbySyncStartedAt ?? rec.reprotectStartedAt!,
          rec.standbySyncedAt,
          { [Attr.session]: rec.sid, [Attr.standby]: rec.standby ?? '' },
        );
      const end = rec.reprotectedAt ?? this.clock.now();
      o.span.setAttributes({
        [Attr.replayed]: rec.replayed,
        [Attr.reprotected]: rec.reprotectedAt !== undefined,
        [Attr.standby]: rec.standby ?? '',
      });
      o.span.end(Math.max(end, rec.firstReplyAt ?? end));
    });
  }
}
