import { strict as assert } from 'node:assert';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT, spawnNode, type NodeProcess } from '../helpers/processes.ts';

/** The CLI entry, as tests run it (`node --import tsx cli/ftmesh.ts`). */
export const CLI = 'cli/ftmesh.ts';

/** The demos' actor module: hosts of a test load it with `--actors`. */
export const DEMO_ACTORS = join(REPO_ROOT, 'cli/demo-actors.ts');

/** How a finished `ftmesh` run ended and what it printed. */
export interface CliRun {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: readonly string[];
  /** stderr lines, blank ones left out. */
  readonly stderr: readonly string[];
  /** How long it ran, ms. */
  readonly ms: number;
}

/** Starts `ftmesh ...args`; the process is recorded for `stopAll()`. */
export function startCli(args: readonly string[], env: Record<string, string> = {}): NodeProcess {
  return spawnNode(CLI, [...args], { env: { FTMESH_SECRET: undefined, ...env } });
}

/**
 * Runs `ftmesh ...args` to its end and resolves with its exit and output
 * (read to the end: it waits for the streams to close). Rejects when it has
 * not exited by itself within `timeoutMs`: a command that hangs is a bug.
 */
export async function runCli(
  args: readonly string[],
  options: { env?: Record<string, string>; timeoutMs?: number } = {},
): Promise<CliRun> {
  const started = Date.now();
  const p = startCli(args, options.env);
  const closed = once(p.child, 'close');
  const timeoutMs = options.timeoutMs ?? 15_000;
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => {
    timer = setTimeout(() => resolve('late'), timeoutMs);
  });
  const first = await Promise.race([closed, late]);
  clearTimeout(timer);
  if (first === 'late') {
    p.signal('SIGKILL');
    await p.exited;
    throw new Error(
      `ftmesh ${args.join(' ')} did not exit by itself within ${timeoutMs} ms\n` +
        `stdout: ${p.stdout.slice(-5).join('\n')}\nstderr: ${p.stderr.slice(-5).join('\n')}`,
    );
  }
  const exit = await p.exited;
  return {
    code: exit.code,
    signal: exit.signal,
    stdout: p.stdout,
    stderr: p.stderr.filter((l) => l.trim() !== ''),
    ms: Date.now() - started,
  };
}

/**
 * Asserts the shape of a fatal error: exit `code`, exactly one stderr line,
 * starting `ftmesh: ` and matching `pattern`, and no stack trace anywhere.
 */
export function assertOneLineError(run: CliRun, code: number, pattern: RegExp): void {
  const all = [...run.stdout, ...run.stderr];
  assert.ok(!all.some((l) => /^\s+at /.test(l)), `a stack trace was printed:\n${all.join('\n')}`);
  assert.equal(run.stderr.length, 1, `one stderr line, got:\n${run.stderr.join('\n')}`);
  assert.match(run.stderr[0]!, /^ftmesh: /);
  assert.match(run.stderr[0]!, pattern);
  assert.equal(run.code, code, `exit code (stderr: ${run.stderr.join(' | ')})`);
}

/** A temporary directory for a suite's files, removed in `after`. */
export function useTempDir(prefix: string): { readonly path: string } {
  let dir: string | undefined;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), `ftm-${prefix}-`));
  });
  after(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  return {
    get path() {
      if (!dir) throw new Error('useTempDir: read the path inside a test or hook');
      return dir;
    },
  };
}

/** Writes `text` to `name` in `dir`; resolves with the file's path. */
export async function writeModule(dir: string, name: string, text: string): Promise<string> {
  const file = join(dir, name);
  await writeFile(file, text);
  return file;
}

/** An import line for the runtime's public API from a module outside the repository. */
export const importRuntime = `import { defineActor } from ${JSON.stringify(
  pathToFileURL(join(REPO_ROOT, 'runtime/index.ts')).href,
)};`;

/** True when no process has this pid (it exited and was reaped). */
export function isGone(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}
