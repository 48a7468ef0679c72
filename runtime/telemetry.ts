/**
 * OpenTelemetry in the runtime, through `@opentelemetry/api` only: until a
 * process sets up an SDK (the CLI does, from the standard `OTEL_*`
 * variables) every tracer and meter here is the API's no-op, and nothing
 * is recorded. Telemetry never throws into the runtime: whatever an SDK
 * throws is reported once through the host's `onError` and tracing goes on.
 *
 * What is traced (PROTOCOL.md, "Tracing"): a request whose input frame
 * carries a **sampled** W3C `traceparent` (a gateway's request span) runs as
 * a `ftmesh.transaction` span on the primary, its commit carries the
 * transaction's context to the standby (`ftmesh.standby.apply`), and the
 * primary records the replication wait and the log write as children. An
 * input without one, or with one not sampled, costs a flag test and nothing
 * else. Failovers are traced whole by failover-telemetry.ts.
 */
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  trace,
  type Attributes,
  type Context,
  type Link,
  type Span,
  type SpanContext,
  type Tracer,
} from '@opentelemetry/api';
import { TelemetryError, type FtmError } from './errors.ts';
import { preciseNow } from './failover.ts';

/** The instrumentation scope of every tracer and meter of ftmesh. */
export const instrumentationScope = 'ftmesh';

/** Every span name ftmesh records, in one place. */
export const SpanName = {
  /** A gateway forwarding one client request, until its reply or error goes out. */
  gatewayRequest: 'ftmesh.gateway.request',
  /** A session client holding a reply until its consistency mode releases it. */
  release: 'ftmesh.release',
  /** The primary running one request's transaction and publishing its commit. */
  transaction: 'ftmesh.transaction',
  /** From a traced commit's publication to the standby's ack of its seq. */
  replicationWait: 'ftmesh.replication.wait',
  /** From a traced commit's append to the log's ack of its seq. */
  logWrite: 'ftmesh.log.write',
  /** The standby applying a traced commit. */
  standbyApply: 'ftmesh.standby.apply',
  /** One failover (or hand-off, or restore), from detection to re-protection. */
  failover: 'ftmesh.failover',
  detect: 'ftmesh.failover.detect',
  promote: 'ftmesh.failover.promote',
  logHandover: 'ftmesh.failover.log-handover',
  replay: 'ftmesh.failover.replay',
  firstReply: 'ftmesh.failover.first-reply',
  reprotect: 'ftmesh.failover.reprotect',
  standbySync: 'ftmesh.failover.standby-sync',
  /** A suspicion of a live host that its probe answered: no verdict, no failover. */
  falseSuspicion: 'ftmesh.false-suspicion',
  probe: 'ftmesh.false-suspicion.probe',
} as const;

/**
 * Root spans of the control plane: rare, and each one a thing to see. A
 * sampler should keep them whatever ratio it applies to requests (the
 * CLI's does, cli/telemetry.ts).
 */
export const controlPlaneRoots: ReadonlySet<string> = new Set([
  SpanName.failover,
  SpanName.falseSuspicion,
]);

/** Attribute names, in one place. */
export const Attr = {
  session: 'ftmesh.session',
  actor: 'ftmesh.actor',
  host: 'ftmesh.host',
  gateway: 'ftmesh.gateway',
  type: 'ftmesh.message.type',
  requestId: 'ftmesh.request.id',
  epoch: 'ftmesh.epoch',
  term: 'ftmesh.term',
  seq: 'ftmesh.seq',
  consistency: 'ftmesh.consistency',
  resentInEpoch: 'ftmesh.resent_in_epoch',
  cause: 'ftmesh.failover.cause',
  fromHost: 'ftmesh.failover.from',
  toHost: 'ftmesh.failover.to',
  oldEpoch: 'ftmesh.failover.old_epoch',
  newEpoch: 'ftmesh.failover.new_epoch',
  replayed: 'ftmesh.failover.replayed',
  standby: 'ftmesh.failover.standby',
  reprotected: 'ftmesh.failover.reprotected',
  suspect: 'ftmesh.suspect',
  role: 'ftmesh.role',
  code: 'ftmesh.close_code',
} as const;

// ---- W3C trace context ---------------------------------------------------------------------

/** `version-traceid-parentid-flags`; a version other than 00 may carry more after the flags. */
const traceparentPattern = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const zeros = /^0+$/;

/**
 * Parses a W3C `traceparent` (https://www.w3.org/TR/trace-context/); undefined
 * when it is not a valid one (then it is ignored, as the spec says).
 */
export function parseTraceparent(value: unknown): SpanContext | undefined {
  if (typeof value !== 'string' || value.length > 256) return undefined;
  const m = traceparentPattern.exec(value);
  if (!m) return undefined;
  const [, version, traceId, spanId, flags, rest] = m as unknown as string[];
  if (version === 'ff' || (version === '00' && rest !== undefined)) return undefined;
  if (zeros.test(traceId!) || zeros.test(spanId!)) return undefined;
  return { traceId: traceId!, spanId: spanId!, traceFlags: parseInt(flags!, 16), isRemote: true };
}

/** The `traceparent` of a span context (version 00). */
export function formatTraceparent(sc: SpanContext): string {
  const flags = (sc.traceFlags & 0xff).toString(16).padStart(2, '0');
  return `00-${sc.traceId}-${sc.spanId}-${flags}`;
}

/** Whether a span context is sampled (its spans are exported). */
export function isSampled(sc: SpanContext): boolean {
  return (sc.traceFlags & TraceFlags.SAMPLED) !== 0;
}

/** The context whose parent is `traceparent` (undefined when it is not valid). */
export function contextOf(traceparent: string): Context | undefined {
  const sc = parseTraceparent(traceparent);
  return sc ? trace.setSpanContext(ROOT_CONTEXT, sc) : undefined;
}

/** The `traceparent` of a recording span, '' for one that is not sampled (no-op included). */
export function traceparentOf(span: Span): string {
  const sc = span.spanContext();
  return isSampled(sc) && span.isRecording() ? formatTraceparent(sc) : '';
}

// ---- the runtime's tracer ------------------------------------------------------------------

/**
 * A process part's tracer (a host, a session client, a gateway), wrapped so
 * that an SDK that throws never reaches the caller: the first failure is
 * reported, later ones are counted.
 *
 * Every span it starts or ends is given its time from {@link now} (the
 * runtime's clock: `performance.timeOrigin + performance.now()`), never left
 * to the SDK, whose default start is `Date.now()`: the two drift apart by
 * milliseconds, and a trace mixing spans timed from the failover records
 * with spans timed by the SDK would put children outside their parents.
 */
export class Tracing {
  readonly tracer: Tracer;
  /** Telemetry calls that threw (an SDK or exporter fault); reported once, then counted. */
  failures = 0;

  constructor(
    private readonly onError: (err: FtmError) => void,
    /** Milliseconds since the epoch: the clock of every span time. */
    readonly now: () => number = preciseNow,
  ) {
    this.tracer = trace.getTracer(instrumentationScope);
  }

  /** Runs `fn`; a throw is reported (once) and counted, never passed on. */
  safely<T>(fn: () => T): T | undefined {
    try {
      return fn();
    } catch (err) {
      if (this.failures++ === 0)
        this.onError(
          new TelemetryError(`telemetry failed: ${String((err as Error)?.message ?? err)}`, {
            cause: err,
          }),
        );
      return undefined;
    }
  }

  /**
   * A span child of the remote `traceparent`, or undefined when that is not
   * a sampled context: the caller's check for "traced at all".
   */
  childOf(
    traceparent: string,
    name: string,
    kind: SpanKind,
    attributes: Attributes,
    links?: Link[],
  ): Span | undefined {
    return this.safely(() => {
      const parent = parseTraceparent(traceparent);
      if (!parent || !isSampled(parent)) return undefined;
      const span = this.tracer.startSpan(
        name,
        { kind, attributes, startTime: this.now(), ...(links ? { links } : {}) },
        trace.setSpanContext(ROOT_CONTEXT, parent),
      );
      return span.isRecording() ? span : undefined;
    });
  }

  /** A span already over, `start` to `end` (ms on the epoch clock), under `parent`. */
  record(
    name: string,
    parent: Context,
    start: number,
    end: number,
    attributes: Attributes = {},
    kind: SpanKind = SpanKind.INTERNAL,
  ): Span | undefined {
    return this.safely(() => {
      const span = this.tracer.startSpan(name, { kind, startTime: start, attributes }, parent);
      span.end(Math.max(start, end));
      return span;
    });
  }
}

export { SpanKind, SpanStatusCode };

/** What a session copy (primary or standby) needs of its host's telemetry. */
export interface SessionTelemetry {
  readonly tracing: Tracing;
  /** Plain counters the host's metrics read (host-metrics.ts): no allocation on the hot path. */
  readonly counters: { commits: number; patchBytes: number };
  /**
   * The root of the failover of `sid` this host is still completing (until
   * re-protection), for the span links of the requests it serves meanwhile.
   */
  failoverLink(sid: string): SpanContext | undefined;
}

/** Session telemetry that records nothing (tests of a lone session, tools). */
export function quietTelemetry(onError: (err: FtmError) => void): SessionTelemetry {
  return {
    tracing: new Tracing(onError),
    counters: { commits: 0, patchBytes: 0 },
    failoverLink: () => undefined,
  };
}
