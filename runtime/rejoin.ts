import { isPrimary } from './copy-status.ts';
import { FtmError } from './errors.ts';
import type { FailoverCoordinator } from './failover-coordinator.ts';
import type { HostContext } from './host-context.ts';
import type { Liveness } from './liveness.ts';
import type { PauseGuard } from './pause-guard.ts';
import { fenceCopy } from './primaries.ts';
import type { ReplicaManager } from './replica-manager.ts';
import { backoffMs, retryPolicies, sleep } from './retry.ts';

/**
 * This host's own verdict (PROTOCOL.md, "Detection and verdicts"): read
 * from the watch, or found when the host re-reads its record after a pause,
 * it stops every session at once and joins again as a new incarnation once
 * the records that name it had a chance to move on.
 */
export class Rejoin {
  constructor(
    private readonly ctx: HostContext,
    private readonly replicas: ReplicaManager,
    private readonly liveness: Liveness,
    private readonly coordinator: FailoverCoordinator,
    /** Holds the sessions after a pause until the record says this host is alive. */
    private readonly pauseGuard: PauseGuard,
  ) {}

  /** The verdict names this incarnation: fence every primary, drop every copy, join again. */
  declaredDead(): void {
    const { ctx } = this;
    if (ctx.state.dead || ctx.state.closed) return;
    ctx.state.dead = true;
    for (const copy of [...ctx.copies.values()]) {
      if (copy.primary && isPrimary(copy.status))
        fenceCopy(ctx, copy, 'this host was declared dead');
      else if (copy.replica) this.replicas.drop(copy, 'this host was declared dead');
    }
    void this.rejoin();
  }

  /**
   * Waits (at most `boundMs`) while ownership records still name this host
   * and another live host could move them: its standbys promote, its
   * sessions are restored, on the verdict against its old incarnation. With
   * nobody else alive there is nothing to wait for; and what is still named
   * after the wait, this host settles itself (the coordinator asks a live
   * standby to take over, or restores).
   */
  async namedNoMore(boundMs: number): Promise<void> {
    const { ctx } = this;
    const end = ctx.clock.now() + boundMs;
    const named = () =>
      [...ctx.ownership.namedIn(ctx.hostId)].some(
        (sid) => !ctx.ownership.view.get(sid)?.record.closed,
      );
    const othersAlive = () => ctx.membership.liveHosts().some((h) => h !== ctx.hostId);
    while (!ctx.state.closed && ctx.clock.now() < end && named() && othersAlive())
      await sleep(ctx.clock, 100);
  }

  /** Joins again as a new incarnation, retried until it lands or the host closes. */
  private async rejoin(): Promise<void> {
    const { ctx } = this;
    await this.namedNoMore(2_000);
    for (let attempt = 0; !ctx.state.closed; attempt++) {
      const incarnation = ctx.random.hex(6);
      try {
        this.liveness.setIncarnation(incarnation);
        await ctx.membership.join(ctx.copies.load(ctx.capacity, ctx.state.draining), incarnation);
        ctx.state.dead = false;
        // A pause that led to the verdict held the sessions: the new incarnation holds none yet.
        this.pauseGuard.release();
        ctx.trace(`joined again as incarnation ${incarnation}`);
        for (const sid of ctx.ownership.namedIn(ctx.hostId)) this.coordinator.schedule(sid);
        return;
      } catch (err) {
        ctx.onError(new FtmError(`joining again failed (attempt ${attempt + 1})`, { cause: err }));
        await sleep(ctx.clock, backoffMs(retryPolicies.failover, Math.min(attempt, 6)));
      }
    }
  }

  /**
   * After a pause (SIGSTOP, a frozen VM) the sessions hold everything until
   * this host re-read its own record: declared dead meanwhile, it serves
   * nothing more.
   */
  async afterPause(): Promise<void> {
    const { ctx } = this;
    ctx.trace('paused: holding sessions until the membership record is re-read');
    for (let attempt = 0; !ctx.state.closed; attempt++) {
      try {
        await ctx.membership.refreshSelf();
        // Declared dead: the verdict fenced everything; the rejoin releases the guard.
        if (ctx.state.dead) return;
        this.pauseGuard.release();
        ctx.trace('alive after the pause: sessions go on');
        for (const c of ctx.copies.values()) (c.primary ?? c.replica)?.goOn();
        return;
      } catch (err) {
        ctx.onError(new FtmError("re-reading this host's record after a pause", { cause: err }));
        await sleep(ctx.clock, backoffMs(retryPolicies.failover, Math.min(attempt, 6)));
      }
    }
  }
}
