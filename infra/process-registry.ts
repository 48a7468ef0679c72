import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Backstop against leaked nats-server processes and temp directories. Every pid the launcher
 * starts is recorded here until it exits, every `ftm-nats-*` directory until it is removed; a
 * `process.on('exit')` handler (installed on first use) SIGKILLs any process still alive and
 * removes the directories, synchronously, as 'exit' handlers must. It covers a normal exit,
 * `process.exit()` and an uncaught exception; it cannot run when Node itself is killed by a
 * signal. It is a backstop only: tests and the CLI still stop their servers explicitly.
 *
 * Deliberately module-level state: one registry per Node process, private to this file.
 */
const livePids = new Set<number>();
const liveDirs = new Set<string>();
let exitHandlerInstalled = false;

function cleanUpSync(): void {
  for (const pid of livePids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // ESRCH: it is already gone, which is all we want.
    }
  }
  livePids.clear();
  for (const dir of liveDirs) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch (error) {
      // Too late to throw: say what is left behind.
      console.error(`ftmesh infra: could not remove ${dir}: ${(error as Error).message}`);
    }
  }
  liveDirs.clear();
}

function installExitHandler(): void {
  if (exitHandlerInstalled) return;
  process.on('exit', cleanUpSync);
  exitHandlerInstalled = true;
}

/** Records a started child; call {@link forgetPid} once it has exited. */
export function trackPid(pid: number): void {
  installExitHandler();
  livePids.add(pid);
}

/** The child exited: the pid may be reused by the OS, so it must no longer be killed. */
export function forgetPid(pid: number): void {
  livePids.delete(pid);
}

/** Records a temp directory the launcher created, until it is removed. */
function trackDir(dir: string): void {
  installExitHandler();
  liveDirs.add(dir);
}

/** The directory was removed (or handed over): nothing left to clean up at exit. */
function forgetDir(dir: string): void {
  liveDirs.delete(dir);
}

/** Creates an `ftm-nats-*` directory under the OS temp dir, tracked until {@link removeTempDir}. */
export async function createTempDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ftm-nats-'));
  trackDir(dir);
  return dir;
}

/** Removes a directory made by {@link createTempDir}; a missing one is fine. */
export async function removeTempDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  forgetDir(dir);
}
