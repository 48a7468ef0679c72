/**
 * failover: how long a session is out of service when its primary's process
 * dies (SIGKILL: a crash) or hangs (SIGSTOP), under a steady request stream.
 *
 * Each phase (crash, hang) gets its own nats-server (infra's launcher, free
 * ports), three host processes (`cli/ftmesh.ts host`) and, in this process, a
 * client host (capacity 0) that sends `add 1` to one `counter` session at a
 * fixed rate, paced by a timer, each request with its own id and a timed-out
 * one sent again with the same id. Then, repeatedly: signal the primary's
 * process, wait for the new primary's failover record, SIGKILL the victim (a
 * hung one too, once measured), start a replacement process so that a new
 * primary always finds a host for its new standby, let the stream settle.
 * When the runtime leaves the session without a standby (a live standby
 * taken for dead, and no other host to re-protect with), the next fault would
 * test a cold restore instead: that round ends and a fresh one starts.
 *
 * Every time is `performance.timeOrigin + performance.now()`: the runtime's
 * failover records use the same clock (`preciseNow`), so times taken here and
 * in the host processes of this machine compare directly.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, setPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { startNatsServer } from '../infra/index.ts';
import {
  createClient,
  RequestTimeoutError,
  type FailoverRecord,
  type FtmError,
  type MeshClient,
  type OwnerRecord,
} from '../runtime/index.ts';
import { columns, stats, type Stats } from './stats.ts';

/** Options of {@link runFailoverBench}. */
export type FailoverBenchOptions = { quick: boolean };

/** Percentiles in ms (or a count); NaN (null in JSON) when there is no sample. */
export type { Stats };

/** One phase: the same fault, repeated. */
export type PhaseReport = {
  signal: 'SIGKILL' | 'SIGSTOP';
  /** Rounds run: each its own server, host processes and session (see {@link runFailoverBench}). */
  rounds: number;
  /** Faults injected, and failovers measured (a record with every timestamp). */
  faults: number;
  failovers: number;
  /** New epochs with no fault injected: a live primary taken for dead. */
  spurious_failovers: number;
  /** Suspicions of a live host that its probe answered: no verdict, no failover. */
  false_suspicions: number;
  /** How the new primary learnt of the fault, per failover. */
  causes: Record<string, number>;
  /**
   * SIGKILL → the killed process is reaped (its 'exit' here): only then has
   * the kernel closed its sockets, so no detector can see a crash sooner.
   * No sample for a hang.
   */
  kill_to_exit_ms: Stats;
  kill_to_detect_ms: Stats;
  kill_to_promote_ms: Stats;
  kill_to_replayed_ms: Stats;
  /** The new primary committed its first reply (record.firstReplyAt). */
  kill_to_primary_first_reply_ms: Stats;
  /** The client received the first reply the new primary committed. */
  kill_to_first_reply_ms: Stats;
  kill_to_reprotected_ms: Stats;
  /** Longest gap between consecutive replies at the client around the failover. */
  max_reply_gap_ms: Stats;
  /** The parts of kill → first reply received; they add up to it. */
  steps_ms: { detect: Stats; cas: Stats; attach_and_replay: Stats; release: Stats };
  /** Inputs the new primary ran again (no commit covered them). */
  replayed: Stats;
  /** Over every round. */
  requests: number;
  retries: number;
  /** Requests with no reply after every retry. */
  unanswered: number;
  /** Values 1..requests that no reply carried, and values more than one reply carried. */
  lost: number;
  duplicated: number;
  /** The sum of each round's final state: equals `requests` when every add applied once. */
  final_state: number | null;
  /** No round ended with primary and standby differing (rounds not compared aside). */
  replicas_equal: boolean;
  /** Rounds whose primary and standby were not compared: no standby at the end, or no answer. */
  rounds_not_compared: number;
  /** Error lines the host processes and the client host reported. */
  host_errors: number;
  client_errors: number;
  anomalies: string[];
};

export type FailoverReport = {
  rate_per_s: number;
  hosts: number;
  /** The machine's 1-minute load average before each phase: other work skews every figure. */
  load_before: { crash: number; hang: number };
  crash: PhaseReport;
  hang: PhaseReport;
};

const REPO_ROOT = fileURLToPath(new URL('../', import.meta.url));
/** Host processes kept alive: primary, standby, and one for a new primary's new standby. */
const HOSTS = 3;
const RATE_PER_S = 1_000;
const REQUEST_TIMEOUT_MS = 1_000;
const MAX_RETRIES = 10;
/** Replies before the first fault, and between a replacement host being heard and the next fault. */
const WARM_MS = 500;
const SETTLE_MS = 250;
/** The reply gap is looked for from the kill until at least this long after it. */
const GAP_WINDOW_MS = 200;
/**
 * Before a fault the session must have a live standby. Re-protection takes
 * well under a second; a session still without one after this long stays so
 * (the runtime does not retry it) and the round ends.
 */
const PROTECTED_WITHIN_MS = 2_000;
/** A niced replacement on a busy machine may take this long to start. */
const READY_WITHIN_MS = 60_000;
const SID = 'bench-failover';

/** Same clock as the runtime's `preciseNow`. */
const now = (): number => performance.timeOrigin + performance.now();

/** Calls `fn` every `intervalMs` until it returns something; undefined after `timeoutMs`. */
async function poll<T>(
  fn: () => T | undefined | Promise<T | undefined>,
  timeoutMs: number,
  intervalMs = 2,
): Promise<T | undefined> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (performance.now() >= deadline) return undefined;
    await sleep(intervalMs);
  }
}

// ---- host processes ---------------------------------------------------------------------

type HostProcess = {
  id: string;
  child: ChildProcess;
  pid: number;
  /** Resolves with the time the process was reaped. */
  exited: Promise<number>;
  stderr: string[];
  /** Its `--trace` lines: each ownership decision, timed. */
  trace: string[];
};

/**
 * The host processes of one round, by host id. close() SIGKILLs whatever
 * still runs; 'exit', SIGINT and SIGTERM handlers do the same if the bench
 * ends first.
 */
class HostProcesses {
  readonly byId = new Map<string, HostProcess>();
  /** Processes killed so far, kept for their error lines. */
  private readonly dead: HostProcess[] = [];
  private started = 0;
  private readonly backstop = () => {
    for (const p of this.byId.values()) this.signal(p, 'SIGKILL');
  };
  /** Ctrl-C would leave a SIGSTOPped host stopped for ever: kill them all, then exit. */
  private readonly interrupted = (sig: NodeJS.Signals) => {
    this.backstop();
    process.exit(sig === 'SIGINT' ? 130 : 143); // 'exit' handlers stop the nats-server
  };

  constructor(private readonly natsUrl: string) {
    process.on('exit', this.backstop);
    process.on('SIGINT', this.interrupted);
    process.on('SIGTERM', this.interrupted);
  }

  /** Replacements that could not be given back the normal priority (not root). */
  stayedNiced = 0;

  /**
   * Starts `node --import tsx cli/ftmesh.ts host`; resolves once it printed
   * `ready <id>`. `nice`: start at a low priority and return to the normal
   * one once ready. A Node + tsx start-up takes a core for 1-2 s; on a small
   * machine it would starve the running hosts' heartbeats, which a real
   * deployment (a new host on another machine) would not.
   */
  async start(nice = false): Promise<HostProcess> {
    const id = `h${++this.started}`;
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'cli/ftmesh.ts', 'host', '--nats', this.natsUrl, '--id', id, '--trace'],
      { cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    if (child.pid === undefined) throw new Error(`could not start host process ${id}`);
    if (nice) {
      try {
        setPriority(child.pid, 10);
      } catch {
        // Gone already: the ready wait below reports why.
      }
    }
    const stderr: string[] = [];
    const trace: string[] = [];
    child.stderr.setEncoding('utf8');
    let partial = '';
    child.stderr.on('data', (chunk: string) => {
      const lines = (partial + chunk).split('\n');
      partial = lines.pop()!;
      for (const line of lines) {
        if (line.startsWith('[ftmesh-trace')) trace.push(line);
        else if (line.trim()) stderr.push(line);
      }
      if (stderr.length > 1_000) stderr.splice(0, stderr.length - 1_000);
      if (trace.length > 20_000) trace.splice(0, trace.length - 20_000);
    });
    const exited = new Promise<number>((resolve) => child.once('exit', () => resolve(now())));
    const p: HostProcess = { id, child, pid: child.pid, exited, stderr, trace };
    this.byId.set(id, p);
    void exited.then(() => {
      // The pid may be reused once the process is gone: never signal it again.
      if (this.byId.get(id) === p) this.byId.delete(id);
    });
    let out = '';
    child.stdout.setEncoding('utf8');
    const ready = new Promise<void>((resolve, reject) => {
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
        reject(new Error(`host ${id} exited before ready: ${stderr.slice(-5).join(' | ')}`));
      });
    });
    await ready;
    if (nice) {
      // A priority belongs to a thread on Linux: the heartbeat worker thread
      // started niced too and must not stay so (it would miss its beats).
      let tids = [p.pid];
      try {
        tids = readdirSync(`/proc/${p.pid}/task`).map(Number);
      } catch {
        // No /proc: the main thread is what we can reach.
      }
      try {
        for (const tid of tids) setPriority(tid, 0);
      } catch {
        this.stayedNiced++;
      }
    }
    return p;
  }

  signal(p: HostProcess, sig: NodeJS.Signals): void {
    if (p.child.exitCode !== null || p.child.signalCode !== null) return;
    try {
      process.kill(p.pid, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  }

  async kill(p: HostProcess): Promise<void> {
    this.signal(p, 'SIGKILL');
    await p.exited;
    this.dead.push(p);
  }

  /** The `[ftmesh ...]` error lines every process of the phase wrote. */
  errorLines(): string[] {
    return [...this.dead, ...this.byId.values()].flatMap((p) =>
      p.stderr.filter((l) => l.startsWith('[ftmesh')),
    );
  }

  /** Every process's trace lines, in time order. */
  traceLines(): string[] {
    const at = (l: string) => Number(/^\[ftmesh-trace \S* ([\d.]+)\]/.exec(l)?.[1] ?? 0);
    return [...this.dead, ...this.byId.values()]
      .flatMap((p) => p.trace)
      .sort((a, b) => at(a) - at(b));
  }

  /** SIGKILLs every process still running (no drain: the bench is over); resolves once gone. */
  async close(): Promise<void> {
    const left = [...this.byId.values()];
    await Promise.all(left.map((p) => this.kill(p)));
    process.off('exit', this.backstop);
    process.off('SIGINT', this.interrupted);
    process.off('SIGTERM', this.interrupted);
  }
}

// ---- the request stream -------------------------------------------------------------------

/** `add 1` requests at a fixed rate, paced by a 1 ms timer; what came back and when. */
class RequestStream {
  /** The reply of request i, once answered. */
  readonly replies: (number | undefined)[] = [];
  /** Arrival time and value of each reply, in arrival order. */
  readonly arrivals: number[] = [];
  readonly values: number[] = [];
  retries = 0;
  unanswered = 0;
  readonly failures: string[] = [];
  private sent = 0;
  private t0 = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly inflight = new Set<Promise<void>>();

  constructor(
    private readonly client: MeshClient,
    private readonly sid: string,
    private readonly ratePerS: number,
  ) {}

  get count(): number {
    return this.sent;
  }

  start(): void {
    this.t0 = performance.now();
    // Each tick sends what is due by now: the rate holds even when ticks come late.
    this.timer = setInterval(() => {
      const due = Math.floor(((performance.now() - this.t0) * this.ratePerS) / 1000);
      while (this.sent < due) this.send(this.sent++);
    }, 1);
  }

  /** Stops sending at once (safe twice); requests in flight go on. */
  halt(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private send(i: number): void {
    const p: Promise<void> = this.one(i).finally(() => this.inflight.delete(p));
    this.inflight.add(p);
  }

  private async one(i: number): Promise<void> {
    const requestId = `${this.sid}-${i}`;
    for (let attempt = 0; ; attempt++) {
      try {
        const v = (await this.client.request(this.sid, 'add', 1, {
          requestId,
          timeoutMs: REQUEST_TIMEOUT_MS,
        })) as number;
        this.replies[i] = v;
        this.arrivals.push(now());
        this.values.push(v);
        return;
      } catch (err) {
        if (err instanceof RequestTimeoutError && attempt < MAX_RETRIES) {
          this.retries++;
          continue;
        }
        this.unanswered++;
        if (this.failures.length < 5) this.failures.push(`${requestId}: ${String(err)}`);
        return;
      }
    }
  }

  /** Stops sending; resolves once every request sent has its reply or gave up. */
  async stop(): Promise<void> {
    this.halt();
    while (this.inflight.size) await Promise.all([...this.inflight]);
  }
}

/** Each of n adds applied once gives the replies 1..n, each once. */
function exactlyOnce(
  replies: readonly (number | undefined)[],
  n: number,
): { lost: number; duplicated: number } {
  const seen = new Map<number, number>();
  for (const r of replies) if (r !== undefined) seen.set(r, (seen.get(r) ?? 0) + 1);
  let lost = 0;
  for (let v = 1; v <= n; v++) if (!seen.has(v)) lost++;
  let duplicated = 0;
  // A value seen twice, or one beyond n (more adds applied than sent), is an add applied twice.
  for (const [v, k] of seen) duplicated += v < 1 || v > n ? k : k - 1;
  return { lost, duplicated };
}

// ---- one round, one phase ---------------------------------------------------------------------

/** One fault as measured: the new primary's record, and what the client saw. */
type Sample = FailoverRecord & {
  killAt: number;
  /** The killed process was reaped (crashes only). */
  exitAt: number | undefined;
  clientAt: number | undefined;
  gap: number;
};

/** What one round (its own server, host processes and session) measured. */
type Round = {
  samples: Sample[];
  faults: number;
  spurious: number;
  falseSuspicions: number;
  /** The round ended before its faults: no primary with a live standby to fault. */
  stuck: boolean;
  requests: number;
  retries: number;
  unanswered: number;
  lost: number;
  duplicated: number;
  final: number | null;
  /** Whether primary and standby ended equal; undefined when not compared (no standby...). */
  replicasEqual: boolean | undefined;
  hostErrors: string[];
  clientErrors: string[];
  stayedNiced: number;
  anomalies: string[];
};

/** Index of the first arrival later than `t`. */
function firstAfter(arrivals: readonly number[], t: number): number {
  let lo = 0;
  let hi = arrivals.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (arrivals[mid]! <= t) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * Starts a nats-server, host processes and a client, places the session,
 * starts the stream and injects up to `faults` faults; stops everything it
 * started, also on error.
 */
async function round(kind: 'crash' | 'hang', faults: number, tag: string): Promise<Round> {
  const signal = kind === 'crash' ? 'SIGKILL' : 'SIGSTOP';
  const anomalies: string[] = [];
  const note = (what: string) => anomalies.push(`${tag}${what}`);
  const clientErrors: string[] = [];
  const server = await startNatsServer();
  const procs = new HostProcesses(server.url);
  let client: MeshClient | undefined;
  let stream: RequestStream | undefined;
  try {
    await Promise.all(Array.from({ length: HOSTS }, () => procs.start()));
    const c = (client = await createClient({
      nats: server.url,
      onError: (err: FtmError) => clientErrors.push(`${err.name}: ${err.message}`),
    }));
    const heard = async (ids: string[]) => {
      if (!(await poll(() => ids.every((id) => c.liveHosts().includes(id)) || undefined, 10_000)))
        throw new Error(`hosts ${ids.join(', ')} not heard by the client within 10 s`);
    };
    await heard([...procs.byId.keys()]);
    await c.placeSession('counter', SID);
    const requests = (stream = new RequestStream(c, SID, RATE_PER_S));
    requests.start();
    await sleep(WARM_MS);
    const done: {
      killAt: number;
      exitAt: number | undefined;
      gapUntil: number;
      rec: FailoverRecord | undefined;
    }[] = [];
    // Epoch changes no fault of ours caused: a live host taken for dead.
    let spurious = 0;
    let epoch = 1; // placeSession opens epoch 1
    let stuck = false;
    for (let i = 0; i < faults; i++) {
      const before = await poll(() => {
        const o = c.owner(SID);
        return o?.standby && procs.byId.has(o.primary) && procs.byId.has(o.standby) ? o : undefined;
      }, PROTECTED_WITHIN_MS);
      if (!before) {
        stuck = true;
        note(
          `fault ${i + 1}: no primary with a live standby to ${signal} within ${PROTECTED_WITHIN_MS} ms ` +
            `(owner ${JSON.stringify(c.owner(SID))}, processes ${[...procs.byId.keys()].join(' ')}, ` +
            `client hears ${c.liveHosts().join(' ')}); round ended`,
        );
        break;
      }
      if (before.epoch > epoch) {
        spurious += before.epoch - epoch;
        note(`before fault ${i + 1}: epoch ${epoch} -> ${before.epoch} with no fault`);
      }
      const victim = procs.byId.get(before.primary)!;
      // Decorrelate the fault from the 1 ms send ticks.
      await sleep(Math.random() * 3);
      const killAt = now();
      procs.signal(victim, signal);
      const owner = await poll<OwnerRecord>(() => {
        const o = c.owner(SID);
        return o && o.epoch > before.epoch ? o : undefined;
      }, 5_000);
      let rec: FailoverRecord | undefined;
      epoch = owner?.epoch ?? epoch;
      if (!owner) {
        note(`fault ${i + 1}: no new epoch 5 s after ${signal} of ${victim.id}`);
      } else {
        if (owner.epoch !== before.epoch + 1 || owner.primary !== before.standby)
          note(
            `fault ${i + 1}: epoch ${before.epoch} -> ${owner.epoch}, primary ` +
              `${before.primary} -> ${owner.primary} (standby was ${before.standby})`,
          );
        let last: FailoverRecord | undefined;
        rec = await poll(async () => {
          // The history alone: inspect() would also encode the session's meta, work that
          // would slow the very host being measured.
          const fo = await c.failoversOf(owner.primary).catch(() => undefined);
          last = fo?.filter((f) => f.sid === SID).at(-1);
          return last?.epoch === owner.epoch &&
            last.reprotectedAt !== undefined &&
            last.firstReplyAt !== undefined
            ? last
            : undefined;
        }, 3_000);
        if (!rec) {
          note(
            `fault ${i + 1}: record of epoch ${owner.epoch} on ${owner.primary} incomplete ` +
              `after 3 s: ${JSON.stringify(last)}`,
          );
          rec = last?.epoch === owner.epoch ? last : undefined;
        } else if (rec.from !== victim.id) {
          note(`fault ${i + 1}: record says from ${rec.from}, killed ${victim.id}`);
        }
      }
      // A hung process stays stopped until measured, then goes for good.
      await procs.kill(victim);
      const exitAt = kind === 'crash' ? await victim.exited : undefined;
      const gapUntil = Math.max(killAt + GAP_WINDOW_MS, (rec?.reprotectedAt ?? 0) + 50);
      done.push({ killAt, exitAt, gapUntil, rec });
      if (!owner) {
        stuck = true;
        break;
      }
      // The replacement starts after the gap window: its start-up takes CPU from everyone.
      await sleep(Math.max(0, gapUntil - now()));
      // After the last fault the spare already re-protected the session: no next failover needs one.
      if (i === faults - 1) break;
      const fresh = await procs.start(true);
      await heard([fresh.id]);
      await sleep(SETTLE_MS);
    }
    await requests.stop();
    const last = c.owner(SID)?.epoch ?? epoch;
    if (last > epoch) {
      spurious += last - epoch;
      note(`after the last fault: epoch ${epoch} -> ${last} with no fault`);
    }
    for (const f of requests.failures) note(`unanswered ${f}`);

    const final = (await c.request(SID, 'get').catch((err: unknown) => {
      note(`final get: ${String(err)}`);
      return null;
    })) as number | null;
    if (final !== requests.count) note(`final state ${final} after ${requests.count} adds`);
    // Primary and standby equal once the standby caught up; the record is read
    // afresh each time, as it may still name a host gone a moment ago.
    let why = '';
    const verdict = await poll<'equal' | 'differ' | 'none'>(async () => {
      const o = c.owner(SID);
      if (!o?.standby) return 'none';
      try {
        const [p, s] = await Promise.all([c.inspect(o.primary, SID), c.inspect(o.standby, SID)]);
        why = `${o.primary} seq ${p.info.seq}, ${o.standby} seq ${s.info.seq}`;
        if (p.info.seq !== s.info.seq) return undefined;
        return p.hash === s.hash ? 'equal' : 'differ';
      } catch (err) {
        why = String(err);
        return undefined;
      }
    }, 3_000);
    // Undefined: not compared (no standby, or no answer within 3 s).
    const replicasEqual = verdict === 'equal' ? true : verdict === 'differ' ? false : undefined;
    if (verdict === 'none') note('no standby at the end');
    else if (verdict === 'differ') note(`primary and standby differ at the end (${why})`);
    else if (verdict === undefined) note(`primary and standby not compared (${why})`);

    // Per fault, from the client's replies: the first one the new primary committed (its
    // value is above the seq the new primary started from: only `add 1` runs, so value =
    // seq), and the longest silence from the last reply before the fault to the window's end.
    const { arrivals, values } = requests;
    const samples: Sample[] = [];
    for (const [k, f] of done.entries()) {
      let j = firstAfter(arrivals, f.killAt);
      let gap = 0;
      for (let g = Math.max(1, j); g < arrivals.length; g++) {
        gap = Math.max(gap, arrivals[g]! - arrivals[g - 1]!);
        if (arrivals[g]! > f.gapUntil) break;
      }
      if (!f.rec) continue;
      while (j < arrivals.length && values[j]! <= f.rec.seq) j++;
      if (j >= arrivals.length)
        note(`fault ${k + 1}: no reply from the new primary reached the client`);
      if (f.rec.detectedAt < f.killAt)
        note(
          `fault ${k + 1}: detected ${(f.killAt - f.rec.detectedAt).toFixed(3)} ms before the kill`,
        );
      samples.push({ ...f.rec, killAt: f.killAt, exitAt: f.exitAt, clientAt: arrivals[j], gap });
    }
    const { lost, duplicated } = exactlyOnce(requests.replies, requests.count);
    if (lost || duplicated) {
      // What the hosts decided, and when the client saw a value again: enough to
      // tell which failover lost what.
      const seenAt = new Map<number, number[]>();
      for (const [i, v] of values.entries())
        seenAt.set(v, [...(seenAt.get(v) ?? []), arrivals[i]!]);
      const again = [...seenAt].filter(([, at]) => at.length > 1).sort((a, b) => a[0] - b[0]);
      const file = join(tmpdir(), `ftmesh-failover-${kind}-${process.pid}-${Date.now()}.log`);
      writeFileSync(
        file,
        [
          `lost ${lost}, duplicated ${duplicated}; faults at ${done.map((d) => d.killAt.toFixed(1)).join(' ')}`,
          ...again
            .filter((_, i) => i < 5 || i >= again.length - 5)
            .map(([v, at]) => `value ${v} seen at ${at.map((t) => t.toFixed(1)).join(', ')}`),
          ...procs.traceLines(),
        ].join('\n') + '\n',
      );
      note(`lost ${lost}, duplicated ${duplicated}: the hosts' traces are in ${file}`);
    }
    return {
      samples,
      faults: done.length,
      spurious,
      // Suspicions a probe answered: a live host taken for silent, never a verdict.
      falseSuspicions: procs
        .traceLines()
        .filter((l) => /suspected \(\w+\) but answered its probe/.test(l)).length,
      stuck,
      requests: requests.count,
      retries: requests.retries,
      unanswered: requests.unanswered,
      lost,
      duplicated,
      final,
      replicasEqual,
      hostErrors: procs.errorLines(),
      clientErrors,
      stayedNiced: procs.stayedNiced,
      anomalies,
    };
  } finally {
    // Shutdown order: the stream and the client first (nothing more to send), then the
    // hosts, then NATS. A stream left ticking would keep this process alive.
    stream?.halt();
    await client?.close();
    await procs.close();
    await server.stop();
  }
}

/**
 * Injects `faults` faults of one kind. A round that gets stuck (the runtime
 * left the session without a standby, so a fault would test a cold restore
 * instead) is ended and a fresh one started, at most `maxRounds` in all.
 */
async function phase(
  kind: 'crash' | 'hang',
  faults: number,
  maxRounds: number,
): Promise<PhaseReport> {
  const rounds: Round[] = [];
  let injected = 0;
  while (injected < faults && rounds.length < maxRounds) {
    const tag = rounds.length || maxRounds > 1 ? `round ${rounds.length + 1}: ` : '';
    // A round that throws (a host that never starts, a stuck request) is one
    // more anomaly; its figures are lost, the phase goes on. The first one
    // failing is a set-up problem: that one throws.
    const r = await round(kind, faults - injected, tag).catch((err: unknown): Round => {
      if (rounds.length === 0) throw err;
      return {
        samples: [],
        faults: 0,
        spurious: 0,
        falseSuspicions: 0,
        stuck: true,
        requests: 0,
        retries: 0,
        unanswered: 0,
        lost: 0,
        duplicated: 0,
        final: 0,
        replicasEqual: undefined,
        hostErrors: [],
        clientErrors: [],
        stayedNiced: 0,
        anomalies: [`${tag}failed, its figures are lost: ${String(err).split('\n')[0]}`],
      };
    });
    rounds.push(r);
    injected += r.faults;
    if (r.faults === 0 && !r.stuck) break;
  }
  const samples = rounds.flatMap((r) => r.samples);
  const complete = samples.filter(
    (r) => r.promotedAt && r.replayedAt && r.firstReplyAt && r.reprotectedAt && r.clientAt,
  );
  const since = (at: (r: Sample) => number | undefined) =>
    stats(samples.flatMap((r) => (at(r) === undefined ? [] : [at(r)! - r.killAt])));
  const between = (from: (r: Sample) => number, to: (r: Sample) => number) =>
    stats(complete.map((r) => to(r) - from(r)));
  const causes: Record<string, number> = {};
  for (const r of samples) causes[r.cause] = (causes[r.cause] ?? 0) + 1;
  const sum = (f: (r: Round) => number) => rounds.reduce((s, r) => s + f(r), 0);
  const hostErrors = rounds.flatMap((r) => r.hostErrors);
  const clientErrors = rounds.flatMap((r) => r.clientErrors);
  const niced = sum((r) => r.stayedNiced);
  return {
    signal: kind === 'crash' ? 'SIGKILL' : 'SIGSTOP',
    rounds: rounds.length,
    faults: injected,
    failovers: complete.length,
    spurious_failovers: sum((r) => r.spurious),
    false_suspicions: sum((r) => r.falseSuspicions),
    causes,
    kill_to_exit_ms: since((r) => r.exitAt),
    kill_to_detect_ms: since((r) => r.detectedAt),
    kill_to_promote_ms: since((r) => r.promotedAt),
    kill_to_replayed_ms: since((r) => r.replayedAt),
    kill_to_primary_first_reply_ms: since((r) => r.firstReplyAt),
    kill_to_first_reply_ms: since((r) => r.clientAt),
    kill_to_reprotected_ms: since((r) => r.reprotectedAt),
    max_reply_gap_ms: stats(samples.map((r) => r.gap)),
    steps_ms: {
      detect: between(
        (r) => r.killAt,
        (r) => r.detectedAt,
      ),
      cas: between(
        (r) => r.detectedAt,
        (r) => r.promotedAt!,
      ),
      attach_and_replay: between(
        (r) => r.promotedAt!,
        (r) => r.firstReplyAt!,
      ),
      release: between(
        (r) => r.firstReplyAt!,
        (r) => r.clientAt!,
      ),
    },
    replayed: stats(samples.map((r) => r.replayed)),
    requests: sum((r) => r.requests),
    retries: sum((r) => r.retries),
    unanswered: sum((r) => r.unanswered),
    lost: sum((r) => r.lost),
    duplicated: sum((r) => r.duplicated),
    final_state: rounds.some((r) => r.final === null) ? null : sum((r) => r.final!),
    replicas_equal: rounds.every((r) => r.replicasEqual !== false),
    rounds_not_compared: rounds.filter((r) => r.replicasEqual === undefined).length,
    host_errors: hostErrors.length,
    client_errors: clientErrors.length,
    anomalies: [
      ...rounds.flatMap((r) => r.anomalies),
      ...(niced ? [`${niced} replacement hosts kept nice 10 (no permission to renice)`] : []),
      ...hostErrors.slice(0, 3),
      ...clientErrors.slice(0, 3).map((e) => `client: ${e}`),
    ],
  };
}

/**
 * Runs the crash phase, then the hang phase; each round of a phase on its own
 * server, host processes and session.
 */
export async function runFailoverBench(options: FailoverBenchOptions): Promise<FailoverReport> {
  const load = { crash: loadavg()[0]!, hang: 0 };
  const crash = await phase('crash', options.quick ? 5 : 50, options.quick ? 1 : 25);
  load.hang = loadavg()[0]!;
  const hang = await phase('hang', options.quick ? 3 : 10, options.quick ? 1 : 8);
  const round = (x: number) => Math.round(x * 100) / 100;
  return {
    rate_per_s: RATE_PER_S,
    hosts: HOSTS,
    load_before: { crash: round(load.crash), hang: round(load.hang) },
    crash,
    hang,
  };
}

// ---- the table ---------------------------------------------------------------------------------

/** The human-readable table of a {@link FailoverReport}. */
export function formatFailoverReport(r: FailoverReport, quick: boolean): string {
  const f = (x: number) => (Number.isNaN(x) ? '-' : x >= 100 ? x.toFixed(0) : x.toFixed(2));
  const three = (s: Stats) => [f(s.p50), f(s.p99), f(s.max)];
  const { crash: c, hang: h } = r;
  const row = (label: string, a: Stats, b: Stats, target = '') => [
    label,
    ...three(a),
    ...three(b),
    target,
  ];
  const rows = [
    [
      'ms from the signal',
      'crash p50',
      'p99',
      'max',
      'hang p50',
      'p99',
      'max',
      'target (p50 / p99 crash; p99 hang)',
    ],
    row('process gone (reaped: sockets closed)', c.kill_to_exit_ms, h.kill_to_exit_ms),
    row('detected', c.kill_to_detect_ms, h.kill_to_detect_ms),
    row('promoted (CAS won)', c.kill_to_promote_ms, h.kill_to_promote_ms),
    row(
      'first reply committed (new primary)',
      c.kill_to_primary_first_reply_ms,
      h.kill_to_primary_first_reply_ms,
    ),
    row('inputs replayed', c.kill_to_replayed_ms, h.kill_to_replayed_ms),
    row(
      'first reply received (client)',
      c.kill_to_first_reply_ms,
      h.kill_to_first_reply_ms,
      '<= 8 / <= 12; <= 30',
    ),
    row('re-protected (new standby)', c.kill_to_reprotected_ms, h.kill_to_reprotected_ms),
    row('longest gap between replies', c.max_reply_gap_ms, h.max_reply_gap_ms),
    ['steps of kill -> first reply received'],
    row('  detection', c.steps_ms.detect, h.steps_ms.detect),
    row('  CAS on the ownership record', c.steps_ms.cas, h.steps_ms.cas),
    row(
      '  attach standby, serve, replay',
      c.steps_ms.attach_and_replay,
      h.steps_ms.attach_and_replay,
    ),
    row('  release (standby ack) to client', c.steps_ms.release, h.steps_ms.release),
    row('inputs replayed (count)', c.replayed, h.replayed),
  ];
  const facts = (p: PhaseReport) =>
    `${p.faults} x ${p.signal} in ${p.rounds} round${p.rounds === 1 ? '' : 's'}, ${p.failovers} failovers measured, ${p.spurious_failovers} with no fault, ${p.false_suspicions} false suspicions cleared by a probe (${Object.entries(
      p.causes,
    )
      .map(([k, n]) => `${k} ${n}`)
      .join(', ')}); ${p.requests} requests, ${p.retries} retries, ${p.unanswered} unanswered, ` +
    `lost ${p.lost}, duplicated ${p.duplicated}, final state ${p.final_state}, ` +
    `replicas ${p.replicas_equal ? 'equal' : 'DIFFER'} (${p.rounds_not_compared} of ${p.rounds} rounds not compared); error lines: hosts ${p.host_errors}, client ${p.client_errors}`;
  const odd = [...c.anomalies.map((a) => `crash: ${a}`), ...h.anomalies.map((a) => `hang: ${a}`)];
  return [
    `failover benchmark${quick ? ' (--quick: indicative only)' : ''}: ${r.hosts} host processes, ` +
      `${r.rate_per_s} req/s of \`add 1\` on one counter session (standby mode)`,
    'crash = SIGKILL of the primary; hang = SIGSTOP of the primary (SIGKILLed once measured); ' +
      `load average before: ${r.load_before.crash} / ${r.load_before.hang} on ${cpus().length} cores`,
    '',
    columns(rows, 1),
    '',
    `crash: ${facts(c)}`,
    `hang:  ${facts(h)}`,
    ...(odd.length ? ['', 'anomalies:', ...odd.map((a) => `  ${a}`)] : []),
  ].join('\n');
}
