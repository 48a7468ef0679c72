import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  metrics,
  trace,
  type BatchObservableResult,
  type Span,
} from '@opentelemetry/api';
import {
  Attr,
  SpanName,
  Tracing,
  instrumentationScope,
  parseTraceparent,
  traceparentOf,
  type FtmError,
} from '../runtime/index.ts';
import type { GatewayStats } from './gateway.ts';

/**
 * A gateway's tracing: one `ftmesh.gateway.request` span per request it
 * forwards (SERVER), a child of the client's `traceparent` when the request
 * frame carried a valid one, else a root the SDK's sampler decides on. Only a
 * sampled span's context goes on to the session (the input frame), so the
 * runtime pays nothing for requests that are not traced.
 */
export class RequestTracing {
  private readonly tracing: Tracing;

  constructor(onError: (err: FtmError) => void) {
    this.tracing = new Tracing(onError);
  }

  /** Starts the span of a request (a no-op span when tracing is off). */
  start(sid: string, name: string, clientId: string, id: string, traceparent?: string): Span {
    return (
      this.tracing.safely(() => {
        const parent = traceparent === undefined ? undefined : parseTraceparent(traceparent);
        const ctx = parent ? trace.setSpanContext(ROOT_CONTEXT, parent) : ROOT_CONTEXT;
        const span = this.tracing.tracer.startSpan(
          SpanName.gatewayRequest,
          { kind: SpanKind.SERVER, startTime: this.tracing.now() },
          ctx,
        );
        if (span.isRecording())
          span.setAttributes({
            [Attr.session]: sid,
            [Attr.type]: name,
            [Attr.requestId]: `${clientId}.${id}`,
            'ftmesh.client': clientId,
          });
        return span;
      }) ?? trace.wrapSpanContext({ traceId: '', spanId: '', traceFlags: 0 })
    );
  }

  /** The context to send on with the request: its `traceparent`, or undefined when not sampled. */
  context(span: Span): string | undefined {
    return this.tracing.safely(() => traceparentOf(span)) || undefined;
  }

  /** The request was answered: with a reply, or with an error frame of `code`. */
  end(span: Span, code?: string): void {
    this.tracing.safely(() => {
      if (!span.isRecording()) return;
      if (code !== undefined)
        span
          .setStatus({ code: SpanStatusCode.ERROR, message: code })
          .setAttribute('ftmesh.error.code', code);
      span.end(this.tracing.now());
    });
  }
}

/**
 * A gateway's metrics, read from its counters when the SDK collects
 * (no-op without an SDK set up before the gateway starts):
 * `ftmesh.gateway.connections` (open now), `ftmesh.requests.in_flight`,
 * `ftmesh.gateway.requests` (forwarded), `ftmesh.gateway.replies`,
 * `ftmesh.gateway.closes` (by `ftmesh.close_code`). Returns the function
 * that stops the observations.
 */
export function observeGateway(gatewayId: string, stats: () => GatewayStats): () => void {
  const meter = metrics.getMeter(instrumentationScope);
  const connections = meter.createObservableGauge('ftmesh.gateway.connections', {
    description: 'Client connections open at this gateway',
    unit: '{connection}',
  });
  const inFlight = meter.createObservableGauge('ftmesh.requests.in_flight', {
    description: 'Requests forwarded by this gateway and not answered yet',
    unit: '{request}',
  });
  const requests = meter.createObservableCounter('ftmesh.gateway.requests', {
    description: 'Requests forwarded to sessions',
    unit: '{request}',
  });
  const replies = meter.createObservableCounter('ftmesh.gateway.replies', {
    description: 'Replies released to clients',
    unit: '{reply}',
  });
  const closes = meter.createObservableCounter('ftmesh.gateway.closes', {
    description: 'Client connections closed, by WebSocket close code',
    unit: '{connection}',
  });
  const gw = { [Attr.gateway]: gatewayId };
  const observe = (r: BatchObservableResult) => {
    const s = stats();
    r.observe(connections, s.connections, gw);
    r.observe(inFlight, s.inFlight, gw);
    r.observe(requests, s.requests, gw);
    r.observe(replies, s.replies, gw);
    for (const [code, n] of Object.entries(s.closes))
      r.observe(closes, n, { ...gw, [Attr.code]: Number(code) });
  };
  const observables = [connections, inFlight, requests, replies, closes];
  meter.addBatchObservableCallback(observe, observables);
  return () => meter.removeBatchObservableCallback(observe, observables);
}
