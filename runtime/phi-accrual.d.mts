/**
 * Types of `phi-accrual.mjs`: the phi-accrual failure detector (Hayashibara
 * et al., "The φ Accrual Failure Detector", 2004; as in Akka and Cassandra).
 *
 * It keeps, per monitored id, the last `maxSamples` intervals between
 * heartbeats and judges a silence against their distribution:
 * `phi = -log10(1 - F(silence))`, F the normal CDF (Akka's logistic
 * approximation) with the intervals' mean plus `acceptablePauseMs` and their
 * standard deviation, at least `minStdDeviationMs`. phi = 1 means about a 10 %
 * chance that a beat still comes, phi = 8 about 10⁻⁸ under that law. A steady
 * sender is suspected soon after its usual interval; a jittery one later.
 *
 * Pure and timer-free: every time is passed in (ms, any monotonic clock, the
 * same for all calls); O(1) per heartbeat (a ring buffer with running sums).
 *
 * bench/README.md ("detector") has the measurements the defaults come from.
 * @module
 */

/** Options of {@link PhiAccrualDetector}; every one has a default. */
export type PhiAccrualOptions = {
  /**
   * phi at or above which an id is suspected (default 8). Higher: fewer
   * false suspicions, later detection.
   */
  threshold?: number;
  /**
   * Floor of the standard deviation, in ms (default 2): a perfectly steady
   * history would otherwise turn the smallest delay into a suspicion.
   */
  minStdDeviationMs?: number;
  /**
   * Added to the mean interval, in ms (default 5): a pause this long on top
   * of the usual interval (a scheduling hiccup, a GC) counts as normal.
   */
  acceptablePauseMs?: number;
  /** Intervals kept per id (default 200: one second of 5 ms beats). */
  maxSamples?: number;
  /**
   * The interval expected before any is measured, in ms (default 5, the
   * heartbeat period): the first beat starts the history with two intervals
   * a quarter of it either side of it.
   */
  firstIntervalMs?: number;
};

/** Per-id phi-accrual failure detection; see the module documentation. */
export declare class PhiAccrualDetector {
  /** Options as given, defaults filled in. @throws RangeError on an invalid option */
  constructor(options?: PhiAccrualOptions);
  readonly threshold: number;
  readonly minStdDeviationMs: number;
  readonly acceptablePauseMs: number;
  readonly maxSamples: number;
  readonly firstIntervalMs: number;
  /**
   * Records a beat of `id` at `nowMs`; the first one starts monitoring it.
   * Every interval is recorded, long ones too: the caller removes an id it
   * judges down, so an interval that ends here was tolerated.
   */
  heartbeat(id: string, nowMs: number): void;
  /** The suspicion level of `id` at `nowMs`; 0 for an id not monitored. */
  phi(id: string, nowMs: number): number;
  /**
   * The silence (ms since the last beat) at which phi reaches the threshold
   * with the current history: arm a timer for `last beat + this`.
   * Undefined for an id not monitored.
   */
  suspicionAtMs(id: string): number | undefined;
  /** The time of the last beat of `id`; undefined for an id not monitored. */
  lastHeartbeatMs(id: string): number | undefined;
  /** Stops monitoring `id` (it left, or was judged down); whether it was monitored. */
  remove(id: string): boolean;
  /** Whether `id` is monitored (has beaten since it was last removed). */
  has(id: string): boolean;
}
