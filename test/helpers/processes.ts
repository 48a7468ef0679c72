import { createClient, type MeshClient } from '../../runtime/index.ts';
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { until } from './until.ts';

/** The repository root: scripts are resolved and run from here. */
export const REPO_ROOT = fileURLToPath(new URL('../../', import.meta.url));

const STOP_GRACE_MS = 3_000;
/** Lines kept per stream; older ones are dropped so a chatty child cannot grow the test's heap. */
const MAX_BUFFERED_LINES = 10_000;

/** Options of {@link spawnNode}. */
export interface SpawnNodeOptions {
  /** Extra environment variables, merged over `process.env`. */
  env?: Record<string, string | undefined>;
  /** Working directory (default: the repository root). */
  cwd?: string;
}

/** How a spawned process ended. */
export interface ProcessExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A Node.js child process running a TypeScript script, see {@link spawnNode}. */
export interface NodeProcess {
  readonly pid: number;
  readonly child: ChildProcess;
  /**
   * Resolves with the first stdout line matching `regex`, including lines printed before the call
   * (every line is buffered from the start; repeated calls may return the same line). Rejects on
   * timeout or if the process exits without printing one, with the output's tail in the message.
   */
  waitForLine(regex: RegExp, timeoutMs?: number): Promise<string>;
  /** Sends `sig` if the process is still running (SIGKILL, SIGSTOP, SIGCONT...). */
  signal(sig: NodeJS.Signals): void;
  /** SIGTERM, then SIGKILL if still alive after 3 s; resolves once it exited. Safe to call twice. */
  stop(): Promise<void>;
  /** Resolves when the process has exited. Never rejects. */
  readonly exited: Promise<ProcessExit>;
  /** Every stdout line so far (the last 10 000). */
  readonly stdout: readonly string[];
  /** Every stderr line so far (the last 10 000). */
  readonly stderr: readonly string[];
}

// Module-level on purpose: stopAll() in an after() hook must find every process a suite started.
const running = new Set<NodeProcess>();

/** Splits a stream into lines, calling `onLine` for each complete one. */
function readLines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let partial = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) onLine(line.replace(/\r$/, ''));
  });
  stream.on('end', () => {
    if (partial !== '') onLine(partial);
    partial = '';
  });
}

/** Resolves true if `promise` settles within `ms`; leaves no timer behind. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const timer = new AbortController();
  try {
    return await Promise.race([
      promise.then(() => true),
      sleep(ms, false, { signal: timer.signal }),
    ]);
  } finally {
    timer.abort();
  }
}

function tail(lines: readonly string[], count = 20): string {
  return lines.slice(-count).join('\n');
}

/**
 * Spawns `node --import tsx <script> ...args` from the repository root with piped stdout and
 * stderr, and records it for {@link stopAll}.
 *
 * @example
 * const host = spawnNode('cli/ftmesh.ts', ['host', '--nats', nats.url]);
 * await host.waitForLine(/ready/, 10_000);
 * host.signal('SIGKILL');
 */
export function spawnNode(
  script: string,
  args: string[],
  opts: SpawnNodeOptions = {},
): NodeProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], {
    cwd: opts.cwd ?? REPO_ROOT,
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const pid = child.pid;
  if (pid === undefined) {
    // spawn() of process.execPath only fails if the machine is out of resources.
    throw new Error(`spawnNode: could not start ${process.execPath} for ${script}`);
  }

  const stdout: string[] = [];
  const stderr: string[] = [];
  const lineWaiters = new Set<(line: string) => void>();
  const push = (lines: string[], line: string): void => {
    lines.push(line);
    if (lines.length > MAX_BUFFERED_LINES) lines.shift();
  };
  readLines(child.stdout, (line) => {
    push(stdout, line);
    for (const waiter of lineWaiters) waiter(line);
  });
  readLines(child.stderr, (line) => push(stderr, line));

  // 'close' comes after 'exit' once stdout and stderr are drained: no line can follow it.
  let closed: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const closeWaiters = new Set<() => void>();
  child.once('close', (code, sig) => {
    closed = { code, signal: sig };
    for (const waiter of closeWaiters) waiter();
  });

  let exit: ProcessExit | undefined;
  const exited = new Promise<ProcessExit>((resolve) => {
    child.once('exit', (code, signal) => {
      exit = { code, signal };
      running.delete(proc);
      resolve(exit);
    });
  });

  const signal = (sig: NodeJS.Signals): void => {
    if (exit !== undefined) return;
    try {
      process.kill(pid, sig);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
    }
  };

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      if (exit === undefined) {
        signal('SIGTERM');
        signal('SIGCONT'); // a SIGSTOPped child must run to act on SIGTERM
        if (!(await settlesWithin(exited, STOP_GRACE_MS))) signal('SIGKILL');
      }
      await exited;
    })());

  const explain = (regex: RegExp, why: string): Error =>
    new Error(
      `${script} (pid ${pid}): ${why} waiting for a line matching ${regex}\n` +
        `--- stdout tail ---\n${tail(stdout)}\n--- stderr tail ---\n${tail(stderr)}`,
    );
  const exitedEarly = (regex: RegExp): Error =>
    explain(regex, `exited (code ${closed?.code}, signal ${closed?.signal}) before printing it`);

  const waitForLine = (regex: RegExp, timeoutMs = 10_000): Promise<string> => {
    // A /g or /y regex keeps lastIndex between test() calls; match every line from its start.
    const matches = (line: string): boolean => {
      regex.lastIndex = 0;
      return regex.test(line);
    };
    const seen = stdout.find(matches);
    if (seen !== undefined) return Promise.resolve(seen);
    if (closed !== undefined) return Promise.reject(exitedEarly(regex));
    return new Promise<string>((resolve, reject) => {
      const finish = (error: Error | undefined, line = ''): void => {
        clearTimeout(timer);
        lineWaiters.delete(onLine);
        closeWaiters.delete(onClose);
        if (error === undefined) resolve(line);
        else reject(error);
      };
      const onLine = (line: string): void => {
        if (matches(line)) finish(undefined, line);
      };
      const onClose = (): void => finish(exitedEarly(regex));
      const timer = setTimeout(
        () => finish(explain(regex, `timed out after ${timeoutMs} ms`)),
        timeoutMs,
      );
      lineWaiters.add(onLine);
      closeWaiters.add(onClose);
    });
  };

  const proc: NodeProcess = {
    pid,
    child,
    waitForLine,
    signal,
    stop,
    exited,
    stdout,
    stderr,
  };
  running.add(proc);
  return proc;
}

/**
 * Stops every process started by {@link spawnNode} that is still running, in parallel.
 * For an `after` hook: `after(stopAll)`.
 */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((proc) => proc.stop()));
}

/**
 * Registers a mocha afterEach in the calling describe that, when a test
 * failed, prints the last stderr lines of the processes in the returned map
 * (what the hosts said is the first thing to read), then SIGKILLs them all by
 * pid and waits for them: each test starts its own, and the last test's must
 * not load the machine for the next.
 */
export function useProcessesPerTest(): Map<string, NodeProcess> {
  const procs = new Map<string, NodeProcess>();
  afterEach(async function () {
    if (this.currentTest?.state === 'failed')
      for (const [id, p] of procs)
        if (p.stderr.length) console.log(`--- ${id} stderr ---\n${p.stderr.slice(-40).join('\n')}`);
    for (const p of procs.values()) p.signal('SIGKILL');
    await Promise.all([...procs.values()].map((p) => p.exited));
    procs.clear();
  });
  return procs;
}

/**
 * Starts `ftmesh host` processes with these ids into `procs`; resolves once
 * each printed `ready <id>` and `observer` (a host in the test) hears them.
 */
export async function startHostProcesses(
  procs: Map<string, NodeProcess>,
  natsUrl: string,
  ids: readonly string[],
  observer: { liveHosts(): string[] },
  /** More `ftmesh host` options, e.g. `['--heartbeat-timeout', '100']`. */
  extraArgs: readonly string[] = [],
): Promise<void> {
  for (const id of ids)
    procs.set(
      id,
      spawnNode('cli/ftmesh.ts', ['host', '--nats', natsUrl, '--id', id, '--trace', ...extraArgs]),
    );
  await Promise.all(
    ids.map((id) => procs.get(id)!.waitForLine(new RegExp(`^ready ${id}`), 20_000)),
  );
  await until(() => ids.every((id) => observer.liveHosts().includes(id)), {
    message: `hosts ${ids.join(', ')} heard`,
  });
}

/**
 * The test's own handle on the mesh: a light client (no heartbeat, no log,
 * serves nothing). Its errors are collected in `errors`; a test that does not
 * expect any asserts the list is empty.
 */
export async function createTestClient(natsUrl: string): Promise<MeshClient & { errors: Error[] }> {
  const errors: Error[] = [];
  const client = await createClient({ nats: natsUrl, onError: (err) => errors.push(err) });
  return Object.assign(client, { errors });
}
