import type { Clock } from './clock.ts';

/**
 * Notices that this process was paused (SIGSTOP, a VM frozen, a very long
 * stall) and holds its sessions until it has re-read its own membership
 * record: a host declared dead while it was paused must not serve or
 * acknowledge what was queued for it meanwhile (PROTOCOL.md,
 * dead-serve-nothing). A timer ticks every `tickMs`; any gap above
 * `limitMs` since the last tick, seen by the timer or by a session about to
 * publish, is a pause. The check is one subtraction on the hot path.
 */
export class PauseGuard {
  private lastTick: number;
  private held = false;
  private timer: unknown;

  constructor(
    private readonly clock: Clock,
    /** Called once per pause: re-read the membership, then {@link release} (or stop serving). */
    private readonly onPause: () => void,
    private readonly limitMs = 250,
    private readonly tickMs = 50,
  ) {
    this.lastTick = clock.now();
  }

  start(): void {
    this.lastTick = this.clock.now();
    this.tick();
  }

  private tick(): void {
    this.timer = this.clock.setTimeout(() => {
      this.suspended();
      if (!this.held) this.lastTick = this.clock.now();
      this.tick();
    }, this.tickMs);
  }

  /** Whether sessions must hold what they would publish: a pause was seen and not yet cleared. */
  suspended(): boolean {
    if (!this.held && this.clock.now() - this.lastTick > this.limitMs) {
      this.held = true;
      this.onPause();
    }
    return this.held;
  }

  /** The membership record says this host is alive: sessions go on. */
  release(): void {
    this.held = false;
    this.lastTick = this.clock.now();
  }

  stop(): void {
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer);
  }
}
