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
  // 0 ms: the next turn of the event loop, not the 1 ms at least a Node timer waits
  // (one log flush per burst of commits must not add a millisecond to each reply).
  setTimeout: (fn: () => void, ms: number): unknown =>
    ms > 0 ? setTimeout(fn, ms) : { immediate: setImmediate(fn) },
  clearTimeout: (handle: unknown) => {
    if (handle && typeof handle === 'object' && 'immediate' in handle)
      clearImmediate((handle as { immediate: NodeJS.Immediate }).immediate);
    else clearTimeout(handle as NodeJS.Timeout);
  },
});
