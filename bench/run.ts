/**
 * Benchmarks. `npm run bench -- replication|codec|failover|gateway|idle|detector [--quick] [--json]`
 * (idle also takes `--hosts N[,M...]`, default 3,20; detector `--minutes M`, `--trace FILE`
 * and `--window FROM-TO` in minutes; replication and gateway `--trace-overhead`: the hot
 * path with tracing off and on, bench/trace-overhead.ts).
 *
 * replication: request -> transaction -> released reply latency through the
 * host API per consistency mode, next to a raw NATS request/reply measured in
 * the same run on the same server, and replicated transactions per second.
 * Primary and standby are separate hosts (separate NATS connections) in this
 * process; the standby-in-another-process case is covered by the tests.
 */
import { parseArgs } from 'node:util';
import { connect } from '@nats-io/transport-node';
import { startNatsServer } from '../infra/index.ts';
import { createHost, defineActor } from '../runtime/index.ts';
import { formatCodecReport, runCodecBench, type CodecReport } from './codec.ts';
import { formatDetectorReport, runDetectorBench, type DetectorReport } from './detector.ts';
import { formatFailoverReport, runFailoverBench, type FailoverReport } from './failover.ts';
import { formatGatewayReport, runGatewayBench, type GatewayReport } from './gateway.ts';
import { formatIdleReport, parseHostCounts, runIdleBench, type IdleReport } from './idle.ts';
import { stats, timeEach } from './stats.ts';
import {
  formatTraceOverhead,
  gatewayTraceOverhead,
  replicationTraceOverhead,
  type TraceOverheadReport,
} from './trace-overhead.ts';

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    quick: { type: 'boolean' },
    json: { type: 'boolean' },
    hosts: { type: 'string' },
    minutes: { type: 'string' },
    trace: { type: 'string' },
    window: { type: 'string' },
    'trace-overhead': { type: 'boolean' },
  },
});
const traceOverhead = values['trace-overhead'] === true;

async function replication(): Promise<Record<string, unknown>> {
  const quick = values.quick === true;
  const n = quick ? 2_000 : 20_000;
  const server = await startNatsServer();
  const actors = (['async', 'standby', 'durable'] as const).map((consistency) =>
    defineActor({
      name: `bench-${consistency}`,
      consistency,
      initialState: { n: 0, last: '' },
      handlers: {
        inc(s, tag: string) {
          s.n += 1;
          s.last = tag;
          return s.n;
        },
      },
    }),
  );
  const responder = await connect({ servers: server.url });
  const requester = await connect({ servers: server.url });
  const primary = await createHost({ nats: server.url, actors, hostId: 'bench-primary' });
  const standby = await createHost({ nats: server.url, actors, hostId: 'bench-standby' });
  try {
    responder.subscribe('bench.echo', { callback: (_e, m) => void m.respond(m.data) });
    await responder.flush();
    const payload = new Uint8Array(100);
    const warm = quick ? 200 : 1_000;
    await timeEach(warm, () => requester.request('bench.echo', payload));
    const raw = stats(await timeEach(n, () => requester.request('bench.echo', payload)));
    const result: Record<string, unknown> = { raw_request_reply_ms: raw };
    for (const mode of ['async', 'standby', 'durable'] as const) {
      const sid = `bench-${mode}`;
      await primary.openSession(sid, sid, { standby: 'bench-standby' });
      await timeEach(warm, () => primary.request(sid, 'inc', 'warm'));
      const lat = stats(await timeEach(n, () => primary.request(sid, 'inc', 'x')));
      result[`${mode}_ms`] = lat;
      result[`${mode}_ratio_p50`] = Math.round((lat.p50 / raw.p50) * 100) / 100;
      // Throughput: a window of outstanding requests, replies released by mode.
      const window = 500;
      const total = quick ? 20_000 : 100_000;
      const t = performance.now();
      for (let i = 0; i < total; i += window) {
        await Promise.all(Array.from({ length: window }, () => primary.request(sid, 'inc', 'y')));
      }
      result[`${mode}_tx_per_s`] = Math.round(total / ((performance.now() - t) / 1000));
      // In async mode the standby may trail the last released reply: wait for it to catch up.
      const seq = primary.info(sid)!.seq;
      for (let i = 0; standby.info(sid)!.seq < seq; i++) {
        if (i > 1000)
          throw new Error(`${sid}: standby stuck at ${standby.info(sid)!.seq} < ${seq}`);
        await new Promise((r) => setTimeout(r, 5));
      }
      if (primary.hash(sid) !== standby.hash(sid)) throw new Error(`${sid}: standby differs`);
    }
    return result;
  } finally {
    await primary.close();
    await standby.close();
    await responder.close();
    await requester.close();
    await server.stop();
  }
}

const benches: Record<string, () => Promise<Record<string, unknown>>> = {
  replication: () =>
    traceOverhead ? replicationTraceOverhead(values.quick === true) : replication(),
  codec: () => Promise.resolve().then(() => runCodecBench({ quick: values.quick === true })),
  failover: () => runFailoverBench({ quick: values.quick === true }),
  gateway: () =>
    traceOverhead
      ? gatewayTraceOverhead(values.quick === true)
      : runGatewayBench(values.quick === true),
  // parseHostCounts throws on a bad --hosts: inside then(), that is a rejection like any failure.
  idle: () =>
    Promise.resolve().then(() =>
      runIdleBench({ quick: values.quick === true, hosts: parseHostCounts(values.hosts) }),
    ),
  detector: () =>
    runDetectorBench({
      quick: values.quick === true,
      ...(values.minutes !== undefined ? { minutes: Number(values.minutes) } : {}),
      ...(values.trace !== undefined ? { trace: values.trace } : {}),
      ...(values.window !== undefined
        ? { window: values.window.split('-').map(Number) as [number, number] }
        : {}),
    }),
};
// Benchmarks that print a table; the others print one line per figure.
const tables: Record<string, (r: Record<string, unknown>) => string> = {
  codec: (r) => formatCodecReport(r as CodecReport, values.quick === true),
  failover: (r) => formatFailoverReport(r as FailoverReport, values.quick === true),
  gateway: (r) => formatGatewayReport(r as GatewayReport),
  idle: (r) => formatIdleReport(r as IdleReport, values.quick === true),
  detector: (r) => formatDetectorReport(r as DetectorReport, values.quick === true),
};
const name = positionals[0] ?? 'replication';
if (traceOverhead && name !== 'replication' && name !== 'gateway') {
  console.error('--trace-overhead is an option of replication and gateway');
  process.exit(2);
}
const bench = benches[name];
if (!bench) {
  console.error(`unknown benchmark ${name}: use ${Object.keys(benches).join(', ')}`);
  process.exitCode = 2;
} else {
  bench()
    .then((r) => {
      const table = traceOverhead
        ? (x: Record<string, unknown>) => formatTraceOverhead(x as TraceOverheadReport)
        : tables[name];
      if (!values.json && table) console.log(table(r));
      else if (!values.json)
        for (const [k, v] of Object.entries(r)) console.log(k, JSON.stringify(v));
      if (values.json)
        console.log(JSON.stringify({ bench: name, quick: values.quick === true, ...r }));
    })
    .catch((err: unknown) => {
      console.error(err);
      process.exitCode = 1;
    });
}
