/**
 * detector: how often a heartbeat failure detector takes a live host for
 * dead, against how fast it sees a hung one, on heartbeats recorded under the
 * failover benchmark's load.
 *
 * Recording: a nats-server (infra's launcher), three host processes
 * (`cli/ftmesh.ts host`), a client host (capacity 0) in this process sending
 * `add 1` to a `counter` session at 1,000 req/s paced by a 1 ms timer, and a
 * second, idle session so that every host process holds one (only a host
 * holding sessions beats every 5 ms). Every 15 s an extra host process starts
 * (every other one at nice 10 until ready, as the failover bench starts its
 * replacements; the others at the normal priority) and is SIGKILLed 3 s after
 * it is ready. A worker thread of this process, on its own NATS connection
 * like the runtime's liveness worker, records the arrival of every beat on
 * `ftm.hb.*`, beats itself every 5 ms on `ftm.hb.bench-observer` (a 1-byte
 * "slow" beat: the hosts judge it on their slow timeout) and records each of
 * its timer's firings and the echo of its beats. The trace (JSON) goes to the
 * temp directory; `--trace FILE` evaluates a saved one instead.
 *
 * Evaluation, offline, per detector configuration, for each host process:
 * checks run at the observer's recorded timer firings (the liveness worker
 * checks on its beat timer), with the self-echo guard of liveness-worker.mjs
 * when enabled. Every suspicion of a live host is a false one. Hang
 * detection: every 100 ms t, the host is pretended to stop beating at t; the
 * time from t to the first check that would suspect it, the detector frozen
 * in its state at t. A confirmation probe of P ms: a suspicion is a verdict
 * only if no beat of the suspect arrives within P ms after it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, setPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { connect } from '@nats-io/transport-node';
import type { FtmError, MeshClient } from '../runtime/index.ts';
import { PhiAccrualDetector } from '../runtime/phi-accrual.mjs';
import { columns, stats, type Stats } from './stats.ts';

/** Options of {@link runDetectorBench}. */
export type DetectorBenchOptions = {
  quick: boolean;
  /** Recording length (default 10; 0.5 with quick). */
  minutes?: number;
  /** A saved trace to evaluate instead of recording one. */
  trace?: string;
  /**
   * Evaluate only minutes [from, to) of the trace, e.g. `[0, 6]`: on a
   * shared machine, to set apart a stretch where other work ran too.
   */
  window?: [number, number];
};

// ---- the trace ---------------------------------------------------------------------------------

/** Times are ms since `origin` (epoch ms, `performance.timeOrigin + performance.now()`). */
export type Trace = {
  version: 1;
  origin: number;
  intervalMs: number;
  cores: number;
  /** The host processes judged (they live throughout). */
  hosts: string[];
  /** Per host id: arrival of each beat, and whether it said "fast" (1: holds sessions). */
  beats: Record<string, { t: number[]; fast: number[] }>;
  /** The observer's timer firings (every 5 ms, as late as the thread was). */
  ticks: number[];
  /** Arrival of the observer's own beats, one sent per tick. */
  echoes: number[];
  /** GC pauses of the observer's thread and of this process's main thread. */
  gc: { t: number; ms: number; thread: 'observer' | 'main' }[];
  /** Cumulative CPU pressure (`some` stall, µs) of /proc/pressure/cpu, sampled every 100 ms. */
  psi: { t: number[]; someUs: number[] } | null;
  /** 1-minute load average, every 5 s. */
  load: { t: number; load1: number }[];
  /** The extra host processes: started, ready, SIGKILLed, reaped. */
  spawns: {
    id: string;
    niced: boolean;
    spawnAt: number;
    readyAt?: number;
    killAt?: number;
    exitAt?: number;
  }[];
  /** Epoch changes of the sessions as the client saw them: failovers the hosts' own detector made. */
  epochs: { t: number; sid: string; epoch: number; primary: string }[];
  /** Requests sent, answered, failed (timeouts...). */
  requests: { sent: number; answered: number; failed: number };
  /** `[ftmesh` error lines of the host processes. */
  hostErrors: number;
};

const REPO_ROOT = fileURLToPath(new URL('../', import.meta.url));
const INTERVAL_MS = 5;
const HOSTS = 3;
const RATE_PER_S = 1_000;
const SPAWN_EVERY_MS = 15_000;
const SPAWN_LIVES_MS = 3_000;
const READY_WITHIN_MS = 60_000;
const OBSERVER = 'bench-observer';
const PREFIX = 'ftm.hb.';
const SID = 'bench-detector';
const IDLE_SID = 'bench-detector-idle';

const r3 = (x: number) => Math.round(x * 1000) / 1000;

// ---- the observer (a worker thread of this process) --------------------------------------------

type ObserverData = { role: typeof OBSERVER; servers: string; origin: number };
type ObserverResult = Pick<Trace, 'beats' | 'ticks' | 'echoes' | 'gc'>;

/** Runs in the worker: records beats, beats itself, records its ticks and echoes until 'stop'. */
async function observe(d: ObserverData): Promise<void> {
  const port = parentPort!;
  const shift = performance.timeOrigin - d.origin;
  const at = () => performance.now() + shift;
  const nc = await connect({ servers: d.servers, name: `ftm-${OBSERVER}` });
  const beats = new Map<string, { t: number[]; fast: number[] }>();
  const ticks: number[] = [];
  const echoes: number[] = [];
  const gc: ObserverResult['gc'] = [];
  nc.subscribe(`${PREFIX}*`, {
    callback: (_e, m) => {
      const now = at();
      const id = m.subject.slice(PREFIX.length);
      if (id === OBSERVER) {
        echoes.push(now);
        return;
      }
      if (m.data.length === 0) return; // a goodbye
      let b = beats.get(id);
      if (!b) beats.set(id, (b = { t: [], fast: [] }));
      b.t.push(now);
      b.fast.push(m.data[0] === 1 ? 1 : 0);
    },
  });
  const gcs = new PerformanceObserver((list) => {
    for (const e of list.getEntries())
      gc.push({ t: e.startTime + shift, ms: e.duration, thread: 'observer' });
  });
  gcs.observe({ entryTypes: ['gc'] });
  // Slow (0): the hosts judge this beat on their slow timeout and never fail anything over for it.
  const frame = new Uint8Array([0]);
  const timer = setInterval(() => {
    ticks.push(at());
    nc.publish(`${PREFIX}${OBSERVER}`, frame);
  }, INTERVAL_MS);
  await nc.flush();
  port.on('message', (m: string) => {
    if (m !== 'stop') return;
    clearInterval(timer);
    gcs.disconnect();
    nc.publish(`${PREFIX}${OBSERVER}`, new Uint8Array(0));
    void nc
      .flush()
      .then(() => nc.close())
      .catch(() => undefined)
      .then(() => {
        const result: ObserverResult = { beats: Object.fromEntries(beats), ticks, echoes, gc };
        port.postMessage({ type: 'trace', result });
      });
  });
  port.postMessage({ type: 'ready' });
}

if (!isMainThread && (workerData as Partial<ObserverData> | null)?.role === OBSERVER)
  void observe(workerData as ObserverData);

// ---- recording ---------------------------------------------------------------------------------

type Proc = { id: string; child: ChildProcess; pid: number; exited: Promise<number> };

/** Host processes started here; close() SIGKILLs each one still running, by pid. */
class Procs {
  readonly all: Proc[] = [];
  errors = 0;
  private readonly backstop = () => {
    for (const p of this.all) this.signal(p, 'SIGKILL');
  };

  constructor(
    private readonly url: string,
    private readonly clock: () => number,
  ) {
    process.on('exit', this.backstop);
  }

  /** Starts a host process; resolves once it printed `ready <id>`. */
  async start(id: string, nice: boolean): Promise<Proc> {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'cli/ftmesh.ts', 'host', '--nats', this.url, '--id', id],
      { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    if (child.pid === undefined) throw new Error(`could not start host process ${id}`);
    const exited = new Promise<number>((resolve) =>
      child.once('exit', () => resolve(this.clock())),
    );
    const p: Proc = { id, child, pid: child.pid, exited };
    this.all.push(p);
    if (nice) {
      try {
        setPriority(p.pid, 10);
      } catch {
        // Gone already: the wait below says why.
      }
    }
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (chunk: string) => {
      this.errors += chunk.split('\n').filter((l) => l.startsWith('[ftmesh')).length;
    });
    let out = '';
    child.stdout.setEncoding('utf8');
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`host ${id}: not ready after ${READY_WITHIN_MS} ms`)),
        READY_WITHIN_MS,
      );
      child.stdout.on('data', (chunk: string) => {
        out += chunk;
        if (out.split('\n').some((l) => l.trim() === `ready ${id}`)) {
          clearTimeout(timer);
          resolve();
        }
      });
      void exited.then(() => {
        clearTimeout(timer);
        reject(new Error(`host ${id} exited before ready`));
      });
    });
    if (nice) {
      // Back to the normal priority, every thread (the heartbeat worker's too), as the failover bench.
      try {
        for (const tid of readdirSync(`/proc/${p.pid}/task`).map(Number)) setPriority(tid, 0);
      } catch {
        // No /proc or no permission: it stays niced.
      }
    }
    return p;
  }

  signal(p: Proc, sig: NodeJS.Signals): void {
    if (p.child.exitCode !== null || p.child.signalCode !== null) return;
    try {
      process.kill(p.pid, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }

  async close(): Promise<void> {
    for (const p of this.all) this.signal(p, 'SIGKILL');
    await Promise.all(this.all.map((p) => p.exited));
    process.off('exit', this.backstop);
  }
}

/** Calls `fn` every `ms` until it returns true; false after `timeoutMs`. */
async function until(fn: () => boolean, timeoutMs: number, ms = 10): Promise<boolean> {
  const deadline = performance.now() + timeoutMs;
  while (!fn()) {
    if (performance.now() > deadline) return false;
    await sleep(ms);
  }
  return true;
}

/** Records a trace of `minutes`; stops every process and thread it started, also on failure. */
async function record(minutes: number, log: (line: string) => void): Promise<Trace> {
  const { startNatsServer } = await import('../infra/index.ts');
  const { createClient } = await import('../runtime/index.ts');
  const origin = performance.timeOrigin + performance.now();
  const clock = () => performance.timeOrigin + performance.now() - origin;
  const server = await startNatsServer();
  const procs = new Procs(server.url, clock);
  let client: MeshClient | undefined;
  let worker: Worker | undefined;
  const timers: NodeJS.Timeout[] = [];
  const gcs = new PerformanceObserver((list) => {
    for (const e of list.getEntries())
      trace.gc.push({
        t: e.startTime + performance.timeOrigin - origin,
        ms: e.duration,
        thread: 'main',
      });
  });
  const trace: Trace = {
    version: 1,
    origin,
    intervalMs: INTERVAL_MS,
    cores: cpus().length,
    hosts: Array.from({ length: HOSTS }, (_, i) => `h${i + 1}`),
    beats: {},
    ticks: [],
    echoes: [],
    gc: [],
    psi: existsSync('/proc/pressure/cpu') ? { t: [], someUs: [] } : null,
    load: [],
    spawns: [],
    epochs: [],
    requests: { sent: 0, answered: 0, failed: 0 },
    hostErrors: 0,
  };
  try {
    await Promise.all(trace.hosts.map((id) => procs.start(id, false)));
    const c = (client = await createClient({
      nats: server.url,
      onError: (err: FtmError) => console.error(`client: ${err.name}: ${err.message}`),
    }));
    if (!(await until(() => trace.hosts.every((id) => c.liveHosts().includes(id)), 10_000)))
      throw new Error('the client does not hear the host processes');
    await c.placeSession('counter', SID);
    // A second session, idle: its primary is the third host, so that every host beats fast.
    await c.placeSession('counter', IDLE_SID);
    // This very file, in TypeScript: the worker registers tsx itself (on Node 20 the
    // loader hooks of the main thread do not reach a worker).
    const api = JSON.stringify(import.meta.resolve('tsx/esm/api'));
    const self = JSON.stringify(import.meta.url);
    const w = (worker = new Worker(`import(${api}).then((t) => t.tsImport(${self}, ${self}))`, {
      eval: true,
      workerData: { role: OBSERVER, servers: server.url, origin } satisfies ObserverData,
    }));
    const result = new Promise<ObserverResult>((resolve, reject) => {
      w.once('error', reject);
      w.on('message', (m: { type: string; result?: ObserverResult }) => {
        if (m.type === 'trace') resolve(m.result!);
      });
    });
    // Awaited at the end; a failure before then must not end the process before the finally.
    result.catch(() => undefined);
    await new Promise<void>((resolve, reject) => {
      w.once('error', reject);
      w.on('message', (m: { type: string }) => m.type === 'ready' && resolve());
    });
    gcs.observe({ entryTypes: ['gc'] });

    // Samplers: CPU pressure, load average, the sessions' epochs.
    const psi = trace.psi;
    if (psi)
      timers.push(
        setInterval(() => {
          const m = /some .*total=(\d+)/.exec(readFileSync('/proc/pressure/cpu', 'utf8'));
          if (m) {
            psi.t.push(r3(clock()));
            psi.someUs.push(Number(m[1]));
          }
        }, 100),
      );
    const loadNow = () => trace.load.push({ t: r3(clock()), load1: loadavg()[0]! });
    loadNow();
    timers.push(setInterval(loadNow, 5_000));
    const epochs = new Map<string, number>();
    timers.push(
      setInterval(() => {
        for (const sid of [SID, IDLE_SID]) {
          const o = c.owner(sid);
          if (o && o.epoch !== epochs.get(sid)) {
            epochs.set(sid, o.epoch);
            trace.epochs.push({ t: r3(clock()), sid, epoch: o.epoch, primary: o.primary });
          }
        }
      }, 100),
    );

    // The request stream: what is due by now at each 1 ms tick.
    const t0 = performance.now();
    const inflight = new Set<Promise<void>>();
    const req = trace.requests;
    timers.push(
      setInterval(() => {
        const due = Math.floor(((performance.now() - t0) * RATE_PER_S) / 1000);
        while (req.sent < due) {
          const i = req.sent++;
          const p: Promise<void> = c
            .request(SID, 'add', 1, { requestId: `${SID}-${i}`, timeoutMs: 1_000 })
            .then(
              () => void req.answered++,
              () => void req.failed++,
            )
            .finally(() => inflight.delete(p));
          inflight.add(p);
        }
      }, 1),
    );

    // Extra host processes: one every 15 s, SIGKILLed 3 s after it is ready.
    const endAt = clock() + minutes * 60_000;
    let n = 0;
    for (let next = clock() + SPAWN_EVERY_MS / 2; next < endAt - 1_000; next += SPAWN_EVERY_MS) {
      await sleep(Math.max(0, next - clock()));
      const niced = n % 2 === 0;
      const id = `x${++n}`;
      const s: Trace['spawns'][number] = { id, niced, spawnAt: r3(clock()) };
      trace.spawns.push(s);
      const p = await procs.start(id, niced);
      s.readyAt = r3(clock());
      log(
        `${id} (${niced ? 'nice 10' : 'nice 0'}) ready in ${(s.readyAt - s.spawnAt).toFixed(0)} ms`,
      );
      await sleep(SPAWN_LIVES_MS);
      s.killAt = r3(clock());
      procs.signal(p, 'SIGKILL');
      s.exitAt = r3(await p.exited);
    }
    await sleep(Math.max(0, endAt - clock()));
    for (const t of timers) clearInterval(t);
    timers.length = 0;
    loadNow();
    w.postMessage('stop');
    const observed = await result;
    const round = (xs: number[]) => xs.map(r3);
    trace.ticks = round(observed.ticks);
    trace.echoes = round(observed.echoes);
    for (const [id, b] of Object.entries(observed.beats))
      trace.beats[id] = { t: round(b.t), fast: b.fast };
    trace.gc.push(...observed.gc.map((g) => ({ ...g, t: r3(g.t), ms: r3(g.ms) })));
    trace.gc.sort((a, b) => a.t - b.t);
    await Promise.race([Promise.all([...inflight]), sleep(2_000)]);
    trace.hostErrors = procs.errors;
    return trace;
  } finally {
    for (const t of timers) clearInterval(t);
    gcs.disconnect();
    await worker?.terminate();
    await client?.close().catch(() => undefined);
    await procs.close();
    await server.stop();
  }
}

// ---- evaluation --------------------------------------------------------------------------------

/** A detector configuration as evaluated. */
export type DetectorConfig =
  | { kind: 'fixed'; timeoutMs: number; guard: boolean }
  | {
      kind: 'phi';
      threshold: number;
      minStdDeviationMs: number;
      acceptablePauseMs: number;
      maxSamples: number;
      guard: boolean;
    };

/** Figures of one configuration, one confirmation probe (none, or P ms). */
export type ProbeFigures = {
  /** Suspicions of a live host per hour of trace (all hosts). */
  suspicions_per_h: number;
  /** Verdicts (a host declared down) of a live host per hour of trace. */
  false_verdicts_per_h: number;
  false_verdicts: number;
  /** From the pretended hang to the verdict. */
  detect_ms: Stats;
  /** Where the false verdicts happened (see {@link GapCauses}). */
  verdict_causes: GapCauses;
};

export type ConfigReport = {
  name: string;
  config: DetectorConfig;
  none: ProbeFigures;
  probe5: ProbeFigures;
  probe8: ProbeFigures;
};

/** Counts of late gaps (or false verdicts) by what went on meanwhile; not exclusive. */
export type GapCauses = {
  n: number;
  /** An extra host process was starting (spawn → ready + 1 s), at nice 10 / at nice 0. */
  spawn_niced: number;
  spawn_normal: number;
  /** An extra host process was being killed (SIGKILL → reaped + 100 ms). */
  kill: number;
  /** Neither. */
  quiet: number;
  /** Every other host was silent too (middle of the gap): a machine-wide or observer-side stall. */
  all_silent: number;
  /** This host alone was silent: the others' beats kept arriving. */
  alone: number;
  /** The observer's own timer fired > 10 ms late during the gap. */
  observer_stalled: number;
  /** The observer thread collected garbage during the gap. */
  observer_gc: number;
};

export type DetectorReport = {
  trace_file: string;
  trace_minutes: number;
  hosts: number;
  /** 1-minute load average over the recording: first, mean, max. */
  load: { first: number; mean: number; max: number };
  cores: number;
  spawns: number;
  requests: Trace['requests'];
  /** Failovers the hosts' own (25 ms) detectors made during the recording: all spurious. */
  epoch_changes: number;
  host_errors: number;
  /** Inter-arrival of the judged hosts' beats, and the observer's tick lateness and echo delay. */
  interarrival_ms: Stats;
  tick_late_ms: Stats;
  echo_delay_ms: Stats;
  /** Gaps between two beats of a host longer than 15 / 25 ms, by what went on meanwhile. */
  late_gaps: { over15: GapCauses; over25: GapCauses };
  /** CPU pressure (% of time some task waited for a CPU) overall and at the gaps > 15 ms. */
  cpu_pressure_pct: { overall: number; at_late_gaps_p50: number };
  configs: ConfigReport[];
  /**
   * Per probe (none, 5 ms, 8 ms), among the configurations with the self-echo
   * guard: the one with no false verdict over the trace that detects a hang
   * soonest (p99, then max); and the one with hang detection p99 ≤ 30 ms
   * with the fewest false verdicts.
   */
  best: Record<'none' | 'probe5' | 'probe8', { no_false: string | null; p99_30: string | null }>;
};

/** Index of the first element of sorted `xs` greater than `t`. */
function firstAfter(xs: readonly number[], t: number): number {
  let lo = 0;
  let hi = xs.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (xs[mid]! <= t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The guard of liveness-worker.mjs at each tick: the tick itself late, or our own echo late. */
function guardAt(trace: Trace, lateMs: number): Uint8Array {
  const { ticks, echoes } = trace;
  const g = new Uint8Array(ticks.length);
  let e = 0;
  let lastEcho = ticks[0] ?? 0;
  for (let k = 1; k < ticks.length; k++) {
    const now = ticks[k]!;
    while (e < echoes.length && echoes[e]! < now) lastEcho = echoes[e++]!;
    g[k] = now - ticks[k - 1]! > lateMs || now - lastEcho > lateMs ? 1 : 0;
  }
  return g;
}

export const configName = (c: DetectorConfig): string =>
  c.kind === 'fixed'
    ? `fixed ${c.timeoutMs} ms${c.guard ? ' + guard' : ''}`
    : `phi ${c.threshold} sd>=${c.minStdDeviationMs} pause ${c.acceptablePauseMs}` +
      `${c.maxSamples === 200 ? '' : ` n=${c.maxSamples}`}${c.guard ? ' + guard' : ''}`;

/**
 * The guard's "late": as the liveness worker, the period plus half the
 * timeout; for phi, half the suspicion delay of a steady history (the mean
 * interval, the pause and the threshold's deviations at the floor).
 */
function guardLate(c: DetectorConfig): number {
  if (c.kind === 'fixed') return INTERVAL_MS + c.timeoutMs / 2;
  const steady = new PhiAccrualDetector({ ...c, firstIntervalMs: INTERVAL_MS });
  for (let i = 0; i <= c.maxSamples + 2; i++) steady.heartbeat('x', i * INTERVAL_MS);
  return INTERVAL_MS + steady.suspicionAtMs('x')! / 2;
}

type HostRun = {
  verdicts: { host: string; from: number; at: number }[];
  suspicions: number;
  detect: number[];
};

/**
 * Runs one configuration over one host's beats: checks at every observer
 * tick, the guard as given; a verdict removes the host until its next beat,
 * as the liveness worker does.
 */
function simulate(
  trace: Trace,
  host: string,
  config: DetectorConfig,
  guard: Uint8Array,
  probeMs: number | undefined,
  hangEveryMs: number,
): HostRun {
  const { ticks } = trace;
  const beats = trace.beats[host] ?? { t: [], fast: [] };
  const det =
    config.kind === 'phi'
      ? new PhiAccrualDetector({
          threshold: config.threshold,
          minStdDeviationMs: config.minStdDeviationMs,
          acceptablePauseMs: config.acceptablePauseMs,
          maxSamples: config.maxSamples,
          firstIntervalMs: INTERVAL_MS,
        })
      : undefined;
  const limit = () =>
    det ? det.suspicionAtMs(host)! : (config as { timeoutMs: number }).timeoutMs;
  const out: HostRun = { verdicts: [], suspicions: 0, detect: [] };
  let tracked = false;
  let last = 0;
  let excused = -Infinity;
  /** A suspicion waiting for its probe: the verdict falls at `verdictAt` unless a beat comes first. */
  let pending: { from: number; verdictAt: number } | undefined;
  const useGuard = config.guard;
  const end = ticks.at(-1) ?? 0;
  const firstHang = (ticks[0] ?? 0) + 1_000;
  let nextHang = firstHang;
  let i = 0;
  const untrack = () => {
    tracked = false;
    pending = undefined;
    det?.remove(host);
  };
  const verdict = (from: number, at: number) => {
    out.verdicts.push({ host, from, at });
    untrack();
  };
  /** From t, the host silent for good: when the first check suspects it (+ the probe). */
  const hangAt = (t: number): number | undefined => {
    // A suspicion awaiting its probe: the probe times out (the host is silent for good).
    if (pending) return pending.verdictAt > t ? pending.verdictAt - t : undefined;
    const s = limit();
    let ex = excused;
    for (let k = firstAfter(ticks, t); k < ticks.length; k++) {
      const c = ticks[k]!;
      if (useGuard && guard[k]) {
        ex = Math.max(ex, c - INTERVAL_MS);
        continue;
      }
      if (c - Math.max(last, ex) > s) return c + (probeMs ?? 0) - t;
    }
    return undefined;
  };
  for (let k = 0; k < ticks.length; k++) {
    const c = ticks[k]!;
    // Beats first, up to this check.
    while (i < beats.t.length && beats.t[i]! <= c) {
      const b = beats.t[i]!;
      const fast = beats.fast[i] === 1;
      i++;
      while (nextHang < b) {
        if (tracked && nextHang < end - 1_000) {
          const d = hangAt(nextHang);
          if (d !== undefined) out.detect.push(d);
        }
        nextHang += hangEveryMs;
      }
      if (pending && pending.verdictAt < b) verdict(pending.from, pending.verdictAt);
      pending = undefined;
      if (!fast) {
        // A host without sessions: judged on the slow timeout, not here.
        if (tracked) untrack();
        continue;
      }
      det?.heartbeat(host, b);
      last = b;
      excused = -Infinity;
      tracked = true;
    }
    while (nextHang < c) {
      if (tracked && nextHang < end - 1_000) {
        const d = hangAt(nextHang);
        if (d !== undefined) out.detect.push(d);
      }
      nextHang += hangEveryMs;
    }
    if (pending && pending.verdictAt <= c) verdict(pending.from, pending.verdictAt);
    if (!tracked || pending) continue;
    if (useGuard && guard[k]) {
      excused = Math.max(excused, c - INTERVAL_MS);
      continue;
    }
    if (c - Math.max(last, excused) > limit()) {
      out.suspicions++;
      if (probeMs === undefined) verdict(last, c);
      else pending = { from: last, verdictAt: c + probeMs };
    }
  }
  return out;
}

/** What went on during [from, to] on `host`'s side and around it. */
class Causes {
  private readonly gcObserver: Trace['gc'];
  constructor(private readonly trace: Trace) {
    this.gcObserver = trace.gc.filter((g) => g.thread === 'observer');
  }

  empty(): GapCauses {
    return {
      n: 0,
      spawn_niced: 0,
      spawn_normal: 0,
      kill: 0,
      quiet: 0,
      all_silent: 0,
      alone: 0,
      observer_stalled: 0,
      observer_gc: 0,
    };
  }

  add(into: GapCauses, host: string, from: number, to: number): void {
    const t = this.trace;
    into.n++;
    const overlaps = (a: number, b: number) => a <= to && b >= from;
    let busy = false;
    if (t.spawns.some((s) => s.niced && overlaps(s.spawnAt, (s.readyAt ?? Infinity) + 1_000))) {
      into.spawn_niced++;
      busy = true;
    }
    if (t.spawns.some((s) => !s.niced && overlaps(s.spawnAt, (s.readyAt ?? Infinity) + 1_000))) {
      into.spawn_normal++;
      busy = true;
    }
    if (
      t.spawns.some(
        (s) => s.killAt !== undefined && overlaps(s.killAt, (s.exitAt ?? Infinity) + 100),
      )
    ) {
      into.kill++;
      busy = true;
    }
    if (!busy) into.quiet++;
    // The others, in the middle of this gap (a beat period off either end).
    const others = t.hosts.filter((h) => h !== host && t.beats[h]);
    const lo = from + INTERVAL_MS;
    const hi = to - INTERVAL_MS;
    const silent = others.filter((h) => {
      const bt = t.beats[h]!.t;
      const j = firstAfter(bt, lo);
      return !(j < bt.length && bt[j]! < hi);
    }).length;
    if (others.length && silent === others.length) into.all_silent++;
    if (silent === 0) into.alone++;
    const k0 = firstAfter(t.ticks, from);
    const k1 = firstAfter(t.ticks, to);
    for (let k = Math.max(1, k0); k <= Math.min(k1, t.ticks.length - 1); k++)
      if (t.ticks[k]! - t.ticks[k - 1]! > INTERVAL_MS + 10) {
        into.observer_stalled++;
        break;
      }
    if (this.gcObserver.some((g) => overlaps(g.t, g.t + g.ms))) into.observer_gc++;
  }
}

/** The default grid: fixed timeouts as today, and phi around the defaults. */
export function defaultConfigs(): DetectorConfig[] {
  const out: DetectorConfig[] = [];
  for (const guard of [true, false])
    for (const timeoutMs of [15, 20, 25, 30]) out.push({ kind: 'fixed', timeoutMs, guard });
  for (const guard of [true, false])
    for (const threshold of [4, 8, 12])
      for (const minStdDeviationMs of [1, 2, 3])
        for (const acceptablePauseMs of [0, 5, 10])
          out.push({
            kind: 'phi',
            threshold,
            minStdDeviationMs,
            acceptablePauseMs,
            maxSamples: 200,
            guard,
          });
  for (const maxSamples of [50, 1_000])
    out.push({
      kind: 'phi',
      threshold: 8,
      minStdDeviationMs: 2,
      acceptablePauseMs: 5,
      maxSamples,
      guard: true,
    });
  return out;
}

/** New epochs within the trace's ticks (a session's first record says epoch 1). */
function epochChanges(trace: Trace): number {
  const from = trace.ticks[0] ?? 0;
  const before = new Map<string, number>();
  let n = 0;
  for (const e of trace.epochs) {
    if (e.t >= from) n += e.epoch - (before.get(e.sid) ?? 1);
    before.set(e.sid, e.epoch);
  }
  return n;
}

/** Evaluates every configuration over a trace. */
export function evaluate(
  trace: Trace,
  file: string,
  configs: DetectorConfig[] = defaultConfigs(),
): DetectorReport {
  const { ticks } = trace;
  const hours = ((ticks.at(-1) ?? 0) - (ticks[0] ?? 0)) / 3_600_000;
  const perH = (n: number) => Math.round((n / hours) * 10) / 10;
  const causes = new Causes(trace);
  const guards = new Map<number, Uint8Array>();
  const configsOut: ConfigReport[] = configs.map((config) => {
    const late = guardLate(config);
    if (!guards.has(late)) guards.set(late, guardAt(trace, late));
    const guard = guards.get(late)!;
    const figures = (probeMs: number | undefined): ProbeFigures => {
      const runs = trace.hosts.map((h) => simulate(trace, h, config, guard, probeMs, 100));
      const verdicts = runs.flatMap((r) => r.verdicts);
      const where = causes.empty();
      for (const v of verdicts) causes.add(where, v.host, v.from, v.at);
      return {
        suspicions_per_h: perH(runs.reduce((s, r) => s + r.suspicions, 0)),
        false_verdicts_per_h: perH(verdicts.length),
        false_verdicts: verdicts.length,
        detect_ms: stats(runs.flatMap((r) => r.detect)),
        verdict_causes: where,
      };
    };
    return {
      name: configName(config),
      config,
      none: figures(undefined),
      probe5: figures(5),
      probe8: figures(8),
    };
  });

  // The raw material of every false suspicion: long gaps between two beats of a live host.
  const gaps = { over15: causes.empty(), over25: causes.empty() };
  const inter: number[] = [];
  const gapEnds: number[] = [];
  for (const h of trace.hosts) {
    const b = trace.beats[h];
    if (!b) continue;
    for (let i = 1; i < b.t.length; i++) {
      if (!b.fast[i] || !b.fast[i - 1]) continue;
      const d = b.t[i]! - b.t[i - 1]!;
      inter.push(d);
      if (d > 15) {
        causes.add(gaps.over15, h, b.t[i - 1]!, b.t[i]!);
        gapEnds.push(b.t[i]!);
      }
      if (d > 25) causes.add(gaps.over25, h, b.t[i - 1]!, b.t[i]!);
    }
  }
  const tickLate: number[] = [];
  for (let k = 1; k < ticks.length; k++)
    tickLate.push(Math.max(0, ticks[k]! - ticks[k - 1]! - INTERVAL_MS));
  // One echo per tick, in order (a lost one would shift the pairs: paired only when the counts match).
  const echoDelay: number[] = [];
  const n = Math.min(ticks.length, trace.echoes.length);
  if (Math.abs(ticks.length - trace.echoes.length) <= 1)
    for (let k = 0; k < n; k++) echoDelay.push(trace.echoes[k]! - ticks[k]!);
  // CPU pressure: per 100 ms sample, the share of it some task waited.
  let overall = NaN;
  let atGaps = NaN;
  const psi = trace.psi;
  if (psi && psi.t.length > 1) {
    const span = psi.t.at(-1)! - psi.t[0]!;
    overall = (psi.someUs.at(-1)! - psi.someUs[0]!) / 1_000 / span;
    const at = gapEnds.flatMap((t) => {
      const j = firstAfter(psi.t, t);
      if (j <= 0 || j >= psi.t.length) return [];
      return [(psi.someUs[j]! - psi.someUs[j - 1]!) / 1_000 / (psi.t[j]! - psi.t[j - 1]!)];
    });
    atGaps = stats(at).p50;
  }
  const best = (p: 'none' | 'probe5' | 'probe8') => {
    const guarded = configsOut.filter((c) => c.config.guard && c[p].detect_ms.n > 0);
    const soonest = guarded
      .filter((c) => c[p].false_verdicts === 0)
      .sort(
        (a, b) =>
          a[p].detect_ms.p99 - b[p].detect_ms.p99 || a[p].detect_ms.max - b[p].detect_ms.max,
      )[0];
    const fewest = guarded
      .filter((c) => c[p].detect_ms.p99 <= 30)
      .sort(
        (a, b) =>
          a[p].false_verdicts - b[p].false_verdicts || a[p].detect_ms.p99 - b[p].detect_ms.p99,
      )[0];
    return { no_false: soonest?.name ?? null, p99_30: fewest?.name ?? null };
  };
  const loads = trace.load.map((l) => l.load1);
  const round2 = (x: number) => Math.round(x * 100) / 100;
  return {
    trace_file: file,
    trace_minutes: round2(hours * 60),
    hosts: trace.hosts.length,
    load: {
      first: round2(loads[0] ?? NaN),
      mean: round2(loads.reduce((s, x) => s + x, 0) / loads.length),
      max: round2(Math.max(...loads)),
    },
    cores: trace.cores,
    spawns: trace.spawns.length,
    requests: trace.requests,
    epoch_changes: epochChanges(trace),
    host_errors: trace.hostErrors,
    interarrival_ms: stats(inter),
    tick_late_ms: stats(tickLate),
    echo_delay_ms: stats(echoDelay),
    late_gaps: gaps,
    cpu_pressure_pct: { overall: round2(overall * 100), at_late_gaps_p50: round2(atGaps * 100) },
    configs: configsOut,
    best: { none: best('none'), probe5: best('probe5'), probe8: best('probe8') },
  };
}

// ---- entry points --------------------------------------------------------------------------------

/** Records a trace (or reads `--trace FILE`) and evaluates the detector configurations over it. */
export async function runDetectorBench(options: DetectorBenchOptions): Promise<DetectorReport> {
  const log = (line: string) => console.error(`[detector] ${line}`);
  let trace: Trace;
  let file: string;
  if (options.trace) {
    file = options.trace;
    trace = JSON.parse(readFileSync(file, 'utf8')) as Trace;
  } else {
    const minutes = options.minutes ?? (options.quick ? 0.5 : 10);
    log(
      `recording ${minutes} min; load average ${loadavg()
        .map((x) => x.toFixed(2))
        .join(' ')}`,
    );
    trace = await record(minutes, log);
    file = join(tmpdir(), `ftmesh-detector-trace-${process.pid}-${Date.now()}.json`);
    writeFileSync(file, JSON.stringify(trace));
    log(`trace saved: ${file}`);
  }
  if (options.window) {
    trace = windowOf(trace, options.window[0] * 60_000, options.window[1] * 60_000);
    file = `${file} (minutes ${options.window[0]} to ${options.window[1]})`;
  }
  return evaluate(trace, file);
}

/** The part of a trace within [from, to) ms. */
export function windowOf(trace: Trace, from: number, to: number): Trace {
  const inside = (t: number) => t >= from && t < to;
  const beats: Trace['beats'] = {};
  for (const [id, b] of Object.entries(trace.beats)) {
    const keep = b.t.map(inside);
    beats[id] = { t: b.t.filter((_, i) => keep[i]), fast: b.fast.filter((_, i) => keep[i]) };
  }
  const psi = trace.psi;
  const keepPsi = psi?.t.map(inside) ?? [];
  return {
    ...trace,
    beats,
    ticks: trace.ticks.filter(inside),
    echoes: trace.echoes.filter(inside),
    gc: trace.gc.filter((g) => inside(g.t)),
    psi: psi && {
      t: psi.t.filter((_, i) => keepPsi[i]),
      someUs: psi.someUs.filter((_, i) => keepPsi[i]),
    },
    load: trace.load.filter((l) => inside(l.t)),
    spawns: trace.spawns.filter((s) => s.spawnAt < to && (s.exitAt ?? Infinity) >= from),
    epochs: trace.epochs.filter((e) => e.t < to),
  };
}

/** The human-readable table of a {@link DetectorReport}. */
export function formatDetectorReport(r: DetectorReport, quick: boolean): string {
  const f = (x: number) => (Number.isNaN(x) ? '-' : x >= 100 ? x.toFixed(0) : x.toFixed(1));
  const three = (s: Stats) => `${f(s.p50)} / ${f(s.p99)} / ${f(s.max)}`;
  const rows = [
    [
      'detector (checks every 5 ms)',
      'susp/h',
      'verdicts/h P=5',
      'P=8',
      'detect ms p50/p99/max',
      'P=5',
      'P=8',
    ],
    ...r.configs.map((c) => [
      c.name,
      f(c.none.false_verdicts_per_h),
      f(c.probe5.false_verdicts_per_h),
      f(c.probe8.false_verdicts_per_h),
      three(c.none.detect_ms),
      three(c.probe5.detect_ms),
      three(c.probe8.detect_ms),
    ]),
  ];
  const g = (c: GapCauses) =>
    `${c.n} (spawn at nice 10 ${c.spawn_niced}, spawn at nice 0 ${c.spawn_normal}, kill ${c.kill}, ` +
    `none of these ${c.quiet}; every other host silent too ${c.all_silent}, this host alone ${c.alone}; ` +
    `observer stalled ${c.observer_stalled}, observer GC ${c.observer_gc})`;
  return [
    `detector benchmark${quick ? ' (--quick: indicative only)' : ''}: ${r.trace_minutes} min of beats ` +
      `from ${r.hosts} host processes under ${r.requests.sent} requests (${r.requests.failed} failed), ` +
      `${r.spawns} extra processes started and killed; load average ${r.load.first} at the start, ` +
      `mean ${r.load.mean}, max ${r.load.max} on ${r.cores} cores`,
    `trace: ${r.trace_file}`,
    `beat inter-arrival ms p50/p99/max ${three(r.interarrival_ms)}; observer tick late ${three(r.tick_late_ms)}; ` +
      `own echo ${three(r.echo_delay_ms)}`,
    `CPU pressure ${r.cpu_pressure_pct.overall} % overall, p50 ${r.cpu_pressure_pct.at_late_gaps_p50} % ` +
      `in the 100 ms of a gap > 15 ms; failovers the hosts' 25 ms detector made: ${r.epoch_changes}`,
    `gaps > 15 ms: ${g(r.late_gaps.over15)}`,
    `gaps > 25 ms: ${g(r.late_gaps.over25)}`,
    '',
    columns(rows, 1),
    '',
    'with the guard, no false verdict and the soonest p99 / the fewest false verdicts with p99 <= 30 ms:',
    ...(['none', 'probe5', 'probe8'] as const).map(
      (p) =>
        `  ${{ none: 'no probe', probe5: '5 ms probe', probe8: '8 ms probe' }[p]}: ` +
        `${r.best[p].no_false ?? '-'} / ${r.best[p].p99_30 ?? '-'}`,
    ),
    'where the false verdicts (no probe) fell:',
    ...r.configs
      .filter((c) => c.none.false_verdicts > 0 && (c.config.guard || c.config.kind === 'fixed'))
      .map((c) => `  ${c.name}: ${g(c.none.verdict_causes)}`),
  ].join('\n');
}
