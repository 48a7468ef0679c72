import type { ControlRequest } from './control-channel.ts';
import { isPrimary } from './copy-status.ts';
import { FtmError, NoResponderError, SessionNotFoundError } from './errors.ts';
import type { FailoverCause } from './failover.ts';
import { rendezvousScore } from './failover.ts';
import type { HostContext } from './host-context.ts';
import { fenceCopy } from './primaries.ts';
import type { Promotion } from './promotion.ts';
import type { Protection } from './protection.ts';
import type { ReplicaManager } from './replica-manager.ts';
import type { Restore } from './restore.ts';
import { backoffMs, retryPolicies, type RetryPolicy } from './retry.ts';

/**
 * Decides, per session, what this host does about the record, the verdicts
 * and its own copy (PROTOCOL.md, "Failover, restore, re-protection"). Every
 * trigger (a record changed, a host's verdict, the sweep) queues a
 * reconcile of the session; a reconcile reads the latest of everything when
 * it runs and takes at most one action. Nothing is dropped because a session
 * is busy: the queue holds it, and a coalesced reconcile sees all that the
 * skipped ones would have seen.
 */
export class FailoverCoordinator {
  /** Failed attempts per session, for the retry policy. */
  private readonly attempts = new Map<string, number>();
  private readonly retryTimers = new Map<string, unknown>();
  /**
   * Sessions whose named standby answered a take-over with "no copy here",
   * at the record's revision then: with that record, this host restores.
   */
  private readonly standbyEmpty = new Map<string, number>();

  constructor(
    private readonly ctx: HostContext,
    private readonly replicas: ReplicaManager,
    private readonly protection: Protection,
    private readonly promotion: Promotion,
    private readonly restorer: Restore,
  ) {}

  /** Queues a reconcile of `sid` unless one is waiting already. */
  schedule(sid: string): void {
    void this.ctx.queues
      .coalesce(sid, () => this.reconcile(sid))
      .catch((err: unknown) => this.failed(sid, err));
  }

  /**
   * A record changed (the watch, or our own write): the local stops that
   * must not wait for the queue happen here, then a reconcile is queued.
   */
  onRecord(sid: string): void {
    const { ctx } = this;
    const owned = ctx.ownership.view.get(sid);
    const copy = ctx.copies.get(sid);
    if (copy && isPrimary(copy.status)) {
      const r = owned?.record;
      if (r && (r.epoch > copy.epoch || r.closed))
        fenceCopy(ctx, copy, `epoch ${r.epoch}${r.closed ? ' closed the session' : ' exists'}`, {
          expected: !!r.closed,
        });
    } else if (copy?.replica && copy.status.type !== 'promoting')
      this.replicas.confirmIfNamed(copy, owned);
    this.schedule(sid);
  }

  /** A host's membership record changed: reconcile the sessions that name it. */
  onHost(host: string): void {
    for (const sid of this.ctx.ownership.namedIn(host)) this.schedule(sid);
  }

  /** Twice a second: every local copy, and every session naming a dead host. */
  sweep(): void {
    const { ctx } = this;
    if (ctx.state.closed || ctx.state.dead) return;
    for (const copy of ctx.copies.values()) this.schedule(copy.sid);
    for (const [host, v] of ctx.membership.hosts)
      if (v.record.state === 'dead')
        for (const sid of ctx.ownership.namedIn(host)) this.schedule(sid);
  }

  /** The decision table of PROTOCOL.md. Runs in the session's queue. */
  private async reconcile(sid: string): Promise<void> {
    const { ctx } = this;
    if (ctx.state.closed || ctx.state.dead) return;
    const owned = ctx.ownership.view.get(sid);
    const r = owned?.record;
    const copy = ctx.copies.get(sid);
    if (copy && isPrimary(copy.status)) {
      if (!r || r.closed || r.epoch > copy.epoch || r.primary !== ctx.hostId)
        return fenceCopy(
          ctx,
          copy,
          r
            ? `the record names ${r.primary || 'nobody'} in epoch ${r.epoch}`
            : 'the record is gone',
          { expected: !!r?.closed },
        );
      // A hand-off in progress is the drain's; re-protection waits for it to end.
      if (copy.status.type !== 'primary' || ctx.state.draining || !ctx.tuning.failover) return;
      const p = copy.primary!;
      if (p.standbyHost && ctx.membership.deadFor(p.standbyHost) !== undefined) {
        await this.protection.dropStandby(copy);
      }
      if (!p.standbyHost && copy.status.type === 'primary') await this.protection.protect(copy);
      this.attempts.delete(sid);
      return;
    }
    if (copy?.replica) {
      if (this.replicas.dropsUs(owned, copy))
        return this.replicas.drop(copy, 'the record no longer names it');
      this.replicas.confirmIfNamed(copy, owned);
      if (
        copy.status.type === 'attaching' &&
        ctx.clock.now() - copy.createdAt > ctx.tuning.unnamedCopyMs
      )
        return this.replicas.drop(copy, `never named in ${ctx.tuning.unnamedCopyMs} ms`);
      if (copy.status.type !== 'standby' || !r || r.standby !== ctx.hostId || !ctx.tuning.failover)
        return;
      if (ctx.membership.deadFor(r.primary) === undefined) return;
      const { cause, at } = this.verdict(r.primary);
      await this.promotion.promote(copy, r.primary, cause, at);
      this.attempts.delete(sid);
      return;
    }
    if (
      copy ||
      !r ||
      r.closed ||
      !ctx.tuning.failover ||
      ctx.capacity === 0 ||
      !ctx.actors.has(r.actor)
    )
      return;
    await this.maybeRestore(sid);
  }

  /**
   * No copy here: restore when primary and standby are both dead by verdict
   * and have been for the grace (a host declared dead learns it within it),
   * this host first in the rendezvous ranking of the live ones (the next
   * ones after a grace each); or when the record
   * names this host primary and it holds nothing (it rejoined) with no live
   * standby to take over.
   */
  private async maybeRestore(sid: string): Promise<void> {
    const { ctx } = this;
    const r = ctx.ownership.view.get(sid)!.record;
    const alive = (h: string) => !!h && ctx.membership.deadFor(h) === undefined;
    if (r.primary === ctx.hostId) {
      // Named primary, holding nothing (this host joined again): a live
      // standby takes over; without one, or when it holds no copy either
      // (it joined again too), this host restores.
      const revision = ctx.ownership.view.get(sid)!.revision;
      if (alive(r.standby) && this.standbyEmpty.get(sid) !== revision)
        return this.ask(
          r.standby,
          sid,
          { op: 'take-over', sid, from: ctx.hostId, epoch: r.epoch, cause: 'leave' },
          (err) => {
            if (!(err instanceof SessionNotFoundError)) return;
            this.standbyEmpty.set(sid, revision);
            this.schedule(sid);
          },
        );
      this.standbyEmpty.delete(sid);
      await this.restorer.restore(sid, r, 'restore', ctx.clock.now());
      this.attempts.delete(sid);
      return;
    }
    if (r.standby === ctx.hostId && alive(r.primary))
      // Named standby, holding nothing: the primary names another.
      return this.ask(r.primary, sid, { op: 'reprotect', sid, exclude: [ctx.hostId] });
    const primaryDead = ctx.membership.deadFor(r.primary);
    // This host named standby but holding nothing counts as gone: nothing here to promote.
    const standbyDead =
      !r.standby || r.standby === ctx.hostId ? Infinity : ctx.membership.deadFor(r.standby);
    if (primaryDead === undefined || standbyDead === undefined) return;
    // Every live host ranks the candidates the same way (rendezvous); the
    // first restores after the grace, each next one a grace later if the
    // record still waits (the first may be gone too, or lack the actor).
    const ranked = [];
    for (const [id, v] of ctx.membership.hosts)
      if (v.record.state === 'alive' && v.record.load.capacity > 0 && !v.record.load.draining)
        ranked.push(id);
    ranked.sort((x, y) => rendezvousScore(sid, y) - rendezvousScore(sid, x) || (x < y ? -1 : 1));
    const rank = ranked.indexOf(ctx.hostId);
    if (rank < 0) return;
    const deadFor = Math.min(primaryDead, standbyDead);
    const wait = ctx.tuning.restoreGraceMs * (rank + 1) - deadFor;
    if (wait > 0) return this.later(sid, wait);
    await this.restorer.restore(sid, r, 'restore', ctx.clock.now() - deadFor);
    this.attempts.delete(sid);
  }

  /**
   * Asks `host` to act on `sid`; a failure is left to the next sweep's
   * reconcile (and to `onRefused`). Nobody answering for a host recorded
   * alive is a suspicion: the membership probes it.
   */
  private ask(
    host: string,
    sid: string,
    req: ControlRequest,
    onRefused: (err: unknown) => void = () => undefined,
  ): void {
    const { ctx } = this;
    ctx.control.request(host, req, ctx.tuning.requestTimeoutMs).catch((err: unknown) => {
      ctx.trace(`${sid}: asking ${host} to ${req.op} failed: ${String(err)}`);
      if (err instanceof NoResponderError && ctx.membership.isAlive(host))
        ctx.membership
          .confirm(host, 'probe')
          .catch((e: unknown) =>
            ctx.onError(new FtmError(`confirming that ${host} is gone`, { cause: e })),
          );
      onRefused(err);
    });
  }

  /** How and when the dead host was found out, for the failover record. */
  private verdict(host: string): { cause: FailoverCause; at: number } {
    const v = this.ctx.membership.hosts.get(host);
    const at = this.ctx.membership.suspectedAt(host) ?? v?.since ?? this.ctx.clock.now();
    return { cause: v?.record.cause ?? 'advisory', at };
  }

  /** A reconcile failed (a store that does not answer): try again later, by the failover policy. */
  private failed(sid: string, err: unknown): void {
    const { ctx } = this;
    if (ctx.state.closed) return;
    const attempt = this.attempts.get(sid) ?? 0;
    const policy: RetryPolicy = retryPolicies.failover;
    ctx.onError(
      new FtmError(`${sid}: reconcile failed (attempt ${attempt + 1}), trying again`, {
        cause: err,
      }),
    );
    if (attempt + 1 >= policy.attempts) {
      this.attempts.delete(sid);
      return;
    }
    this.attempts.set(sid, attempt + 1);
    this.later(sid, backoffMs(policy, attempt));
  }

  private later(sid: string, ms: number): void {
    if (this.retryTimers.has(sid)) return;
    // A millisecond at least: a wait computed as a hair above zero would
    // come due at the same instant, again and again.
    ms = Math.max(1, ms);
    this.retryTimers.set(
      sid,
      this.ctx.clock.setTimeout(() => {
        this.retryTimers.delete(sid);
        this.schedule(sid);
      }, ms),
    );
  }

  stop(): void {
    for (const t of this.retryTimers.values()) this.ctx.clock.clearTimeout(t);
    this.retryTimers.clear();
  }
}
