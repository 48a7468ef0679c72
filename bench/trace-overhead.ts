/**
 * What tracing costs on the hot path, measured in one run with tracing off
 * and on (`npm run bench -- replication|gateway --trace-overhead [--quick] [--json]`).
 *
 * Three configurations, run in rotating order over several rounds so that a
 * slow spell of the machine, or a slow position in a round, hits each alike:
 *
 * - `off`: no OTEL endpoint, as a deployment without a collector: the SDK is
 *   not loaded, the runtime's calls go to the API's no-ops;
 * - `default`: the SDK set up as the CLI does (cli/telemetry.ts) with its
 *   default sampler (a request that arrives without a context is traced 1
 *   time in 100), exporting spans and metrics over OTLP/HTTP JSON to a sink
 *   on the loopback (bench/otlp-sink.ts);
 * - `all`: the same with `OTEL_TRACES_SAMPLER=parentbased_always_on`: every request traced.
 *
 * replication: primary and standby are hosts in this process (as the
 * replication benchmark), the SDK is this process's, and the requester plays
 * the gateway's part: a root span per request, its context sent when
 * sampled. gateway: every role its own process (bench/gateway.ts), the
 * SDK set up in each from the environment, the clients (the SDK, in this
 * process) send no context: the gateway decides.
 *
 * Per configuration: request latency p50/p99 (sequential requests),
 * requests per second (a window of outstanding ones), the CPU time the
 * serving processes spent per request (this process for replication; the
 * gateway and host processes for gateway, from /proc), the overhead of each
 * against `off` in %, and the spans the sink received. On a shared machine
 * latency and rate move with whatever else runs; CPU per request does much
 * less, and is the figure to read first.
 */
import { ROOT_CONTEXT, SpanKind, trace } from '@opentelemetry/api';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { DEFAULT_SAMPLER, setupTelemetry, type Telemetry } from '../cli/telemetry.ts';
import { startNatsServer } from '../infra/index.ts';
import { createHost, traceparentOf, type Host } from '../runtime/index.ts';
import { startMesh, throughput } from './gateway.ts';
import { benchActors } from './gateway-actors.ts';
import { startOtlpSink, type OtlpSink } from './otlp-sink.ts';
import { columns, stats, timeEach, type Stats } from './stats.ts';

export const traceConfigs = ['off', 'default', 'all'] as const;
export type TraceConfig = (typeof traceConfigs)[number];

export type TraceOverheadReport = {
  path: 'replication' | 'gateway';
  load_before: number;
  load_after: number;
  default_sampler: string;
  rounds: number;
  configs: Record<
    TraceConfig,
    { latency_ms: Stats; per_s: number; cpu_us_per_request: number; spans_exported: number }
  >;
  /**
   * Against `off`, in % (positive: slower, fewer per second, more CPU); CPU as the median
   * over the rounds of each round against its own `off`; `per_s` in % of `off`'s rate.
   */
  overhead_pct: Record<'default' | 'all', { p50: number; p99: number; per_s: number; cpu: number }>;
  /**
   * The default's CPU overhead from its parts, steadier than the end-to-end figure on a
   * shared machine: the root span every request gets at its entry (sampled or not,
   * measured alone over 200,000 spans with the SDK set up as the CLI does), plus the
   * sampled share of what tracing a request costs (`all` against `off`), against `off`.
   */
  default_from_parts: { root_span_us: number; traced_request_us: number; pct: number };
};

const log = (s: string) => process.stderr.write(`[trace-overhead] ${s}\n`);
const round1 = (x: number) => Math.round(x * 10) / 10;

/** The environment of a configuration (`off`: none, telemetry stays off). */
function envOf(config: TraceConfig, sink: OtlpSink): Record<string, string> {
  if (config === 'off') return {};
  return {
    OTEL_EXPORTER_OTLP_ENDPOINT: sink.url,
    // Batches leave every 0.5 s instead of 5 s: role processes end with SIGKILL, and the
    // spans counted should be those made, not those that happened to leave before.
    OTEL_BSP_SCHEDULE_DELAY: '500',
    ...(config === 'all' ? { OTEL_TRACES_SAMPLER: 'parentbased_always_on' } : {}),
  };
}

/**
 * The order of the runs, a Latin square: each round rotates the configurations
 * (off, default, all; default, all, off; all, off, default; then the same
 * reversed), so that each takes each position in a round equally often. The
 * position matters on a small machine: a mesh started right after another
 * was torn down ran measurably slower, whatever its configuration.
 */
function schedule(rounds: number): TraceConfig[] {
  const out: TraceConfig[] = [];
  for (let r = 0; r < rounds; r++) {
    const k = r % traceConfigs.length;
    const rotated = [...traceConfigs.slice(k), ...traceConfigs.slice(0, k)];
    out.push(...(Math.floor(r / traceConfigs.length) % 2 === 0 ? rotated : rotated.reverse()));
  }
  return out;
}

/** CPU time (user + system) of the processes `pids` so far, µs (Linux /proc; clock ticks of 10 ms). */
function cpuOf(pids: readonly number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    // Fields after the command's closing parenthesis: utime and stime are the 12th and 13th.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    ticks += Number(fields[11]) + Number(fields[12]);
  }
  return ticks * 10_000;
}

/** This process's CPU time so far, µs. */
const ownCpu = () => {
  const u = process.cpuUsage();
  return u.user + u.system;
};

type Samples = {
  latency: Record<TraceConfig, number[]>;
  rates: Record<TraceConfig, number[]>;
  /** CPU µs per request, one figure per round. */
  cpu: Record<TraceConfig, number[]>;
  spans: Record<TraceConfig, number>;
};

const samples = (): Samples => ({
  latency: { off: [], default: [], all: [] },
  rates: { off: [], default: [], all: [] },
  cpu: { off: [], default: [], all: [] },
  spans: { off: 0, default: 0, all: 0 },
});

/**
 * CPU µs of one request's root span at the default sampler (started, asked whether it is
 * sampled, ended), in this process with the SDK set up as the CLI does.
 */
async function rootSpanCost(sink: OtlpSink): Promise<number> {
  const telemetry = await setupTelemetry(
    { name: 'ftmesh-bench', instance: 'root-span' },
    {
      OTEL_EXPORTER_OTLP_ENDPOINT: sink.url,
      OTEL_METRICS_EXPORTER: 'none',
    },
  );
  try {
    const tracer = trace.getTracer('ftmesh-bench');
    const spans = 200_000;
    const one = () => {
      const span = tracer.startSpan('bench.request', { kind: SpanKind.SERVER }, ROOT_CONTEXT);
      traceparentOf(span);
      span.end();
    };
    for (let i = 0; i < 20_000; i++) one();
    const cpu = ownCpu();
    for (let i = 0; i < spans; i++) one();
    return (ownCpu() - cpu) / spans;
  } finally {
    await telemetry.shutdown();
  }
}

function report(
  path: TraceOverheadReport['path'],
  load: number,
  rounds: number,
  s: Samples,
  rootSpanUs: number,
): TraceOverheadReport {
  const configs = {} as TraceOverheadReport['configs'];
  for (const c of traceConfigs) {
    configs[c] = {
      latency_ms: stats(s.latency[c]),
      // The median round's rate: one slow round does not decide.
      per_s: stats(s.rates[c]).p50,
      cpu_us_per_request: round1(stats(s.cpu[c]).p50),
      spans_exported: s.spans[c],
    };
  }
  const pct = (on: number, off: number) => round1(((on - off) / off) * 100);
  // CPU: each round's configuration against `off` of the same round, the median of those.
  const paired = (c: 'default' | 'all') =>
    round1(stats(s.cpu[c].map((us, i) => ((us - s.cpu.off[i]!) / s.cpu.off[i]!) * 100)).p50);
  const overhead = (c: 'default' | 'all') => ({
    p50: pct(configs[c].latency_ms.p50, configs.off.latency_ms.p50),
    p99: pct(configs[c].latency_ms.p99, configs.off.latency_ms.p99),
    // Fewer per second, in % of `off`.
    per_s: round1(((configs.off.per_s - configs[c].per_s) / configs.off.per_s) * 100),
    cpu: paired(c),
  });
  return {
    path,
    load_before: Math.round(load * 100) / 100,
    load_after: Math.round(loadavg()[0]! * 100) / 100,
    default_sampler: `${DEFAULT_SAMPLER.name} ${DEFAULT_SAMPLER.arg}`,
    rounds,
    configs,
    overhead_pct: { default: overhead('default'), all: overhead('all') },
    default_from_parts: fromParts(configs, rootSpanUs),
  };
}

function fromParts(
  configs: TraceOverheadReport['configs'],
  rootSpanUs: number,
): TraceOverheadReport['default_from_parts'] {
  const traced = Math.max(0, configs.all.cpu_us_per_request - configs.off.cpu_us_per_request);
  const added = rootSpanUs + DEFAULT_SAMPLER.arg * traced;
  return {
    root_span_us: Math.round(rootSpanUs * 100) / 100,
    traced_request_us: round1(traced),
    pct: Math.round((added / configs.off.cpu_us_per_request) * 1000) / 10,
  };
}

/** Hosts in this process, the SDK of this process: the replication path with tracing off and on. */
export async function replicationTraceOverhead(quick: boolean): Promise<TraceOverheadReport> {
  const load = loadavg()[0]!;
  const rounds = quick ? 3 : 6;
  const n = quick ? 1_000 : 4_000;
  const total = quick ? 10_000 : 40_000;
  const window = 256;
  const server = await startNatsServer();
  const sink = await startOtlpSink();
  // The gateway benchmark's standby actor: the same transaction on both paths.
  const actor = benchActors.find((a) => a.consistency === 'standby')!;
  const s = samples();
  let rootSpanUs: number;
  try {
    let k = 0;
    for (const config of schedule(rounds)) {
      k++;
      const telemetry: Telemetry = await setupTelemetry(
        { name: 'ftmesh-bench', instance: `replication-${config}` },
        envOf(config, sink),
      );
      const hosts: Host[] = [];
      const before = sink.spans;
      try {
        const primary = await createHost({ nats: server.url, actors: [actor], hostId: `tp${k}` });
        hosts.push(primary);
        hosts.push(await createHost({ nats: server.url, actors: [actor], hostId: `ts${k}` }));
        const sid = `trace-${k}`;
        await primary.openSession(actor.name, sid, { standby: `ts${k}` });
        // The requester plays the gateway: a root span per request, its context sent when sampled.
        const tracer = trace.getTracer('ftmesh-bench');
        const send = async (tag: string) => {
          const span = tracer.startSpan('bench.request', { kind: SpanKind.SERVER }, ROOT_CONTEXT);
          const traceparent = traceparentOf(span);
          await primary.request(sid, 'inc', tag, traceparent ? { traceparent } : undefined);
          span.end();
        };
        await timeEach(quick ? 200 : 1_000, () => send('warm'));
        const cpu = ownCpu();
        s.latency[config].push(...(await timeEach(n, () => send('x'))));
        const t = performance.now();
        let next = 0;
        await Promise.all(
          Array.from({ length: window }, async () => {
            while (next++ < total) await send('y');
          }),
        );
        s.rates[config].push(Math.round(total / ((performance.now() - t) / 1000)));
        s.cpu[config].push((ownCpu() - cpu) / (n + total));
      } finally {
        for (const h of hosts) await h.close();
        await telemetry.shutdown();
      }
      s.spans[config] += sink.spans - before;
      progress(config, s);
    }
    rootSpanUs = await rootSpanCost(sink);
  } finally {
    await sink.close();
    await server.stop();
  }
  return report('replication', load, rounds, s, rootSpanUs);
}

/** Every role its own process: client → gateway → actor with tracing off and on. */
export async function gatewayTraceOverhead(quick: boolean): Promise<TraceOverheadReport> {
  const load = loadavg()[0]!;
  const rounds = quick ? 3 : 6;
  const n = quick ? 1_000 : 3_000;
  const total = quick ? 10_000 : 30_000;
  const window = 256;
  const sink = await startOtlpSink();
  const s = samples();
  let rootSpanUs: number;
  const tag = 'x'.repeat(90);
  try {
    for (const config of schedule(rounds)) {
      const before = sink.spans;
      const mesh = await startMesh(['gt1', 'gt2'], [], envOf(config, sink));
      try {
        await mesh.control.placeSession('gw-bench-standby', 'gt-session', {
          primary: 'gt1',
          standby: 'gt2',
        });
        const session = await mesh.open('tracer', 'gt-session');
        await timeEach(quick ? 300 : 1_000, () => session.request('inc', tag));
        const cpu = cpuOf(mesh.pids);
        s.latency[config].push(...(await timeEach(n, () => session.request('inc', tag))));
        s.rates[config].push(await throughput(session, total, window));
        s.cpu[config].push((cpuOf(mesh.pids) - cpu) / (n + total));
      } finally {
        await mesh.stop();
      }
      s.spans[config] += sink.spans - before;
      progress(config, s);
    }
    rootSpanUs = await rootSpanCost(sink);
  } finally {
    await sink.close();
  }
  return report('gateway', load, rounds, s, rootSpanUs);
}

function progress(config: TraceConfig, s: Samples): void {
  log(
    `${config}: p50 ${stats(s.latency[config]).p50} ms, ${s.rates[config].at(-1)}/s, ` +
      `${round1(s.cpu[config].at(-1)!)} µs CPU per request, spans so far ${s.spans[config]}`,
  );
}

/** The report as a table. */
export function formatTraceOverhead(r: TraceOverheadReport): string {
  const f = (s: Stats) => [s.p50.toFixed(3), s.p99.toFixed(3)];
  const rows = [
    [
      'tracing',
      'p50 ms',
      'p99 ms',
      'per s',
      'CPU µs/req',
      'spans exported',
      'overhead CPU / p50 / p99 / rate',
    ],
  ];
  for (const c of traceConfigs) {
    const x = r.configs[c];
    const o = c === 'off' ? undefined : r.overhead_pct[c];
    rows.push([
      c === 'default'
        ? `default (${r.default_sampler})`
        : c === 'all'
          ? 'all (parentbased_always_on)'
          : 'off (no endpoint)',
      ...f(x.latency_ms),
      String(x.per_s),
      String(x.cpu_us_per_request),
      String(x.spans_exported),
      o ? `${o.cpu} % / ${o.p50} % / ${o.p99} % / ${o.per_s} %` : '-',
    ]);
  }
  return [
    `tracing overhead, ${r.path} path (${r.rounds} rounds per configuration, rotating; load average ${r.load_before} before, ${r.load_after} after)`,
    '',
    columns(rows, 1),
    '',
    `default from its parts: a root span per request ${r.default_from_parts.root_span_us} µs + ` +
      `${DEFAULT_SAMPLER.arg} × a traced request ${r.default_from_parts.traced_request_us} µs ` +
      `= ${r.default_from_parts.pct} % of the CPU per request with tracing off`,
  ].join('\n');
}
