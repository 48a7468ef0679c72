/**
 * A token bucket: `rate` tokens per second, at most `burst` saved up. One per
 * client id and kind of traffic; refilled lazily on take (no timer).
 *
 * A refused take is promised a token: the first one the refill brings that
 * no earlier refused take was promised. {@link waitMs} tells its wait, so
 * that frames refused together, each retried after its own wait, arrive one
 * refill apart and all get through (instead of all retrying at the same
 * instant and all but one being refused again).
 */
export class TokenBucket {
  private tokens: number;
  private last: number;
  /** When the refill has a token no refused take was promised yet. */
  private promisedUntil: number;
  /** The wait of the last refused take (0 after a take that succeeded). */
  private wait = 0;

  constructor(
    private readonly rate: number,
    private readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.last = now;
    this.promisedUntil = now;
  }

  /** Takes one token if there is one; true when taken. When refused, {@link waitMs} says for how long. */
  take(now: number): boolean {
    const elapsed = now - this.last;
    if (elapsed > 0) {
      this.tokens = Math.min(this.burst, this.tokens + (elapsed * this.rate) / 1000);
      this.last = now;
    }
    // A hair under 1: a retry arriving exactly at its promised instant must not lose to rounding.
    if (this.tokens < 1 - 1e-9) {
      const interval = 1000 / this.rate;
      const ready = now + (1 - this.tokens) * interval;
      const at = Math.max(ready, this.promisedUntil);
      this.promisedUntil = at + interval;
      this.wait = Math.max(1, Math.ceil(at - now));
      return false;
    }
    this.tokens -= 1;
    this.wait = 0;
    return true;
  }

  /**
   * Milliseconds the last refused take should wait before it is tried again:
   * until the token promised to it is there (at least 1, rounded up). 0 when
   * the last take succeeded.
   */
  waitMs(): number {
    return this.wait;
  }
}
