import { setTimeout as sleep } from 'node:timers/promises';
import { FailureError } from './errors.ts';

/**
 * Polls `ready` (every 10 ms) until it returns a truthy value, and resolves
 * with it; a throw counts as "not yet". How the CLI waits on the mesh: for a
 * host to be live, a session to be re-protected. Never a fixed sleep.
 * @throws FailureError naming `what` after `timeoutMs`
 */
export async function waitUntil<T>(
  ready: () => T | Promise<T>,
  what: string,
  timeoutMs = 10_000,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const value = await ready();
      if (value) return value;
    } catch {
      // not yet
    }
    if (Date.now() > deadline)
      throw new FailureError(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(10);
  }
}
