/**
 * Drains and false suspicions are traced like failovers (in-process hosts,
 * in-memory exporter): a drain's hand-off is a `ftmesh.failover` trace with
 * cause `drain`, and a suspicion that a probe answered (here: a forged
 * disconnect advisory naming a live host) is a `ftmesh.false-suspicion`
 * trace with its cause and its probe.
 */
import { strict as assert } from 'node:assert';
import { trace } from '@opentelemetry/api';
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  SimpleSpanProcessor,
} from '@opentelemetry/sdk-trace-base';
import { SpanName, connectNats, subjects } from '../../runtime/index.ts';
import { collectErrors } from '../helpers/errors.ts';
import { useHosts } from '../helpers/hosts.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { until } from '../helpers/until.ts';
import { failoverChildSpans } from '../helpers/failover-spans.ts';

describe('telemetry: drains and false suspicions are traced too (in-memory exporter)', function () {
  const nats = useNatsServer();
  const reported = collectErrors();
  afterEach(() =>
    reported.assertNone([
      {
        pattern: /standby cp-a refused .*draining/,
        why: "the new primary's re-protection may ask the draining host before its load report (at most 100 ms) says it drains: it refuses, the next host takes the copy",
      },
    ]),
  );
  const host = useHosts(() => nats.url, reported);
  const spans = new InMemorySpanExporter();
  let provider: BasicTracerProvider;

  before(() => {
    provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(spans)] });
    assert.ok(trace.setGlobalTracerProvider(provider), 'no other tracer provider registered');
  });
  afterEach(() => spans.reset());
  after(async () => {
    trace.disable();
    await provider?.shutdown();
  });

  it("a drain's hand-off is one ftmesh.failover trace with cause drain, re-protected on a third host", async () => {
    const a = await host('cp-a');
    const b = await host('cp-b');
    await host('cp-c');
    await a.openSession('counter', 'cp-drain', { standby: 'cp-b' });
    assert.equal(await a.request('cp-drain', 'add', 1), 1);
    const report = await a.drain(10_000);
    assert.equal(report.primaries, 1, 'the primary moved');
    // A reply from the new primary: the trace is recorded once re-protected and answered.
    assert.equal(await b.request('cp-drain', 'add', 1), 2);
    const record = (await until(
      () =>
        b
          .failovers()
          .find(
            (f) =>
              f.sid === 'cp-drain' && f.reprotectedAt !== undefined && f.firstReplyAt !== undefined,
          ),
      { message: "cp-b's hand-off record, re-protected and answered" },
    ))!;
    assert.equal(record.cause, 'drain');
    const root = (await until(
      () => spans.getFinishedSpans().find((s) => s.name === SpanName.failover),
      { message: 'the hand-off trace recorded' },
    ))!;
    assert.equal(root.spanContext().traceId, record.traceId);
    assert.equal(root.attributes['ftmesh.failover.cause'], 'drain');
    assert.equal(root.attributes['ftmesh.failover.from'], 'cp-a');
    assert.equal(root.attributes['ftmesh.failover.to'], 'cp-b');
    assert.equal(root.attributes['ftmesh.failover.standby'], 'cp-c');
    const children = spans
      .getFinishedSpans()
      .filter((s) => s.spanContext().traceId === record.traceId && s !== root)
      .map((s) => s.name)
      .sort();
    assert.deepEqual(children, failoverChildSpans);
  });

  it('a forged disconnect advisory about a live host is a ftmesh.false-suspicion trace, no failover', async () => {
    const a = await host('cp-x');
    await host('cp-y');
    await a.openSession('counter', 'cp-live', { standby: 'cp-y' });
    const before = a.status().falseSuspicions;
    const nc = await connectNats(nats.url);
    try {
      nc.publish(
        subjects.disconnectAdvisory,
        new TextEncoder().encode(JSON.stringify({ client: { name: 'ftm-host-cp-y' } })),
      );
      await nc.flush();
    } finally {
      await nc.close();
    }
    const root = (await until(
      () =>
        spans
          .getFinishedSpans()
          .find(
            (s) => s.name === SpanName.falseSuspicion && s.attributes['ftmesh.suspect'] === 'cp-y',
          ),
      { message: 'the false suspicion traced' },
    ))!;
    assert.equal(root.attributes['ftmesh.failover.cause'], 'advisory');
    assert.equal(root.parentSpanContext, undefined);
    const probe = spans
      .getFinishedSpans()
      .find(
        (s) => s.name === SpanName.probe && s.spanContext().traceId === root.spanContext().traceId,
      );
    assert.equal(probe?.parentSpanContext?.spanId, root.spanContext().spanId, 'its probe');
    assert.ok(a.status().falseSuspicions > before, 'counted');
    assert.equal(a.owner('cp-live')?.epoch, 1, 'no failover');
    assert.equal(
      spans.getFinishedSpans().filter((s) => s.name === SpanName.failover).length,
      0,
      'no failover trace',
    );
  });
});
