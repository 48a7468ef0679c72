import type { Clock } from './ports.ts';

/**
 * A host's own state: closed, draining, and whether it is a member (joined,
 * not declared dead). The membership record says "alive" a moment before
 * the host learns its join landed; a request that needs membership and
 * arrives in that moment waits for it ({@link untilMember}) instead of being
 * refused.
 */
export class HostState {
  closed = false;
  draining = false;
  private notMember = true;
  private waiters: (() => void)[] = [];

  /** Not a member: starting, or declared dead and joining again. */
  get dead(): boolean {
    return this.notMember;
  }

  set dead(dead: boolean) {
    this.notMember = dead;
    if (dead) return;
    const waiting = this.waiters;
    this.waiters = [];
    for (const wake of waiting) wake();
  }

  /** Resolves true once this host is a member (at once when it is), false after `timeoutMs`. */
  untilMember(clock: Clock, timeoutMs: number): Promise<boolean> {
    if (!this.notMember) return Promise.resolve(true);
    if (this.closed) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = clock.setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== wake);
        resolve(false);
      }, timeoutMs);
      const wake = () => {
        clock.clearTimeout(timer);
        resolve(true);
      };
      this.waiters.push(wake);
    });
  }
}
