/**
 * Traces across processes, as a deployment exports them: a gateway and three
 * hosts, each its own `ftmesh` process with `OTEL_EXPORTER_OTLP_ENDPOINT`
 * pointing at an OTLP/HTTP receiver (JSON) that is a process of its own
 * (test/helpers/otlp-receiver.ts). One request is one trace through the
 * gateway, the primary and the standby; a SIGKILL of the primary's process
 * is one failover trace, exported by the new primary's process.
 */
import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import { connect, mintToken, type Session } from '../../gateway/index.ts';
import { SpanName, type MeshClient } from '../../runtime/index.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { createTestClient, spawnNode, stopAll, type NodeProcess } from '../helpers/processes.ts';
import {
  startOtlpReceiver,
  type OtlpReceiver,
  type ReceivedSpan,
} from '../helpers/otlp-receiver.ts';
import { until } from '../helpers/until.ts';
import { failoverChildSpans } from '../helpers/failover-spans.ts';

const secret = 'otlp-export-test-secret-0123456789abcdef';
const hex = (bytes: number) => randomBytes(bytes).toString('hex');
/** A sampled W3C trace context, as a client that traces its requests sends it. */
const sampledContext = () => ({ traceId: hex(16), spanId: hex(8) });

describe('telemetry: OTLP/HTTP export from gateway and host processes to a receiver process', function () {
  const nats = useNatsServer();
  let receiver: OtlpReceiver;
  let client: MeshClient;
  let session: Session | undefined;
  let gatewayUrl: string;
  const procs = new Map<string, NodeProcess>();

  before(async function () {
    this.timeout(60_000);
    receiver = await startOtlpReceiver();
    client = await createTestClient(nats.url);
    const env = {
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
      OTEL_BSP_SCHEDULE_DELAY: '50',
      OTEL_METRIC_EXPORT_INTERVAL: '500',
    };
    for (const id of ['to1', 'to2', 'to3'])
      procs.set(id, spawnNode('cli/ftmesh.ts', ['host', '--nats', nats.url, '--id', id], { env }));
    const gw = spawnNode(
      'cli/ftmesh.ts',
      ['gateway', '--nats', nats.url, '--id', 'to-gw', '--secret', secret, '--udp-port', 'off'],
      { env },
    );
    procs.set('to-gw', gw);
    const ready = await gw.waitForLine(/^ready gateway /, 30_000);
    gatewayUrl = ready.split(' ')[3]!;
    for (const id of ['to1', 'to2', 'to3'])
      await procs.get(id)!.waitForLine(new RegExp(`^ready ${id}`), 30_000);
    await until(() => ['to1', 'to2', 'to3'].every((h) => client.liveHosts().includes(h)), {
      message: 'hosts heard',
    });
    await client.placeSession('counter', 'to-session', { primary: 'to1', standby: 'to2' });
    session = await connect(gatewayUrl, {
      token: mintToken({ secret, sub: 'tracer', sid: 'to-session' }),
    });
  });
  afterEach(function () {
    if (this.currentTest?.state === 'failed')
      for (const [id, p] of procs)
        console.log(`--- ${id} stderr ---\n${p.stderr.slice(-20).join('\n')}`);
  });
  after(async function () {
    this.timeout(30_000);
    await session?.close();
    await client?.close();
    for (const p of procs.values()) p.signal('SIGKILL');
    await Promise.all([...procs.values()].map((p) => p.exited));
    await stopAll();
  });

  it('one request is one trace: the gateway request, the transaction and its waits on the primary, the apply on the standby, the release', async () => {
    // A first request untraced: the times printed below are not those of cold code paths.
    assert.equal(await session!.request('add', 1), 1);
    const parent = sampledContext();
    const value = await session!.request('add', 1, {
      traceparent: `00-${parent.traceId}-${parent.spanId}-01`,
    });
    assert.equal(value, 2);
    const names = [
      SpanName.gatewayRequest,
      SpanName.release,
      SpanName.transaction,
      SpanName.replicationWait,
      SpanName.logWrite,
      SpanName.standbyApply,
    ];
    const spans = await receiver.waitForSpans((all) => {
      const mine = all.filter((s) => s.traceId === parent.traceId);
      return names.every((n) => mine.some((s) => s.name === n)) ? mine : undefined;
    }, 'the spans of the request from all three processes');
    const one = (name: string): ReceivedSpan => {
      const found = spans.filter((s) => s.name === name);
      assert.equal(found.length, 1, `one ${name}`);
      return found[0]!;
    };
    const gateway = one(SpanName.gatewayRequest);
    const release = one(SpanName.release);
    const transaction = one(SpanName.transaction);
    const wait = one(SpanName.replicationWait);
    const log = one(SpanName.logWrite);
    const apply = one(SpanName.standbyApply);
    // Who sent what: three processes.
    assert.deepEqual(
      [gateway, release, transaction, wait, log, apply].map((s) => `${s.service}/${s.instance}`),
      [
        'ftmesh-gateway/to-gw',
        'ftmesh-gateway/to-gw',
        'ftmesh-host/to1',
        'ftmesh-host/to1',
        'ftmesh-host/to1',
        'ftmesh-host/to2',
      ],
    );
    // The links: client → gateway → primary → standby; waits and release under their span.
    assert.equal(
      gateway.parentSpanId,
      parent.spanId,
      "the client's context is the gateway's parent",
    );
    assert.equal(release.parentSpanId, gateway.spanId);
    assert.equal(transaction.parentSpanId, gateway.spanId);
    assert.equal(wait.parentSpanId, transaction.spanId);
    assert.equal(log.parentSpanId, transaction.spanId);
    assert.equal(
      apply.parentSpanId,
      transaction.spanId,
      "the commit carried the transaction's context",
    );
    assert.equal(gateway.kind, 2, 'SERVER');
    assert.equal(transaction.attributes['ftmesh.session'], 'to-session');
    assert.equal(transaction.attributes['ftmesh.message.type'], 'add');
    assert.equal(apply.attributes['ftmesh.seq'], transaction.attributes['ftmesh.seq']);
    // In time: the release waits for the standby's ack, which follows its apply.
    assert.ok(apply.start >= transaction.start, 'applied after the transaction began');
    assert.ok(wait.end >= apply.start, 'the ack came after the apply began');
    assert.ok(release.end <= gateway.end + 0.01, 'released before the gateway answered');
    // Printed for infra/OBSERVABILITY.md: the request's spans, ms after the gateway's began.
    for (const s of [gateway, transaction, apply, wait, log, release])
      console.log(
        `      ${s.name.padEnd(26)} ${`${s.service}/${s.instance}`.padEnd(22)} ` +
          `+${(s.start - gateway.start).toFixed(2).padStart(5)} ms  ${(s.end - s.start).toFixed(2).padStart(5)} ms`,
      );

    // Requests without a context are roots the gateway's default sampler keeps 1 in 100 of:
    // of 100 such requests a handful at most is traced (every one would be, were it always_on).
    const known = new Set(receiver.spans().map((s) => s.traceId));
    for (let i = 0; i < 100; i++) await session!.request('add', 1);
    const marker = sampledContext();
    await session!.request('add', 1, { traceparent: `00-${marker.traceId}-${marker.spanId}-01` });
    await receiver.waitForSpans(
      (all) =>
        // The gateway exports in the order spans end: the 100 requests' before the marker's.
        all.some((s) => s.traceId === marker.traceId && s.name === SpanName.gatewayRequest)
          ? true
          : undefined,
      'the marker request traced',
    );
    const roots = receiver
      .spans()
      .filter(
        (s) => s.name === SpanName.gatewayRequest && !known.has(s.traceId) && s.parentSpanId === '',
      );
    assert.ok(roots.length <= 8, `${roots.length} of 100 requests without a context traced`);
  });

  it('SIGKILL of the primary process: the new primary exports the failover trace, and its failover metrics', async () => {
    const owner = client.owner('to-session')!;
    assert.equal(owner.primary, 'to1');
    // Traffic across the kill, each request in its own sampled trace.
    let stop = false;
    let replies = 0;
    const stream = (async () => {
      while (!stop) {
        const c = sampledContext();
        await session!.request('add', 1, { traceparent: `00-${c.traceId}-${c.spanId}-01` });
        replies++;
      }
    })();
    try {
      await until(() => replies >= 20, { message: 'replies before the kill' });
      procs.get('to1')!.signal('SIGKILL');
      await until(() => client.owner('to-session')?.primary === 'to2', {
        timeoutMs: 10_000,
        message: 'to2 primary',
      });
      const after = replies;
      await until(() => replies >= after + 20, {
        timeoutMs: 10_000,
        message: 'replies after the kill',
      });
    } finally {
      stop = true;
      await stream;
    }
    const record = (await until(
      async () => (await client.failoversOf('to2')).find((f) => f.reprotectedAt !== undefined),
      { timeoutMs: 15_000, message: 'the failover re-protected' },
    ))!;
    assert.match(record.traceId, /^[0-9a-f]{32}$/, 'the record names its trace');
    const trace = await receiver.waitForSpans((all) => {
      const mine = all.filter((s) => s.traceId === record.traceId);
      return mine.some((s) => s.name === SpanName.failover) && mine.length >= 8 ? mine : undefined;
    }, 'the failover trace at the receiver');
    const root = trace.find((s) => s.name === SpanName.failover)!;
    assert.equal(
      `${root.service}/${root.instance}`,
      'ftmesh-host/to2',
      'exported by the new primary',
    );
    assert.equal(root.parentSpanId, '');
    assert.equal(root.attributes['ftmesh.failover.from'], 'to1');
    assert.equal(root.attributes['ftmesh.failover.cause'], record.cause);
    assert.deepEqual(
      trace
        .filter((s) => s !== root)
        .map((s) => s.name)
        .sort(),
      failoverChildSpans,
    );
    for (const s of trace)
      assert.ok(s.start >= root.start - 0.01 && s.end <= root.end + 0.01, s.name);
    // Printed for infra/OBSERVABILITY.md: the spans as the receiver got them, ms after the detection.
    console.log(
      `      failover ${record.from}→${record.to} (${record.cause}), standby ${record.standby}:`,
    );
    for (const s of [...trace].sort((a, b) => a.start - b.start || a.end - b.end))
      console.log(
        `      ${s.name.padEnd(34)} +${(s.start - root.start).toFixed(1).padStart(6)} ms  ` +
          `${(s.end - s.start).toFixed(1).padStart(6)} ms`,
      );
    // `ftmesh status` names the failover's trace, in its JSON and in its timeline line.
    const json = spawnNode('cli/ftmesh.ts', ['status', '--json', '--nats', nats.url]);
    const text = spawnNode('cli/ftmesh.ts', ['status', '--nats', nats.url]);
    const [jsonExit, textExit] = await Promise.all([json.exited, text.exited]);
    assert.deepEqual([jsonExit.code, textExit.code], [0, 0], text.stderr.join('\n'));
    const status = JSON.parse(json.stdout.join('')) as { failovers: { trace_id?: string }[] };
    assert.ok(
      status.failovers.some((f) => f.trace_id === record.traceId),
      json.stdout.join(''),
    );
    assert.ok(
      text.stdout.some((l) => l.includes(`to1→to2`) && l.includes(`trace ${record.traceId}`)),
      text.stdout.join('\n'),
    );
    // And the new primary's metrics: the failover by cause, its time to first reply.
    const points = await until(
      () => {
        const m = receiver.metrics().filter((p) => p.instance === 'to2');
        const failovers = m.filter((p) => p.name === 'ftmesh.failovers').at(-1);
        const firstReply = m.filter((p) => p.name === 'ftmesh.failover.first_reply').at(-1);
        return failovers && firstReply ? { failovers, firstReply } : undefined;
      },
      { timeoutMs: 10_000, message: "to2's failover metrics" },
    );
    assert.equal(points!.failovers.value, 1);
    assert.equal(points!.failovers.attributes['ftmesh.failover.cause'], record.cause);
    assert.equal(points!.firstReply.count, 1);
  });
});
