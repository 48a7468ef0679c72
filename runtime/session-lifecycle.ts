import { freeze } from 'immer';
import {
  ClosedError,
  FtmError,
  InvalidArgumentError,
  SessionExistsError,
  SessionNotFoundError,
} from './errors.ts';
import type { HostContext } from './host-context.ts';
import type { SessionInfo } from './mesh-client.ts';
import type { OwnerRecord } from './ownership.ts';
import { fenceCopy, startPrimary } from './primaries.ts';
import { within } from './retry.ts';
import type { SessionSnapshot } from './session-types.ts';
import type { Protection } from './protection.ts';
import type { ReplicaManager } from './replica-manager.ts';
import type { Restore } from './restore.ts';
import type { SessionCopy } from './session-copies.ts';
import { emptyMeta } from './session-meta.ts';
import { assertId } from './subjects.ts';

/**
 * A session's beginning and end on this host: open (the record, a standby,
 * the primary serving), close (the record closed, the copies gone, snapshot
 * and log deleted) and a restore an operator asks for. Each runs in the
 * session's queue.
 */
export class SessionLifecycle {
  constructor(
    private readonly ctx: HostContext,
    private readonly replicas: ReplicaManager,
    private readonly protection: Protection,
    private readonly restorer: Restore,
  ) {}

  /**
   * Opens `sid` with this host as primary and `standby` (or `standbyHint`,
   * or a partner with room) as its standby; resolves with the record.
   * @throws SessionExistsError when the session is open anywhere
   */
  open(
    actorName: string,
    sid: string,
    opts: { standby?: string; standbyHint?: string; init?: unknown },
  ): Promise<OwnerRecord> {
    const { ctx } = this;
    return ctx.queues.run(sid, async () => {
      if (ctx.state.closed) throw new ClosedError(`host ${ctx.hostId} is closed`);
      assertId('sid', sid);
      if (opts.standby !== undefined) assertId('hostId', opts.standby);
      if (opts.standby === ctx.hostId)
        throw new InvalidArgumentError(
          `standby: pick another host than the primary (${ctx.hostId})`,
        );
      const existing = ctx.copies.has(sid) ? undefined : await ctx.ownership.get(sid);
      if (ctx.copies.has(sid) || (existing && !existing.record.closed))
        throw new SessionExistsError(
          `session ${sid} exists: open it under another id, or restore it`,
        );
      const actor = this.replicas.actorNamed(actorName);
      this.replicas.assertRoom();
      // A session closed before: a new life in the next epoch, nothing of the old one kept.
      if (existing?.record.closed) await ctx.snapshots.delete(sid);
      const init: SessionSnapshot = {
        actor: actorName,
        state: freeze(actor.initialState(opts.init), true),
        seq: 0,
        epoch: existing ? existing.record.epoch + 1 : 1,
        meta: emptyMeta(),
      };
      const wanted = opts.standby ?? opts.standbyHint;
      const standby = await this.protection.attachSomewhere(
        actor,
        sid,
        init,
        [],
        wanted ? { host: wanted, hint: opts.standby === undefined } : undefined,
      );
      const r = await ctx.ownership.change(sid, {
        type: 'open',
        actor: actorName,
        primary: ctx.hostId,
        standby: standby ?? '',
      });
      if (!r.ok) {
        if (standby) this.protection.detach(standby, sid);
        throw new SessionExistsError(`session ${sid} exists: ${r.reason}`);
      }
      const term = r.owned.record.term;
      if (standby) this.protection.tellNamed(standby, sid, r.owned.revision, term);
      const copy = ctx.copies.add(sid, actor, { type: 'primary', standby: standby ?? '', term });
      const primary = startPrimary(ctx, copy, actor, init, {
        type: 'new-epoch',
        from: 0,
        logged: 0,
        kept: [],
      });
      primary.setStandby(standby ?? '', term);
      primary.serve();
      await ctx.transport.flush();
      return r.owned.record;
    });
  }

  /**
   * Ends `sid` (this host is its primary): inputs stop, the record is
   * closed by compare-and-swap, this copy fences itself, the standby is
   * told to drop, snapshot and log are deleted.
   */
  close(sid: string, reason: 'closed' | 'requested' = 'closed'): Promise<void> {
    const { ctx } = this;
    return ctx.queues.run(sid, async () => {
      const copy = this.primaryCopy(sid);
      const p = copy.primary!;
      // The actor's onClose is the last transaction; its events reach the clients.
      await within(ctx.clock, p.commitLast(reason), ctx.tuning.requestTimeoutMs);
      p.pause();
      await p.idle();
      await p.log.flush();
      const r = await ctx.ownership.change(
        sid,
        { type: 'close', primary: ctx.hostId, epoch: p.epoch },
        { fresh: true },
      );
      if (!r.ok) {
        if (copy.status.type === 'primary') p.resume();
        throw new FtmError(`${sid}: not closed: ${r.reason}`);
      }
      // The watch may have delivered the closed record first and fenced it already.
      fenceCopy(ctx, copy, 'the session was closed', { expected: true });
      if (p.standbyHost) this.protection.detach(p.standbyHost, sid);
      await ctx.snapshots.delete(sid);
      await ctx.log.purgeAll(sid);
      ctx.trace(`${sid}: closed in epoch ${p.epoch} at seq ${p.seq}`);
    });
  }

  /** An operator's restore of `sid` here (cold: from snapshot + log), with `standby` wanted. */
  async restoreHere(actorName: string, sid: string, opts: { standby?: string }): Promise<void> {
    const { ctx } = this;
    if (ctx.state.closed) throw new ClosedError(`host ${ctx.hostId} is closed`);
    assertId('sid', sid);
    if (opts.standby !== undefined) assertId('hostId', opts.standby);
    this.replicas.actorNamed(actorName);
    await ctx.queues.run(sid, async () => {
      const judged = (await ctx.ownership.get(sid))?.record;
      if (!judged || judged.closed)
        throw new SessionNotFoundError(`session ${sid} has no open record to restore`);
      const rec = await this.restorer.restore(sid, judged, 'restore', ctx.clock.now());
      if (!rec) throw new FtmError(`${sid}: another host restored or took it over first`);
      const copy = ctx.copies.get(sid);
      if (copy && opts.standby && opts.standby !== ctx.hostId)
        await this.protection.protect(copy, { wanted: opts.standby });
    });
  }

  /** This host's copy of `sid`. @throws SessionNotFoundError */
  copy(sid: string): SessionCopy {
    const c = this.ctx.copies.get(sid);
    if (!c) throw new SessionNotFoundError(`session ${sid} is not on host ${this.ctx.hostId}`);
    return c;
  }

  /** This host's serving primary of `sid`. @throws SessionNotFoundError */
  primaryCopy(sid: string): SessionCopy {
    const c = this.ctx.copies.get(sid);
    if (!c?.primary || c.status.type !== 'primary')
      throw new SessionNotFoundError(`host ${this.ctx.hostId} is not the primary of ${sid}`);
    return c;
  }

  info(sid: string): SessionInfo | undefined {
    const c = this.ctx.copies.get(sid);
    return (
      c && {
        sid,
        actor: c.actor.name,
        role: c.role,
        status: c.status.type,
        epoch: c.epoch,
        seq: c.seq,
      }
    );
  }
}
