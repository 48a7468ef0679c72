import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { setPriority } from 'node:os';
import { basename, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { StartupError } from './errors.ts';
import { PARENT_WATCH_ENV } from './stop-signal.ts';

/**
 * ftmesh commands started as child processes of `dev` and `demo`: this same
 * CLI (`process.execPath` + this file, with the TypeScript loader this
 * process runs under when it runs from source; none from dist), its output
 * read line by line, stopped by pid.
 */

/** This CLI's entry file, in whichever form (ftmesh.ts from source, ftmesh.js from dist) runs now. */
export const cliEntry = fileURLToPath(
  new URL(`./ftmesh${import.meta.url.endsWith('.ts') ? '.ts' : '.js'}`, import.meta.url),
);

/**
 * Node's own flags that make this process load TypeScript (tsx's `--import`
 * or `--require`, a loader), passed on to children; debugger and watch flags
 * are not (a child would fight over the port or restart itself).
 */
function loaderFlags(): string[] {
  const out: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (/^--(inspect|debug|watch|test|prof|cpu-prof|heap-prof)/.test(arg)) continue;
    out.push(arg);
    // A flag whose value is the next argument (`--import tsx`).
    if (/^--(import|require|loader|experimental-loader|conditions)$/.test(arg) && argv[i + 1]) {
      out.push(argv[++i]!);
    }
  }
  return out;
}

/** How a user runs this CLI from the shell, for the commands dev and demo print. */
export function cliCommand(): string {
  const invoked = process.argv[1] ?? '';
  if (basename(invoked) === 'ftmesh') return 'ftmesh';
  const path = relative(process.cwd(), cliEntry) || cliEntry;
  return cliEntry.endsWith('.ts') ? `npx tsx ${path}` : `node ${path}`;
}

/** How a child ended. */
export interface ChildExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A running ftmesh child process. */
export interface Child {
  /** What it is, for messages: `host dev-h1`. */
  readonly name: string;
  readonly pid: number;
  /** Resolves once it exited. Never rejects. */
  readonly exited: Promise<ChildExit>;
  /** Whether it is still running. */
  readonly running: boolean;
  /** The last stderr lines (at most 20), for reports. */
  readonly stderrTail: readonly string[];
  /**
   * Resolves with the first stdout line matching `regex` (printed before or
   * after the call); rejects when the child exits first or `timeoutMs` passes,
   * with its last stderr line in the message.
   */
  waitForLine(regex: RegExp, timeoutMs: number): Promise<string>;
  /** Sends a signal if it still runs. */
  signal(sig: NodeJS.Signals): void;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it exited. */
  stop(graceMs: number): Promise<ChildExit>;
  /** Gives a child started with `nice` the normal priority back (a no-op otherwise). */
  renice(): void;
  /**
   * Asks the child to stop at once, cleanly (no drain): closes its stdin,
   * which it reads as its parent gone (stop-signal.ts). Resolves once it
   * exited, after SIGKILL if it has not within `graceMs`.
   */
  stopNow(graceMs: number): Promise<ChildExit>;
}

/** Options of {@link spawnCli}. */
export interface SpawnOptions {
  readonly name: string;
  readonly env?: Readonly<Record<string, string>>;
  /** Every stdout line, as it comes. */
  readonly onStdout?: (line: string) => void;
  /** Every stderr line, as it comes (default: kept for {@link Child.stderrTail} only). */
  readonly onStderr?: (line: string) => void;
  /**
   * Start at a low priority, until {@link Child.renice}: a Node start-up takes
   * a core for a second, and on a small machine it would starve the running
   * hosts' heartbeats into false failovers (a new host on its own machine
   * would not).
   */
  readonly nice?: boolean;
}

/** Sets the priority of every thread of `pid` (Linux priorities are per thread); best effort. */
function prioritize(pid: number, priority: number): void {
  let tids = [pid];
  try {
    tids = readdirSync(`/proc/${pid}/task`).map(Number);
  } catch {
    // No /proc: the main thread is what can be reached.
  }
  for (const tid of tids) {
    try {
      setPriority(tid, priority);
    } catch {
      // Gone, or not allowed to raise it back (not root): it runs niced, which is still correct.
    }
  }
}

const TAIL_LINES = 20;
const KEPT_STDOUT_LINES = 200;

function lines(stream: NodeJS.ReadableStream, onLine: (line: string) => void): void {
  let partial = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop() ?? '';
    for (const line of parts) onLine(line);
  });
  stream.on('end', () => {
    if (partial) onLine(partial);
    partial = '';
  });
}

/**
 * Starts `ftmesh ...args` as a child process. Its stdin is a pipe it watches
 * ({@link PARENT_WATCH_ENV}): when this process dies, the child stops too.
 */
export function spawnCli(args: readonly string[], options: SpawnOptions): Child {
  const child = spawn(process.execPath, [...loaderFlags(), cliEntry, ...args], {
    env: { ...process.env, ...options.env, [PARENT_WATCH_ENV]: '1' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const pid = child.pid;
  if (pid === undefined)
    throw new StartupError(`could not start ${options.name}: ${process.execPath} did not run`);
  // A child that exits first closes its end: writes would fail, and nobody writes.
  child.stdin.on('error', () => undefined);
  if (options.nice) prioritize(pid, 10);
  const stdout: string[] = [];
  const stderrTail: string[] = [];
  const waiters = new Set<(line: string | undefined) => void>();
  let exit: ChildExit | undefined;
  lines(child.stdout, (line) => {
    stdout.push(line);
    if (stdout.length > KEPT_STDOUT_LINES) stdout.shift();
    options.onStdout?.(line);
    for (const w of waiters) w(line);
  });
  lines(child.stderr, (line) => {
    stderrTail.push(line);
    if (stderrTail.length > TAIL_LINES) stderrTail.shift();
    options.onStderr?.(line);
  });
  const exited = new Promise<ChildExit>((resolve) => {
    // 'close': the process exited and its output is read to the end.
    child.once('close', (code, signal) => {
      exit = { code, signal };
      for (const w of waiters) w(undefined);
      resolve(exit);
    });
  });
  const signal = (sig: NodeJS.Signals): void => {
    if (exit !== undefined || child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(pid, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  };
  /** Asks the child to exit; SIGKILL if it has not within `graceMs`; resolves once it is gone. */
  const askToExit = async (ask: () => void, graceMs: number): Promise<ChildExit> => {
    if (exit !== undefined) return exit;
    ask();
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), graceMs);
    });
    const first = await Promise.race([exited, late]);
    clearTimeout(timer);
    if (first === 'late') signal('SIGKILL');
    return exited;
  };
  return {
    name: options.name,
    pid,
    exited,
    get running() {
      return exit === undefined;
    },
    stderrTail,
    waitForLine(regex, timeoutMs) {
      const seen = stdout.find((l) => regex.test(l));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise<string>((resolve, reject) => {
        const done = (line: string | undefined) => {
          if (line !== undefined && !regex.test(line)) return;
          waiters.delete(done);
          clearTimeout(timer);
          if (line !== undefined) return resolve(line);
          const why = stderrTail.filter((l) => l.trim()).at(-1);
          reject(
            new StartupError(
              `${options.name} ${describeExit(exit!)} before it was ready${why ? `: ${why.replace(/^ftmesh: /, '')}` : ''}`,
            ),
          );
        };
        const timer = setTimeout(() => {
          waiters.delete(done);
          reject(new StartupError(`${options.name} was not ready within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.add(done);
        if (exit !== undefined) done(undefined);
      });
    },
    signal,
    stop: (graceMs) => askToExit(() => signal('SIGTERM'), graceMs),
    renice() {
      if (options.nice && exit === undefined) prioritize(pid, 0);
    },
    stopNow: (graceMs) => askToExit(() => child.stdin.end(), graceMs),
  };
}

/** One line on how a child ended, e.g. `was killed by SIGKILL`. */
export function describeExit(e: ChildExit): string {
  return e.signal ? `was killed by ${e.signal}` : `exited with code ${e.code}`;
}
