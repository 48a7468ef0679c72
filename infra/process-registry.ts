/**
 * Backstop against leaked nats-server processes. Every pid the launcher starts is recorded here
 * until it exits; a `process.on('exit')` handler (installed on first use) SIGKILLs any still
 * alive, synchronously, as 'exit' handlers must be. It covers a normal exit, `process.exit()` and
 * an uncaught exception; it cannot cover the Node process itself being SIGKILLed. It is a
 * backstop only: tests and the CLI still stop their servers explicitly.
 *
 * This is deliberately module-level state: one registry per Node process, private to this file.
 */
const livePids = new Set<number>();
let exitHandlerInstalled = false;

function killAllSync(): void {
  for (const pid of livePids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Already gone (ESRCH): nothing to clean up.
    }
  }
  livePids.clear();
}

/** Records a started child; call {@link forgetPid} once it has exited. */
export function trackPid(pid: number): void {
  if (!exitHandlerInstalled) {
    process.on('exit', killAllSync);
    exitHandlerInstalled = true;
  }
  livePids.add(pid);
}

/** The child exited: the pid may be reused by the OS, so it must no longer be killed. */
export function forgetPid(pid: number): void {
  livePids.delete(pid);
}
