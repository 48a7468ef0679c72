/** Time as the runtime sees it: injectable, so tests and replays control it. */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/**
 * The wall clock and Node's timers. `now()` is milliseconds since the epoch
 * with sub-millisecond resolution (`performance.timeOrigin + performance.now()`):
 * failover timelines taken in different processes of one machine compare.
 */
export const systemClock: Clock = Object.freeze({
  now: () => performance.timeOrigin + performance.now(),
  setTimeout: (fn: () => void, ms: number) => setTimeout(fn, ms),
  clearTimeout: (handle: unknown) => clearTimeout(handle as NodeJS.Timeout),
});
