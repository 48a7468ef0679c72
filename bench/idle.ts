/**
 * idle: what the mesh's control plane costs each host when no request comes.
 *
 * Per host count N: one nats-server (infra's launcher, free ports; its HTTP
 * monitoring port serves /connz and /varz), N host processes started a few
 * at a time with the command bench/failover.ts runs (`cli/ftmesh.ts host`),
 * and in this process a client host (capacity 0) that places
 * {@link SESSIONS_PER_HOST} `counter` sessions with each host as primary, so
 * that every host holds sessions (primaries and standbys) and beats fast. No
 * request is sent. After a settle period, two samples a window apart: each
 * process's utime+stime (/proc/<pid>/stat counts every thread, the heartbeat
 * worker's too) and each NATS connection's in/out message counts (/connz; a
 * host has its main `ftm-host-<id>` connection and its heartbeat worker's
 * `ftm-live-<id>`).
 */
import { spawn, type ChildProcess, execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { startNatsServer } from '../infra/index.ts';
import { createClient, type FtmError, type MeshClient } from '../runtime/index.ts';
import { columns, stats } from './stats.ts';

/** Options of {@link runIdleBench}. */
export type IdleBenchOptions = {
  /** A 4 s window instead of 10 s. */
  quick: boolean;
  /** One run per entry: that many host processes (default {@link DEFAULT_HOST_COUNTS}). */
  hosts: readonly number[];
};

/** Median and maximum over the hosts of one run. */
export type OverHosts = { p50: number; max: number };

/** One host count: its own server, host processes and sessions. */
export type IdleRun = {
  hosts: number;
  sessions: number;
  /** Session copies (as primary or standby) each host holds. */
  copies_per_host: { min: number; max: number };
  /** Spawn → the client hears the host, per host; and the start of all of them. */
  host_start_s: OverHosts;
  all_hosts_start_s: number;
  window_s: number;
  /** utime+stime of the whole process (every thread), as % of one core. */
  cpu_pct_per_host: OverHosts;
  /** Both of a host's connections: messages it published (in) plus those delivered to it (out). */
  msgs_per_s_per_host: OverHosts;
  in_msgs_per_s_per_host: OverHosts;
  out_msgs_per_s_per_host: OverHosts;
  server_cpu_pct: number;
  /** The server's own totals (/varz), every connection included. */
  server_msgs_per_s: number;
  server_in_msgs_per_s: number;
  server_out_msgs_per_s: number;
  /** This process: the client host (it hears every heartbeat too) and the bench's sampling. */
  client_cpu_pct: number;
  client_msgs_per_s: number;
  /** The whole machine's busy time, as % of one core, and the part none of our processes used. */
  machine_busy_pct: number;
  others_cpu_pct: number;
  /** `[ftmesh ...]` error lines the host processes wrote, and errors the client reported. */
  host_errors: number;
  client_errors: number;
  anomalies: string[];
};

export type IdleReport = {
  /** The 1-minute load average before each run, by host count: other work skews every figure. */
  load_before: Record<string, number>;
  runs: IdleRun[];
};

export const DEFAULT_HOST_COUNTS = [3, 20] as const;
/** Each host is the primary of this many sessions; their standbys spread over the others. */
export const SESSIONS_PER_HOST = 2;
/** Long enough for every host to report its sessions and switch to fast beats (a load goes out every 200 ms). */
const SETTLE_MS = 3_000;
const WINDOW_MS = 10_000;
const QUICK_WINDOW_MS = 4_000;
/** A Node + tsx start-up takes 1.5-3 s on a busy 2-core machine; a batch of them, longer. */
const HEARD_WITHIN_MS = 60_000;
/** A SIGTERMed host drains (hands its sessions over) before it exits; past this it is SIGKILLed. */
const STOP_GRACE_MS = 5_000;
const CLIENT_ID = 'bench-client';
const REPO_ROOT = fileURLToPath(new URL('../', import.meta.url));

/**
 * Parses `--hosts 3,20`: positive integers, comma-separated; the default
 * list when absent.
 * @throws RangeError naming the bad value
 */
export function parseHostCounts(list: string | undefined): number[] {
  if (list === undefined) return [...DEFAULT_HOST_COUNTS];
  const counts = list.split(',').map((s) => Number(s.trim()));
  if (counts.length === 0 || counts.some((n) => !Number.isInteger(n) || n < 1))
    throw new RangeError(
      `--hosts takes positive integers, comma-separated (e.g. 3,20), got ${list}`,
    );
  return counts;
}

/** Calls `fn` every `intervalMs` until it returns something; undefined after `timeoutMs`. */
async function until<T>(
  fn: () => T | undefined,
  timeoutMs: number,
  intervalMs = 10,
): Promise<T | undefined> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (performance.now() >= deadline) return undefined;
    await sleep(intervalMs);
  }
}

const round = (x: number, digits: number) => Math.round(x * 10 ** digits) / 10 ** digits;
const overHosts = (xs: readonly number[]): OverHosts => {
  const s = stats(xs);
  return { p50: s.p50, max: s.max };
};

// ---- host processes ---------------------------------------------------------------------

type HostProcess = {
  id: string;
  pid: number;
  child: ChildProcess;
  exited: Promise<void>;
  /** The last lines it wrote to stderr. */
  stderr: string[];
};

const isRunning = (p: HostProcess) => p.child.exitCode === null && p.child.signalCode === null;

function signal(p: HostProcess, sig: NodeJS.Signals): void {
  if (!isRunning(p)) return;
  try {
    process.kill(p.pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** Spawns `node --import tsx cli/ftmesh.ts host --nats URL --id ID`, as bench/failover.ts does. */
function spawnHost(natsUrl: string, id: string): HostProcess {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'cli/ftmesh.ts', 'host', '--nats', natsUrl, '--id', id],
    { cwd: REPO_ROOT, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const stderr: string[] = [];
  // Without a listener a failed spawn would throw from an event; the pid check reports it.
  child.once('error', (err) => stderr.push(String(err)));
  if (child.pid === undefined) throw new Error(`could not start host process ${id}`);
  let partial = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop()!;
    stderr.push(...lines.filter((l) => l.trim()));
    if (stderr.length > 200) stderr.splice(0, stderr.length - 200);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { id, pid: child.pid, child, exited, stderr };
}

/** Resolves with the ms from `since` until the client hears `p`; rejects if it exits or stays silent. */
async function heard(client: MeshClient, p: HostProcess, since: number): Promise<number> {
  const ok = await until(
    () => (client.liveHosts().includes(p.id) || !isRunning(p) ? true : undefined),
    HEARD_WITHIN_MS,
  );
  if (!isRunning(p))
    throw new Error(`host ${p.id} exited before it was heard: ${p.stderr.slice(-5).join(' | ')}`);
  if (!ok) throw new Error(`host ${p.id} not heard by the client within ${HEARD_WITHIN_MS} ms`);
  return performance.now() - since;
}

/**
 * Starts `n` hosts, one batch per core at a time: a Node + tsx start-up takes
 * a core for a second or two, and twenty at once would starve each other (and
 * the running hosts' slow beats). Each one spawned is pushed to `procs` at
 * once, so that the caller stops it even if a later one fails. Resolves with
 * each host's spawn → heard time in ms.
 */
async function startHosts(
  client: MeshClient,
  natsUrl: string,
  n: number,
  procs: HostProcess[],
): Promise<number[]> {
  const batch = Math.max(1, cpus().length);
  const took: number[] = [];
  for (let first = 1; first <= n; first += batch) {
    const since = performance.now();
    const started: HostProcess[] = [];
    for (let i = first; i < first + batch && i <= n; i++) {
      const p = spawnHost(natsUrl, `h${i}`);
      procs.push(p);
      started.push(p);
    }
    took.push(...(await Promise.all(started.map((p) => heard(client, p, since)))));
  }
  return took;
}

/** SIGTERM (the host drains, then exits), SIGKILL after a grace; resolves with how many needed the SIGKILL. */
async function stopHosts(procs: readonly HostProcess[]): Promise<number> {
  const running = procs.filter(isRunning);
  for (const p of running) signal(p, 'SIGTERM');
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all(running.map((p) => p.exited)),
    new Promise((resolve) => (timer = setTimeout(resolve, STOP_GRACE_MS))),
  ]);
  clearTimeout(timer);
  const stubborn = running.filter(isRunning);
  for (const p of stubborn) signal(p, 'SIGKILL');
  await Promise.all(stubborn.map((p) => p.exited));
  return stubborn.length;
}

// ---- sessions -----------------------------------------------------------------------------

/** Places {@link SESSIONS_PER_HOST} counter sessions with each host as primary; resolves with their ids. */
async function placeSessions(client: MeshClient, hostIds: readonly string[]): Promise<string[]> {
  const sids: string[] = [];
  for (const id of hostIds) {
    for (let k = 1; k <= SESSIONS_PER_HOST; k++) {
      const sid = `idle-${id}-${k}`;
      await client.placeSession('counter', sid, { primary: id });
      sids.push(sid);
    }
  }
  return sids;
}

/** Session copies (primary or standby) per host, from the ownership records the client sees. */
function copiesPerHost(client: MeshClient, sids: readonly string[], hostIds: readonly string[]) {
  const copies = new Map(hostIds.map((id) => [id, 0]));
  const unprotected: string[] = [];
  for (const sid of sids) {
    const o = client.owner(sid);
    if (o) copies.set(o.primary, (copies.get(o.primary) ?? 0) + 1);
    if (o?.standby) copies.set(o.standby, (copies.get(o.standby) ?? 0) + 1);
    else unprotected.push(sid);
  }
  return { copies, unprotected };
}

// ---- samples ------------------------------------------------------------------------------

/** utime+stime in clock ticks of every thread of `pid`; undefined once it is gone. */
function cpuTicks(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and ')': count from after its last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return undefined;
  }
}

/** The machine's busy and total clock ticks, every core (first line of /proc/stat). */
function machineTicks(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  // user nice system idle iowait irq softirq steal (guest time is already inside user).
  const t = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = t.reduce((s, x) => s + x, 0);
  return { busy: total - t[3]! - t[4]!, total };
}

type Connection = { cid: number; name: string; in_msgs: number; out_msgs: number };

type Snapshot = {
  /** performance.now() when the /proc figures were read. */
  cpuAt: number;
  cpu: Map<number, number | undefined>;
  machine: { busy: number; total: number };
  /** The middle of the /connz and /varz requests. */
  msgsAt: number;
  connections: Map<number, Connection>;
  server: { in: number; out: number };
};

async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
  return (await res.json()) as T;
}

async function snapshot(monitorUrl: string, pids: readonly number[]): Promise<Snapshot> {
  const cpuAt = performance.now();
  const cpu = new Map(pids.map((pid) => [pid, cpuTicks(pid)]));
  const machine = machineTicks();
  const asked = performance.now();
  const [connz, varz] = await Promise.all([
    // subs=0: the counts alone, not every connection's subscription list.
    getJson<{ connections: Connection[] }>(`${monitorUrl}/connz?subs=0`),
    getJson<{ in_msgs: number; out_msgs: number }>(`${monitorUrl}/varz`),
  ]);
  return {
    cpuAt,
    cpu,
    machine,
    msgsAt: (asked + performance.now()) / 2,
    connections: new Map(connz.connections.map((c) => [c.cid, c])),
    server: { in: varz.in_msgs, out: varz.out_msgs },
  };
}

/** The host a connection belongs to, from its name: `ftm-host-<id>` or `ftm-live-<id>`. */
const hostOf = (name: string) => /^ftm-(?:host|live)-(.+)$/.exec(name)?.[1];

/** Messages in and out per second, per host id, between two snapshots. */
function msgRates(a: Snapshot, b: Snapshot, note: (what: string) => void) {
  const seconds = (b.msgsAt - a.msgsAt) / 1000;
  const rates = new Map<string, { in: number; out: number }>();
  for (const [cid, c] of b.connections) {
    const id = hostOf(c.name);
    const before = a.connections.get(cid);
    if (!before) {
      // A reconnect during the window: its counts started from zero mid-way.
      note(`connection ${c.name} (cid ${cid}) appeared during the window: not counted`);
      continue;
    }
    if (id === undefined) continue;
    const r = rates.get(id) ?? { in: 0, out: 0 };
    r.in += (c.in_msgs - before.in_msgs) / seconds;
    r.out += (c.out_msgs - before.out_msgs) / seconds;
    rates.set(id, r);
  }
  for (const [cid, c] of a.connections)
    if (!b.connections.has(cid)) note(`connection ${c.name} (cid ${cid}) closed during the window`);
  return rates;
}

/** CPU % of one core of `pid` between two snapshots; NaN if it went away. */
function cpuPct(a: Snapshot, b: Snapshot, pid: number, ticksPerS: number): number {
  const before = a.cpu.get(pid);
  const after = b.cpu.get(pid);
  if (before === undefined || after === undefined) return NaN;
  return ((after - before) / ticksPerS / ((b.cpuAt - a.cpuAt) / 1000)) * 100;
}

// ---- one run ------------------------------------------------------------------------------

/**
 * Starts a nats-server, `n` host processes and a client, places the sessions,
 * lets them settle and measures one window; stops everything it started,
 * also on error.
 */
async function runOnce(n: number, windowMs: number, ticksPerS: number): Promise<IdleRun> {
  const anomalies: string[] = [];
  const note = (what: string) => anomalies.push(what);
  const clientErrors: string[] = [];
  const server = await startNatsServer();
  const procs: HostProcess[] = [];
  // If the bench dies before the finally below runs, no host outlives it.
  const backstop = () => procs.forEach((p) => signal(p, 'SIGKILL'));
  process.on('exit', backstop);
  let client: MeshClient | undefined;
  try {
    const c = (client = await createClient({
      nats: server.url,
      onError: (err: FtmError) => clientErrors.push(`${err.name}: ${err.message}`),
    }));
    const t0 = performance.now();
    const startMs = await startHosts(c, server.url, n, procs);
    const allStartS = (performance.now() - t0) / 1000;
    const ids = procs.map((p) => p.id);
    const sids = await placeSessions(c, ids);
    const { copies, unprotected } = copiesPerHost(c, sids, ids);
    if (unprotected.length) note(`sessions without a standby: ${unprotected.join(' ')}`);
    const idle = [...copies].filter(([, k]) => k === 0).map(([id]) => id);
    if (idle.length) note(`hosts holding no session: ${idle.join(' ')}`);

    // A measurement period, not a readiness wait: the hosts switch to fast beats within it.
    await sleep(SETTLE_MS);
    const pids = [...procs.map((p) => p.pid), server.pid, process.pid];
    const before = await snapshot(server.monitorUrl, pids);
    await sleep(windowMs);
    const after = await snapshot(server.monitorUrl, pids);

    // Nothing must have happened during the window: no failover, no host lost.
    const moved = sids.filter((sid) => (c.owner(sid)?.epoch ?? 0) > 1);
    if (moved.length) note(`sessions that changed primary (no request sent): ${moved.join(' ')}`);
    const gone = procs.filter((p) => !isRunning(p)).map((p) => p.id);
    if (gone.length) note(`host processes exited: ${gone.join(' ')}`);
    const unheard = ids.filter((id) => !c.liveHosts().includes(id));
    if (unheard.length) note(`hosts the client no longer hears: ${unheard.join(' ')}`);

    const rates = msgRates(before, after, note);
    const rate = (id: string) => rates.get(id) ?? { in: NaN, out: NaN };
    const cpu = (pid: number) => cpuPct(before, after, pid, ticksPerS);
    const hostCpu = procs.map((p) => cpu(p.pid));
    const windowS = (after.msgsAt - before.msgsAt) / 1000;
    const machineS = (after.machine.total - before.machine.total) / ticksPerS;
    // Total ticks count every core: busy as % of one core is busy / (total / cores).
    const machineBusy =
      ((after.machine.busy - before.machine.busy) / (machineS / cpus().length) / ticksPerS) * 100;
    const ours = hostCpu.reduce((s, x) => s + x, 0) + cpu(server.pid) + cpu(process.pid);
    // A saturated machine caps every figure: they show what each process got, not what it needs.
    if (machineBusy >= 95 * cpus().length)
      note(
        `machine saturated (${machineBusy.toFixed(0)} % of one core busy): CPU figures are capped`,
      );
    const serverRate = (k: 'in' | 'out') => (after.server[k] - before.server[k]) / windowS;
    const hostErrors = procs.flatMap((p) => p.stderr.filter((l) => l.startsWith('[ftmesh')));
    anomalies.push(
      ...hostErrors.slice(0, 3),
      ...clientErrors.slice(0, 3).map((e) => `client: ${e}`),
    );
    const copyCounts = [...copies.values()];
    return {
      hosts: n,
      sessions: sids.length,
      copies_per_host: { min: Math.min(...copyCounts), max: Math.max(...copyCounts) },
      host_start_s: overHosts(startMs.map((ms) => ms / 1000)),
      all_hosts_start_s: round(allStartS, 2),
      window_s: round(windowS, 2),
      cpu_pct_per_host: overHosts(hostCpu),
      msgs_per_s_per_host: overHosts(ids.map((id) => rate(id).in + rate(id).out)),
      in_msgs_per_s_per_host: overHosts(ids.map((id) => rate(id).in)),
      out_msgs_per_s_per_host: overHosts(ids.map((id) => rate(id).out)),
      server_cpu_pct: round(cpu(server.pid), 2),
      server_msgs_per_s: round(serverRate('in') + serverRate('out'), 1),
      server_in_msgs_per_s: round(serverRate('in'), 1),
      server_out_msgs_per_s: round(serverRate('out'), 1),
      client_cpu_pct: round(cpu(process.pid), 2),
      client_msgs_per_s: round(rate(CLIENT_ID).in + rate(CLIENT_ID).out, 1),
      machine_busy_pct: round(machineBusy, 2),
      others_cpu_pct: round(machineBusy - ours, 2),
      host_errors: hostErrors.length,
      client_errors: clientErrors.length,
      // The finally below may still add to it: the returned object holds this very array.
      anomalies,
    };
  } finally {
    // Shutdown order: the client first (nobody asks the hosts for anything more),
    // then the hosts (they drain into each other or are killed), then NATS.
    await client?.close();
    const killed = await stopHosts(procs);
    if (killed) note(`${killed} hosts SIGKILLed: still running ${STOP_GRACE_MS} ms after SIGTERM`);
    process.off('exit', backstop);
    await server.stop();
  }
}

/**
 * Measures the idle cost of the control plane per host: for each host count
 * of `options.hosts`, its own nats-server, host processes and client; every
 * host the primary of {@link SESSIONS_PER_HOST} `counter` sessions, no
 * request sent; after a 3 s settle, CPU % per process and NATS messages per
 * second per host over a 10 s window (4 s with `quick`).
 *
 * Resolves once every run is done and everything it started is stopped;
 * rejects on the first run that cannot start (a host not heard within 60 s,
 * no nats-server), after stopping what that run started.
 * @example
 * const report = await runIdleBench({ quick: true, hosts: [3] });
 * console.log(formatIdleReport(report, true));
 */
export async function runIdleBench(options: IdleBenchOptions): Promise<IdleReport> {
  const ticksPerS = clockTicksPerSecond();
  const windowMs = options.quick ? QUICK_WINDOW_MS : WINDOW_MS;
  const report: IdleReport = { load_before: {}, runs: [] };
  for (const n of options.hosts) {
    report.load_before[String(n)] = round(loadavg()[0]!, 2);
    report.runs.push(await runOnce(n, windowMs, ticksPerS));
  }
  return report;
}

/** The kernel's clock ticks per second (/proc's unit): 100 on nearly every Linux. */
function clockTicksPerSecond(): number {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
}

// ---- the table ----------------------------------------------------------------------------

/** The human-readable tables (one per host count) of an {@link IdleReport}. */
export function formatIdleReport(r: IdleReport, quick: boolean): string {
  const f = (x: number) => (Number.isNaN(x) ? '-' : x >= 100 ? x.toFixed(0) : x.toFixed(2));
  const loads = Object.entries(r.load_before)
    .map(([n, l]) => `${n} hosts ${l}`)
    .join(', ');
  const table = (run: IdleRun) => {
    const rows = [
      ['per process', 'host p50', 'host max', 'nats-server', 'client (bench)'],
      [
        'CPU % of one core',
        f(run.cpu_pct_per_host.p50),
        f(run.cpu_pct_per_host.max),
        f(run.server_cpu_pct),
        f(run.client_cpu_pct),
      ],
      [
        'NATS msgs/s in+out',
        f(run.msgs_per_s_per_host.p50),
        f(run.msgs_per_s_per_host.max),
        f(run.server_msgs_per_s),
        f(run.client_msgs_per_s),
      ],
      [
        '  in (published)',
        f(run.in_msgs_per_s_per_host.p50),
        f(run.in_msgs_per_s_per_host.max),
        f(run.server_in_msgs_per_s),
      ],
      [
        '  out (delivered)',
        f(run.out_msgs_per_s_per_host.p50),
        f(run.out_msgs_per_s_per_host.max),
        f(run.server_out_msgs_per_s),
      ],
    ];
    return [
      `${run.hosts} hosts, ${run.sessions} sessions (${run.copies_per_host.min}-${run.copies_per_host.max} ` +
        `copies per host, primary or standby); each host heard ${f(run.host_start_s.p50)} s p50 / ` +
        `${f(run.host_start_s.max)} s max after its spawn, all in ${f(run.all_hosts_start_s)} s; ` +
        `window ${f(run.window_s)} s`,
      columns(rows, 1),
      `machine busy ${f(run.machine_busy_pct)} % of one core, ${f(run.others_cpu_pct)} % of it not ours; ` +
        `error lines: hosts ${run.host_errors}, client ${run.client_errors}`,
      ...run.anomalies.map((a) => `  anomaly: ${a}`),
    ].join('\n');
  };
  return [
    `idle benchmark${quick ? ' (--quick: indicative only)' : ''}: no requests; each host the primary ` +
      `of ${SESSIONS_PER_HOST} counter sessions; ${SETTLE_MS / 1000} s settle, then two samples a window apart`,
    `load average before: ${loads} (1 min, ${cpus().length} cores)`,
    ...r.runs.flatMap((run) => ['', table(run)]),
  ].join('\n');
}
