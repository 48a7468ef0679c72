import { setTimeout as sleep } from 'node:timers/promises';

/** Options of {@link until}. */
export interface UntilOptions {
  /** Give up after this many ms (default 5 000). */
  timeoutMs?: number;
  /** Pause between calls in ms (default 10). */
  intervalMs?: number;
  /** What was awaited, for the timeout error (default: the source of `fn`). */
  message?: string;
}

function describe(value: unknown): string {
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

/**
 * Calls `fn` until it returns (or resolves to) a truthy value and resolves with that value.
 * A throw or rejection counts as "not yet" and is kept as the last value. Rejects after
 * `timeoutMs` with `message` and the last value. This is the only way tests wait for something
 * to happen: never a fixed sleep.
 *
 * @example
 * await until(() => standby.info(sid)?.seq === 10, { message: 'standby reaches seq 10' });
 */
export async function until<T>(fn: () => T | Promise<T>, opts: UntilOptions = {}): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 5_000;
  const intervalMs = opts.intervalMs ?? 10;
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await fn();
      if (value) return value;
      last = value;
    } catch (error) {
      last = error;
    }
    if (Date.now() >= deadline) {
      const what = opts.message ?? fn.toString();
      throw new Error(
        `until: timed out after ${timeoutMs} ms waiting for ${what}; last value: ${describe(last)}`,
        {
          cause: last instanceof Error ? last : undefined,
        },
      );
    }
    await sleep(Math.min(intervalMs, Math.max(0, deadline - Date.now())));
  }
}
