/**
 * An OTLP/HTTP receiver for tests, JSON bodies only: a small HTTP server on
 * the loopback that takes what OpenTelemetry exporters POST to `/v1/traces`
 * and `/v1/metrics` and prints it, one line per span or data point, so that
 * a test reads what arrived from which process.
 *
 * Run as its own process (`node --import tsx test/helpers/otlp-receiver.ts`):
 * prints `ready <url>`, then `span {...}` and `metric {...}` lines. A test
 * starts it with {@link startOtlpReceiver} and points the processes it wants
 * to watch at it with `OTEL_EXPORTER_OTLP_ENDPOINT`.
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { spawnNode, type NodeProcess } from './processes.ts';
import { until } from './until.ts';

/** A span as the receiver got it: ids in hex, times in ms since the epoch. */
export interface ReceivedSpan {
  service: string;
  instance: string;
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  start: number;
  end: number;
  attributes: Record<string, unknown>;
  links: { traceId: string; spanId: string }[];
  status: number;
}

/** A metric data point: a sum's or gauge's value, or a histogram's count and sum. */
export interface ReceivedMetric {
  service: string;
  instance: string;
  name: string;
  attributes: Record<string, unknown>;
  value?: number;
  count?: number;
  sum?: number;
}

type KeyValue = { key: string; value: Record<string, unknown> };

function anyValue(v: Record<string, unknown> | undefined): unknown {
  if (!v) return undefined;
  if ('stringValue' in v) return v['stringValue'];
  if ('intValue' in v) return Number(v['intValue']);
  if ('doubleValue' in v) return Number(v['doubleValue']);
  if ('boolValue' in v) return v['boolValue'];
  if ('arrayValue' in v)
    return ((v['arrayValue'] as { values?: Record<string, unknown>[] }).values ?? []).map(anyValue);
  return undefined;
}

function attributes(list: KeyValue[] | undefined): Record<string, unknown> {
  return Object.fromEntries((list ?? []).map((kv) => [kv.key, anyValue(kv.value)]));
}

/** Text of a field that should hold one: anything else is empty. */
const text = (v: unknown): string => (typeof v === 'string' ? v : '');

const ms = (nanos: unknown) =>
  typeof nanos === 'string' || typeof nanos === 'number' ? Number(BigInt(nanos) / 1000n) / 1000 : 0;

/** Turns an OTLP/JSON export of traces into one record per span. */
export function spansOf(body: unknown): ReceivedSpan[] {
  const out: ReceivedSpan[] = [];
  const b = body as {
    resourceSpans?: {
      resource?: { attributes?: KeyValue[] };
      scopeSpans?: { spans?: Record<string, unknown>[] }[];
    }[];
  };
  for (const rs of b.resourceSpans ?? []) {
    const res = attributes(rs.resource?.attributes);
    for (const ss of rs.scopeSpans ?? [])
      for (const s of ss.spans ?? [])
        out.push({
          service: text(res['service.name']),
          instance: text(res['service.instance.id']),
          traceId: text(s['traceId']),
          spanId: text(s['spanId']),
          parentSpanId: text(s['parentSpanId']),
          name: text(s['name']),
          kind: Number(s['kind'] ?? 0),
          start: ms(s['startTimeUnixNano']),
          end: ms(s['endTimeUnixNano']),
          attributes: attributes(s['attributes'] as KeyValue[] | undefined),
          links: ((s['links'] as { traceId: string; spanId: string }[] | undefined) ?? []).map(
            (l) => ({ traceId: l.traceId, spanId: l.spanId }),
          ),
          status: Number((s['status'] as { code?: number } | undefined)?.code ?? 0),
        });
  }
  return out;
}

/** Turns an OTLP/JSON export of metrics into one record per data point. */
export function metricsOf(body: unknown): ReceivedMetric[] {
  const out: ReceivedMetric[] = [];
  type Point = Record<string, unknown> & { attributes?: KeyValue[] };
  const b = body as {
    resourceMetrics?: {
      resource?: { attributes?: KeyValue[] };
      scopeMetrics?: { metrics?: Record<string, { dataPoints?: Point[] } | string>[] }[];
    }[];
  };
  for (const rm of b.resourceMetrics ?? []) {
    const res = attributes(rm.resource?.attributes);
    for (const sm of rm.scopeMetrics ?? [])
      for (const m of sm.metrics ?? []) {
        const name = text(m['name']);
        for (const kind of ['sum', 'gauge', 'histogram'] as const) {
          const data = m[kind] as { dataPoints?: Point[] } | undefined;
          for (const p of data?.dataPoints ?? []) {
            const base = {
              service: text(res['service.name']),
              instance: text(res['service.instance.id']),
              name,
              attributes: attributes(p.attributes),
            };
            if (kind === 'histogram')
              out.push({ ...base, count: Number(p['count']), sum: Number(p['sum']) });
            else out.push({ ...base, value: Number(p['asInt'] ?? p['asDouble']) });
          }
        }
      }
  }
  return out;
}

/** Runs the receiver in this process until it is killed (the script's entry). */
function serve(): void {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const type = req.headers['content-type'] ?? '';
      if (req.method !== 'POST' || !type.includes('json')) {
        console.log(`refused ${req.method} ${req.url} ${type}`);
        res.writeHead(415).end();
        return;
      }
      let body: unknown;
      try {
        body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      } catch (err) {
        console.log(`refused ${req.url}: ${(err as Error).message}`);
        res.writeHead(400).end();
        return;
      }
      if (req.url === '/v1/traces')
        for (const s of spansOf(body)) console.log(`span ${JSON.stringify(s)}`);
      else if (req.url === '/v1/metrics')
        for (const m of metricsOf(body)) console.log(`metric ${JSON.stringify(m)}`);
      else console.log(`refused ${req.url}`);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  server.listen(0, '127.0.0.1', () => {
    const { port } = server.address() as AddressInfo;
    console.log(`ready http://127.0.0.1:${port}`);
  });
}

/** A receiver process and what it printed so far. */
export interface OtlpReceiver {
  readonly url: string;
  readonly process: NodeProcess;
  spans(): ReceivedSpan[];
  metrics(): ReceivedMetric[];
  /** Waits until the spans received satisfy `fn` (returns what it returned). */
  waitForSpans<T>(
    fn: (spans: ReceivedSpan[]) => T | undefined,
    message: string,
    timeoutMs?: number,
  ): Promise<T>;
}

/** Starts the receiver as its own process (stopped with the others by `stopAll`). */
export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const proc = spawnNode('test/helpers/otlp-receiver.ts', []);
  const url = (await proc.waitForLine(/^ready /, 20_000)).slice('ready '.length);
  const parsed = <T>(prefix: string) =>
    proc.stdout
      .filter((l) => l.startsWith(prefix))
      .map((l) => JSON.parse(l.slice(prefix.length)) as T);
  const receiver: OtlpReceiver = {
    url,
    process: proc,
    spans: () => parsed<ReceivedSpan>('span '),
    metrics: () => parsed<ReceivedMetric>('metric '),
    waitForSpans: (fn, message, timeoutMs = 15_000) =>
      until(() => fn(receiver.spans()), { timeoutMs, message }) as Promise<never>,
  };
  return receiver;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) serve();
