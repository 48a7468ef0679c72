import type { Clock } from './clock.ts';

/** How a repeated attempt backs off: `baseMs` doubling up to `maxMs`, for at most `attempts` tries. */
export type RetryPolicy = {
  readonly baseMs: number;
  readonly maxMs: number;
  readonly attempts: number;
};

/** The named policies of the runtime: one per kind of wait, not a loop per call site. */
export const retryPolicies = {
  /** A failover step whose store did not answer (JetStream electing a leader takes seconds). */
  failover: { baseMs: 50, maxMs: 2_000, attempts: 30 },
} as const satisfies Record<string, RetryPolicy>;

/** The wait before attempt `attempt` (0-based) of `policy`. */
export function backoffMs(policy: RetryPolicy, attempt: number): number {
  return Math.min(policy.baseMs * 2 ** attempt, policy.maxMs);
}

/** Resolves after `ms` on `clock`. */
export function sleep(clock: Clock, ms: number): Promise<void> {
  return new Promise((resolve) => clock.setTimeout(resolve, ms));
}

/**
 * Resolves with what `promise` resolves to, or `undefined` once `ms` passed
 * first. The timer is cleared either way: a bound left pending would keep a
 * closing process alive until it fires.
 */
export async function within<T>(
  clock: Clock,
  promise: Promise<T>,
  ms: number,
): Promise<T | undefined> {
  let timer: unknown;
  try {
    return await Promise.race([
      promise,
      new Promise<undefined>((resolve) => (timer = clock.setTimeout(() => resolve(undefined), ms))),
    ]);
  } finally {
    clock.clearTimeout(timer);
  }
}
