import {
  DiagConsoleLogger,
  DiagLogLevel,
  SamplingDecision,
  diag,
  isSpanContextValid,
  metrics,
  trace,
  type Attributes,
  type Context,
  type Link,
  type Sampler,
  type SamplingResult,
  type SpanKind,
} from '@opentelemetry/api';
import { controlPlaneRoots } from '../runtime/index.ts';

/**
 * OpenTelemetry for the processes the CLI runs (`ftmesh host`, `ftmesh
 * gateway`), set up from the standard environment variables
 * (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/):
 *
 * - `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`, `..._METRICS_ENDPOINT`):
 *   where to export, over OTLP/HTTP with JSON bodies (`http://collector:4318`).
 *   Without any endpoint telemetry is off and the SDK is not even loaded: the
 *   runtime's calls go to the API's no-ops.
 * - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: the resource (default
 *   service `ftmesh-host` / `ftmesh-gateway`, instance the host or gateway id).
 * - `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG`: the sampler of request
 *   traces; default {@link DEFAULT_SAMPLER}. Failover and false-suspicion
 *   traces are always kept (unless the sampler is `always_off`): they are rare
 *   and each one is what the traces are for.
 * - `OTEL_TRACES_EXPORTER=none`, `OTEL_METRICS_EXPORTER=none`, `OTEL_SDK_DISABLED=true`;
 *   `OTEL_BSP_*` (batching), `OTEL_METRIC_EXPORT_INTERVAL` (ms, default 60,000),
 *   `OTEL_LOG_LEVEL` (the SDK's own complaints on stderr, default `error`).
 */

/**
 * The sampler of request traces when `OTEL_TRACES_SAMPLER` is not set: a
 * client's or gateway's decision is followed (parent-based), and of the
 * requests that arrive without one, 1 in 100 is traced. Measured with
 * `npm run bench -- replication|gateway --trace-overhead` (bench/README.md):
 * tracing every request costs 57–68 % more CPU per request and 42–48 % of
 * the throughput; at 1 % the cost is a root span per request (under 2 µs)
 * and 1 % of a traced one, 1.4–1.9 % of the CPU per request. A client that
 * wants its request traced sends a sampled `traceparent`;
 * `OTEL_TRACES_SAMPLER=parentbased_always_on` traces all.
 */
export const DEFAULT_SAMPLER = { name: 'parentbased_traceidratio', arg: 0.01 } as const;

/** What {@link setupTelemetry} set up. */
export interface Telemetry {
  /** True when traces or metrics are exported. */
  readonly enabled: boolean;
  /** One line saying what is exported where (for the process's stderr); empty when off. */
  readonly summary: string;
  /** Exports what is buffered and stops (bounded: 2 s). Never rejects. */
  shutdown(): Promise<void>;
}

const off: Telemetry = { enabled: false, summary: '', shutdown: () => Promise.resolve() };

type Env = Readonly<Record<string, string | undefined>>;

const logLevels: Record<string, DiagLogLevel> = {
  none: DiagLogLevel.NONE,
  error: DiagLogLevel.ERROR,
  warn: DiagLogLevel.WARN,
  info: DiagLogLevel.INFO,
  debug: DiagLogLevel.DEBUG,
  verbose: DiagLogLevel.VERBOSE,
  all: DiagLogLevel.ALL,
};

/**
 * Sets up the OpenTelemetry SDK for this process from `env` and registers it
 * with the API, so that the runtime and the gateway (which use only the API)
 * record through it. Call it before creating the host or the gateway: their
 * metric instruments are made when they start.
 * @example
 * const telemetry = await setupTelemetry({ name: 'ftmesh-host', instance: 'h1' });
 * ...
 * await telemetry.shutdown();
 */
export async function setupTelemetry(
  service: { name: string; instance: string },
  env: Env = process.env,
): Promise<Telemetry> {
  const endpoint = env['OTEL_EXPORTER_OTLP_ENDPOINT'];
  // As the specification says: a signal's own endpoint is used as it is, the common one gets its path.
  const signalUrl = (own: string | undefined, path: string) =>
    own ?? (endpoint === undefined ? undefined : `${endpoint.replace(/\/+$/, '')}/${path}`);
  const tracesUrl = signalUrl(env['OTEL_EXPORTER_OTLP_TRACES_ENDPOINT'], 'v1/traces');
  const metricsUrl = signalUrl(env['OTEL_EXPORTER_OTLP_METRICS_ENDPOINT'], 'v1/metrics');
  const tracesOn = tracesUrl !== undefined && env['OTEL_TRACES_EXPORTER'] !== 'none';
  const metricsOn = metricsUrl !== undefined && env['OTEL_METRICS_EXPORTER'] !== 'none';
  if (env['OTEL_SDK_DISABLED'] === 'true' || (!tracesOn && !metricsOn)) return off;

  const level = logLevels[(env['OTEL_LOG_LEVEL'] ?? 'error').toLowerCase()] ?? DiagLogLevel.ERROR;
  diag.setLogger(new DiagConsoleLogger(), level);
  const protocol = env['OTEL_EXPORTER_OTLP_PROTOCOL'];
  if (protocol !== undefined && protocol !== 'http/json')
    diag.warn(
      `ftmesh exports OTLP/HTTP with JSON bodies; OTEL_EXPORTER_OTLP_PROTOCOL=${protocol} is not used`,
    );

  // Loaded only when telemetry is on: a process without an endpoint never pays for the SDK.
  const { defaultResource, detectResources, envDetector, resourceFromAttributes } =
    await import('@opentelemetry/resources');
  const resource = defaultResource()
    .merge(
      resourceFromAttributes({
        'service.name': service.name,
        'service.instance.id': service.instance,
      }),
    )
    .merge(detectResources({ detectors: [envDetector] }));

  const stops: (() => Promise<void>)[] = [];
  const said: string[] = [];
  if (tracesOn) {
    const { BasicTracerProvider, BatchSpanProcessor } =
      await import('@opentelemetry/sdk-trace-base');
    const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
    const { sampler, description } = await samplerFromEnv(env);
    const provider = new BasicTracerProvider({
      resource,
      sampler,
      spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: tracesUrl }))],
    });
    trace.setGlobalTracerProvider(provider);
    stops.push(() => provider.shutdown());
    said.push(`traces (${description})`);
  }
  if (metricsOn) {
    const { MeterProvider, PeriodicExportingMetricReader } =
      await import('@opentelemetry/sdk-metrics');
    const { OTLPMetricExporter } = await import('@opentelemetry/exporter-metrics-otlp-http');
    const interval = Number(env['OTEL_METRIC_EXPORT_INTERVAL'] ?? 60_000);
    const exportIntervalMillis = Number.isFinite(interval) && interval > 0 ? interval : 60_000;
    const provider = new MeterProvider({
      resource,
      readers: [
        new PeriodicExportingMetricReader({
          exporter: new OTLPMetricExporter({ url: metricsUrl }),
          exportIntervalMillis,
          exportTimeoutMillis: Math.min(30_000, exportIntervalMillis),
        }),
      ],
    });
    metrics.setGlobalMeterProvider(provider);
    stops.push(() => provider.shutdown());
    said.push(`metrics every ${exportIntervalMillis / 1000} s`);
  }
  return {
    enabled: true,
    summary: `telemetry: ${said.join(' and ')} over OTLP/HTTP (JSON) to ${
      endpoint ?? [tracesUrl, metricsUrl].filter(Boolean).join(', ')
    }`,
    async shutdown() {
      let timer: NodeJS.Timeout | undefined;
      const bound = new Promise<void>((resolve) => (timer = setTimeout(resolve, 2_000)));
      await Promise.race([Promise.allSettled(stops.map((stop) => stop())), bound]);
      clearTimeout(timer);
      trace.disable();
      metrics.disable();
    },
  };
}

/**
 * The sampler the environment names (the six of the specification), wrapped
 * so that a root span of the control plane (a failover, a false suspicion)
 * is always sampled unless sampling is off altogether.
 */
export async function samplerFromEnv(env: Env): Promise<{ sampler: Sampler; description: string }> {
  const { AlwaysOffSampler, AlwaysOnSampler, ParentBasedSampler, TraceIdRatioBasedSampler } =
    await import('@opentelemetry/sdk-trace-base');
  const name = env['OTEL_TRACES_SAMPLER'] ?? DEFAULT_SAMPLER.name;
  const rawArg = env['OTEL_TRACES_SAMPLER_ARG'];
  const parsed = rawArg === undefined ? NaN : Number(rawArg);
  const ratio =
    Number.isFinite(parsed) && parsed >= 0 && parsed <= 1
      ? parsed
      : env['OTEL_TRACES_SAMPLER'] === undefined
        ? DEFAULT_SAMPLER.arg
        : 1;
  let requests: Sampler;
  switch (name) {
    case 'always_on':
      requests = new AlwaysOnSampler();
      break;
    case 'always_off':
      return { sampler: new AlwaysOffSampler(), description: 'always_off' };
    case 'traceidratio':
      requests = new TraceIdRatioBasedSampler(ratio);
      break;
    case 'parentbased_always_on':
      requests = new ParentBasedSampler({ root: new AlwaysOnSampler() });
      break;
    case 'parentbased_always_off':
      requests = new ParentBasedSampler({ root: new AlwaysOffSampler() });
      break;
    case 'parentbased_traceidratio':
      requests = new ParentBasedSampler({ root: new TraceIdRatioBasedSampler(ratio) });
      break;
    default:
      diag.warn(`OTEL_TRACES_SAMPLER=${name} is not one ftmesh knows; using parentbased_always_on`);
      requests = new ParentBasedSampler({ root: new AlwaysOnSampler() });
  }
  const described = name.endsWith('traceidratio') ? `${name} ${ratio}` : name;
  return {
    sampler: new ControlPlaneSampler(requests),
    description: `sampler ${described}, failovers always`,
  };
}

/** Keeps every control-plane root span; leaves everything else to `requests`. */
export class ControlPlaneSampler implements Sampler {
  constructor(private readonly requests: Sampler) {}

  shouldSample(
    context: Context,
    traceId: string,
    spanName: string,
    spanKind: SpanKind,
    attributes: Attributes,
    links: Link[],
  ): SamplingResult {
    const parent = trace.getSpanContext(context);
    if (controlPlaneRoots.has(spanName) && !(parent && isSpanContextValid(parent)))
      return { decision: SamplingDecision.RECORD_AND_SAMPLED };
    return this.requests.shouldSample(context, traceId, spanName, spanKind, attributes, links);
  }

  toString(): string {
    return `ControlPlaneSampler{${this.requests.toString()}}`;
  }
}
