/**
 * The trace context on the wire and the guarantee that telemetry never
 * throws into the runtime: an input carries a sampled `traceparent`, a
 * commit the context of its transaction only when it was traced, an
 * unsampled context is not sent at all, and an SDK that throws on every
 * call leaves requests answered (reported once, as a TelemetryError).
 */
import { strict as assert } from 'node:assert';
import { trace, type Tracer, type TracerProvider } from '@opentelemetry/api';
import {
  CommitFlag,
  ConsistencyCode,
  EventFlag,
  FrameKind,
  decodeFrame,
  encodeCommit,
  encodeInput,
} from '../../runtime/wire.ts';
import { formatTraceparent, parseTraceparent, Tracing } from '../../runtime/telemetry.ts';
import { SessionClient } from '../../runtime/session-client.ts';
import { createValueCodec } from '../../runtime/codec.ts';
import { systemClock } from '../../runtime/clock.ts';
import { SpanName, TelemetryError, type FtmError, type Transport } from '../../runtime/index.ts';
import { collectErrors } from '../helpers/errors.ts';
import { useHosts } from '../helpers/hosts.ts';
import { useNatsServer } from '../helpers/nats.ts';

const bytes = (s: string) => new TextEncoder().encode(s);
const sampled = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
const unsampled = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00';

describe('telemetry: the trace context on the wire', () => {
  it('an input carries a traceparent after its sender, and one without decodes with none', () => {
    const f = decodeFrame(encodeInput('ann.1', 'move', bytes('p'), 'ann', sampled));
    assert.ok(f.kind === FrameKind.input);
    assert.deepEqual([f.sender, f.traceparent, [...f.payload]], ['ann', sampled, [...bytes('p')]]);
    const anonymous = decodeFrame(encodeInput('x.1', 'tick', bytes('q'), '', sampled));
    assert.ok(anonymous.kind === FrameKind.input);
    assert.deepEqual([anonymous.sender, anonymous.traceparent], ['', sampled]);
    const plain = encodeInput('x.2', 'tick', bytes('q'), 'ann');
    const untraced = decodeFrame(plain);
    assert.ok(untraced.kind === FrameKind.input);
    assert.equal(untraced.traceparent, '');
    assert.equal(plain[1], 1, 'only the sender flag: no byte spent on tracing');
  });

  it("a commit carries its transaction's context with the traced flag, and never the flag without it", () => {
    const at = { epoch: 3, term: 1, seq: 9 };
    const flags = ConsistencyCode.standby | CommitFlag.hasReply;
    const traced = decodeFrame(encodeCommit(flags, at, 'r1', bytes('a'), bytes('pp'), sampled));
    assert.ok(traced.kind === FrameKind.commit);
    assert.equal(traced.flags & CommitFlag.traced, CommitFlag.traced);
    assert.deepEqual(
      [traced.requestId, traced.traceparent, [...traced.reply], [...traced.patches], traced.seq],
      ['r1', sampled, [...bytes('a')], [...bytes('pp')], 9],
    );
    // A dedup entry remembers the flags of a traced commit: re-encoded without a context, no flag.
    const repeat = decodeFrame(encodeCommit(traced.flags, at, 'r1', bytes('a'), new Uint8Array(0)));
    assert.ok(repeat.kind === FrameKind.commit);
    assert.equal(repeat.flags & CommitFlag.traced, 0);
    assert.equal(repeat.traceparent, '');
    assert.equal(CommitFlag.traced, EventFlag.targeted, 'the bit of events, free on commits');
  });

  it('a truncated traceparent is a malformed frame', () => {
    const commit = encodeCommit(
      1,
      { epoch: 1, term: 0, seq: 1 },
      'r',
      bytes('a'),
      bytes(''),
      sampled,
    );
    // Cut inside the traceparent: 18-byte header, u16 + 'r', u16 + 10 of its bytes.
    assert.throws(() => decodeFrame(commit.subarray(0, 18 + 3 + 2 + 10)), /malformed frame/);
    const input = encodeInput('r', 't', bytes(''), '', sampled);
    assert.throws(() => decodeFrame(input.subarray(0, input.length - 5)), /malformed frame/);
  });

  it('parses W3C traceparents and refuses what the specification refuses', () => {
    const sc = parseTraceparent(sampled)!;
    assert.deepEqual(
      [sc.traceId, sc.spanId, sc.traceFlags],
      ['4bf92f3577b34da6a3ce929d0e0e4736', '00f067aa0ba902b7', 1],
    );
    assert.equal(formatTraceparent(sc), sampled);
    for (const bad of [
      '',
      'garbage',
      `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`,
      `00-4bf92f3577b34da6a3ce929d0e0e4736-${'0'.repeat(16)}-01`,
      `ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`,
      `00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01`,
      `${sampled}-extra`,
    ])
      assert.equal(parseTraceparent(bad), undefined, bad);
    assert.ok(parseTraceparent(`01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-future`));
  });

  it('a session client sends a sampled context with the input, and no unsampled or invalid one', () => {
    const sent: Uint8Array[] = [];
    const transport: Transport = {
      publish: (_subject, data) => void sent.push(data),
      subscribe: () => ({ unsubscribe: () => undefined }),
      request: () => Promise.reject(new Error('not used')),
      flush: () => Promise.resolve(),
      maxPayload: 1 << 20,
    };
    const client = new SessionClient(
      {
        transport,
        codec: createValueCodec(),
        clock: systemClock,
        random: { next: () => 0.5, hex: (n) => 'ab'.repeat(n) },
      },
      'sid',
    );
    for (const traceparent of [sampled, unsampled, 'not-a-context', undefined])
      void client.request('t', 1, traceparent ? { traceparent } : {}).catch(() => undefined);
    client.close();
    const contexts = sent.map((b) => {
      const f = decodeFrame(b);
      return f.kind === FrameKind.input ? f.traceparent : '?';
    });
    assert.deepEqual(contexts, [sampled, '', '', '']);
  });
});

describe('telemetry never throws into the runtime', function () {
  const nats = useNatsServer();
  const reported = collectErrors();
  afterEach(() =>
    reported.assertNone([
      {
        pattern: /TelemetryError: telemetry failed: an SDK fault/,
        why: 'the throwing SDK of this test, reported',
      },
    ]),
  );
  const host = useHosts(() => nats.url, reported);

  /** An SDK whose every span start throws. */
  const throwing: TracerProvider = {
    getTracer: (): Tracer => {
      const fail = (): never => {
        throw new Error('an SDK fault');
      };
      return { startSpan: fail, startActiveSpan: fail };
    },
  };
  after(() => trace.disable());

  it('a Tracing whose SDK throws reports once, counts every failure and returns nothing', () => {
    assert.ok(trace.setGlobalTracerProvider(throwing));
    try {
      const errors: FtmError[] = [];
      const tracing = new Tracing((e) => errors.push(e));
      assert.equal(tracing.childOf(sampled, SpanName.transaction, 0, {}), undefined);
      assert.equal(tracing.childOf(sampled, SpanName.transaction, 0, {}), undefined);
      assert.equal(tracing.failures, 2);
      assert.equal(errors.length, 1);
      assert.ok(errors[0] instanceof TelemetryError);
    } finally {
      trace.disable();
    }
  });

  it('traced requests are answered and replicated while the SDK throws on every span', async () => {
    const a = await host('tt-a');
    await host('tt-b');
    await a.openSession('counter', 'tt-session', { standby: 'tt-b' });
    assert.ok(trace.setGlobalTracerProvider(throwing));
    try {
      // Hosts made before the SDK was there get its tracer through the API's proxy.
      for (let i = 1; i <= 5; i++)
        assert.equal(await a.request('tt-session', 'add', 1, { traceparent: sampled }), i);
    } finally {
      trace.disable();
    }
    assert.ok(
      reported.errors.some((e) => e instanceof TelemetryError),
      'the fault was reported (once per part that met it)',
    );
  });
});
