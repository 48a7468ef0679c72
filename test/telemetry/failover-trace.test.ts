/**
 * One failover, one trace: after a real SIGKILL of the primary's process,
 * the new primary (a host in this process, where an in-memory exporter
 * collects its spans) records the failover as a `ftmesh.failover` root with
 * a child per step, built from its failover record, and counts it in its
 * metrics. The requests it served meanwhile link to that trace.
 */
import { strict as assert } from 'node:assert';
import { ROOT_CONTEXT, metrics, trace, type Span } from '@opentelemetry/api';
import {
  AggregationTemporality,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
  type HistogramMetricData,
} from '@opentelemetry/sdk-metrics';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
  type ReadableSpan,
} from '@opentelemetry/sdk-trace-base';
import { exampleActors } from '../../actors/index.ts';
import {
  RequestTimeoutError,
  SpanName,
  createHost,
  formatTraceparent,
  type FailoverRecord,
  type Host,
} from '../../runtime/index.ts';
import { collectErrors } from '../helpers/errors.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { startHostProcesses, stopAll, useProcessesPerTest } from '../helpers/processes.ts';
import { until } from '../helpers/until.ts';
import { failoverChildSpans } from '../helpers/failover-spans.ts';

const ms = (t: [number, number]) => t[0] * 1000 + t[1] / 1e6;
/** Span times go through nanosecond integers: allow for the rounding. */
const EPS = 0.01;

describe('telemetry: a failover is one trace (in-memory exporter, new primary in this process)', function () {
  const nats = useNatsServer();
  const procs = useProcessesPerTest();
  const reported = collectErrors();
  const spans = new InMemorySpanExporter();
  const metricExporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE);
  let tracerProvider: BasicTracerProvider;
  let meterProvider: MeterProvider;
  let standby: Host | undefined;

  before(() => {
    // Registered before the host starts: its instruments are made from the global meter then.
    tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });
    meterProvider = new MeterProvider({
      readers: [
        new PeriodicExportingMetricReader({
          exporter: metricExporter,
          exportIntervalMillis: 60_000,
        }),
      ],
    });
    assert.ok(trace.setGlobalTracerProvider(tracerProvider), 'no other tracer provider registered');
    assert.ok(metrics.setGlobalMeterProvider(meterProvider), 'no other meter provider registered');
  });
  afterEach(async () => {
    await standby?.close();
    standby = undefined;
    reported.assertNone();
  });
  after(async () => {
    await stopAll();
    trace.disable();
    metrics.disable();
    await tracerProvider?.shutdown();
    await meterProvider?.shutdown();
  });

  it('SIGKILL of the primary: a ftmesh.failover root with detect, promote, log hand-over, replay, first reply and re-protection, in order, with the record as attributes', async () => {
    const host = (standby = await createHost({
      nats: nats.url,
      actors: exampleActors,
      hostId: 'tf2',
      onError: reported.onError,
    }));
    await startHostProcesses(procs, nats.url, ['tf1', 'tf3'], host);
    const sid = 'tf-session';
    await host.placeSession('counter', sid, { primary: 'tf1', standby: 'tf2' });

    // Requests in traces of their own (a sampled root here): those the new primary runs link to the failover.
    const tracer = trace.getTracer('failover-trace-test');
    let replies = 0;
    let stop = false;
    const worker = async (w: number) => {
      for (let i = 0; !stop; i++) {
        const root: Span = tracer.startSpan('test.request', {}, ROOT_CONTEXT);
        const traceparent = formatTraceparent(root.spanContext());
        for (let attempt = 0; ; attempt++) {
          try {
            await host.request(sid, 'add', 1, {
              requestId: `w${w}-${i}`,
              timeoutMs: 2_000,
              traceparent,
            });
            break;
          } catch (err) {
            if (!(err instanceof RequestTimeoutError) || attempt >= 10) throw err;
          }
        }
        root.end();
        replies++;
      }
    };
    const streaming = Promise.all([0, 1, 2, 3].map(worker));
    let record: FailoverRecord;
    try {
      await until(() => replies >= 100, { timeoutMs: 20_000, message: '100 replies from tf1' });
      procs.get('tf1')!.signal('SIGKILL');
      record = (await until(
        () => host.failovers().find((f) => f.sid === sid && f.reprotectedAt !== undefined),
        { timeoutMs: 20_000, message: 'the failover re-protected' },
      ))!;
      const after = replies;
      await until(() => replies >= after + 50, { timeoutMs: 10_000, message: 'replies from tf2' });
    } finally {
      stop = true;
      await streaming;
    }

    const root = (await until(
      () => spans.getFinishedSpans().find((s) => s.name === SpanName.failover),
      { message: 'the failover root span ended' },
    ))!;
    const all = spans.getFinishedSpans();
    const roots = all.filter((s) => s.name === SpanName.failover);
    assert.equal(roots.length, 1, 'one failover, one trace');
    assert.equal(root.parentSpanContext, undefined, 'a root');
    const traceId = root.spanContext().traceId;
    assert.equal(record.traceId, traceId, 'the record names its trace');
    assert.equal(record.cause === 'advisory' || record.cause === 'heartbeat', true, record.cause);
    assert.deepEqual(
      {
        session: root.attributes['ftmesh.session'],
        actor: root.attributes['ftmesh.actor'],
        from: root.attributes['ftmesh.failover.from'],
        to: root.attributes['ftmesh.failover.to'],
        oldEpoch: root.attributes['ftmesh.failover.old_epoch'],
        newEpoch: root.attributes['ftmesh.failover.new_epoch'],
        cause: root.attributes['ftmesh.failover.cause'],
        replayed: root.attributes['ftmesh.failover.replayed'],
        standby: root.attributes['ftmesh.failover.standby'],
        reprotected: root.attributes['ftmesh.failover.reprotected'],
      },
      {
        session: sid,
        actor: 'counter',
        from: 'tf1',
        to: 'tf2',
        oldEpoch: 1,
        newEpoch: 2,
        cause: record.cause,
        replayed: record.replayed,
        standby: 'tf3',
        reprotected: true,
      },
    );
    assert.ok(Math.abs(ms(root.startTime) - record.detectedAt) < EPS, 'starts at the detection');
    assert.ok(
      Math.abs(ms(root.endTime) - Math.max(record.reprotectedAt!, record.firstReplyAt!)) < EPS,
    );

    // The children, by name, each once, each a child of the root (the standby's sync of re-protection).
    const inTrace = all.filter((s) => s.spanContext().traceId === traceId && s !== root);
    const byName = new Map<string, ReadableSpan>();
    for (const s of inTrace) {
      assert.ok(!byName.has(s.name), `${s.name} once`);
      byName.set(s.name, s);
    }
    const names = failoverChildSpans;
    assert.deepEqual([...byName.keys()].sort(), names);
    const child = (name: string) => byName.get(name)!;
    for (const name of names) {
      const s = child(name);
      const parent = name === SpanName.standbySync ? child(SpanName.reprotect) : root;
      assert.equal(s.parentSpanContext?.spanId, parent.spanContext().spanId, `${name}'s parent`);
      assert.ok(ms(s.startTime) >= ms(root.startTime) - EPS, `${name} starts within the failover`);
      assert.ok(ms(s.endTime) <= ms(root.endTime) + EPS, `${name} ends within the failover`);
      assert.ok(ms(s.endTime) >= ms(s.startTime), `${name} does not end before it starts`);
    }
    // In order: detected, declared dead, promoted, then the hand-over, the replay, the first reply; re-protected last.
    const start = (n: string) => ms(child(n).startTime);
    const end = (n: string) => ms(child(n).endTime);
    assert.ok(
      Math.abs(end(SpanName.detect) - start(SpanName.promote)) < EPS,
      'the CAS follows the verdict',
    );
    assert.ok(
      Math.abs(end(SpanName.promote) - record.promotedAt!) < EPS,
      'promoted when the record says',
    );
    assert.ok(start(SpanName.logHandover) >= end(SpanName.promote) - EPS);
    assert.ok(start(SpanName.replay) >= end(SpanName.promote) - EPS);
    assert.ok(start(SpanName.firstReply) >= end(SpanName.promote) - EPS);
    assert.ok(Math.abs(end(SpanName.firstReply) - record.firstReplyAt!) < EPS);
    assert.ok(start(SpanName.reprotect) >= end(SpanName.promote) - EPS);
    assert.ok(end(SpanName.standbySync) <= end(SpanName.reprotect) + EPS);
    assert.equal(child(SpanName.detect).attributes['ftmesh.failover.cause'], record.cause);
    assert.equal(child(SpanName.replay).attributes['ftmesh.failover.replayed'], record.replayed);
    assert.equal(child(SpanName.reprotect).attributes['ftmesh.failover.standby'], 'tf3');

    // Requests the new primary ran before re-protection link to the failover's trace.
    const linked = all.filter(
      (s) => s.name === SpanName.transaction && s.links.some((l) => l.context.traceId === traceId),
    );
    assert.ok(linked.length > 0, 'a request served during the failover links to it');
    for (const s of linked)
      assert.notEqual(s.spanContext().traceId, traceId, "in the request's own trace");

    // Metrics: one failover by its cause, one time to first reply.
    await meterProvider.forceFlush();
    const latest = metricExporter.getMetrics().at(-1)!;
    const metric = (name: string) =>
      latest.scopeMetrics.flatMap((s) => s.metrics).find((m) => m.descriptor.name === name);
    const failovers = metric('ftmesh.failovers');
    assert.deepEqual(
      failovers?.dataPoints.map((p) => [p.attributes['ftmesh.failover.cause'], p.value]),
      [[record.cause, 1]],
    );
    const firstReply = metric('ftmesh.failover.first_reply') as HistogramMetricData | undefined;
    assert.equal(firstReply?.dataPoints[0]?.value.count, 1);
    assert.ok(
      Math.abs(firstReply.dataPoints[0].value.sum! - (record.firstReplyAt! - record.detectedAt)) <
        0.01,
    );
    const sessions = metric('ftmesh.sessions');
    assert.deepEqual(
      sessions?.dataPoints
        .filter((p) => p.attributes['ftmesh.host'] === 'tf2')
        .map((p) => [p.attributes['ftmesh.role'], p.value])
        .sort(),
      [
        ['primary', 1],
        ['standby', 0],
      ],
    );
    const transactions = metric('ftmesh.transactions')?.dataPoints.find(
      (p) => p.attributes['ftmesh.host'] === 'tf2',
    );
    assert.ok((transactions?.value as number) >= 50, 'the new primary counted its transactions');
  });
});
