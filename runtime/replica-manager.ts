import { freeze } from 'immer';
import type { ActorDefinition } from './actor.ts';
import type { ControlRequest } from './control-channel.ts';
import { readLogFrames, storedSnapshot } from './durable-state.ts';
import { CapacityError, FtmError, SessionExistsError, UnknownActorError } from './errors.ts';
import type { HostContext } from './host-context.ts';
import type { Owned } from './ownership.ts';
import type { SessionSnapshot } from './session-types.ts';
import { ReplicaSession, type ReplicaSource } from './replica-session.ts';
import type { SessionCopy } from './session-copies.ts';
import { subjects } from './subjects.ts';

/**
 * The copies this host holds for other hosts' primaries: creating them on
 * request (attach, sync), confirming them when the record names them,
 * dropping them when it stops doing so.
 */
export class ReplicaManager {
  constructor(private readonly ctx: HostContext) {}

  /** The record, newer than the copy's attach, names this host its standby. */
  namesUs(owned: Owned | undefined, copy: SessionCopy): owned is Owned {
    return (
      !!owned &&
      owned.record.standby === this.ctx.hostId &&
      owned.record.primary !== this.ctx.hostId &&
      !owned.record.closed &&
      owned.revision > copy.attachedAfter
    );
  }

  /** A newer record than the copy's attach that does not name this host its standby. */
  dropsUs(owned: Owned | undefined, copy: SessionCopy): boolean {
    if (!owned) return false;
    return owned.revision > copy.attachedAfter && !this.namesUs(owned, copy);
  }

  /** Starts acknowledging at the record's term, if the record names this copy. */
  confirmIfNamed(copy: SessionCopy, owned: Owned | undefined): void {
    if (!copy.replica || !this.namesUs(owned, copy)) return;
    copy.replica.confirm(owned.record.term);
    if (copy.status.type === 'attaching') copy.moveTo({ type: 'standby', term: owned.record.term });
  }

  /** Serves attach, attach-stored and sync: becomes a copy (status attaching). */
  async attach(
    req: Extract<ControlRequest, { op: 'attach' | 'attach-stored' | 'sync' }>,
  ): Promise<object> {
    const { ctx } = this;
    if (ctx.copies.has(req.sid))
      throw new SessionExistsError(`session ${req.sid} already on host ${ctx.hostId}`);
    this.assertRoom();
    const actor = this.actorNamed(req.actor);
    let init: SessionSnapshot | undefined = req.op === 'attach' ? req.snapshot : undefined;
    if (req.op === 'attach-stored') {
      init = await storedSnapshot(ctx.snapshots, ctx.codec, req.sid);
      if (init?.seq !== req.seq)
        throw new FtmError(
          `${req.sid}: the stored snapshot is at seq ${init?.seq ?? 'none'}, not ${req.seq}`,
        );
    }
    // The primary that attaches us serves this epoch: we follow it and no other.
    const epoch = req.op === 'sync' ? req.epoch : init!.epoch;
    const replica = new ReplicaSession(
      ctx.sessionDeps,
      actor,
      req.sid,
      init && { ...init, state: freeze(init.state, true) },
      this.source(req.sid, epoch),
    );
    const copy = ctx.copies.add(req.sid, actor, { type: 'attaching' });
    copy.replica = replica;
    copy.attachedAfter = req.after;
    this.confirmIfNamed(copy, ctx.ownership.view.get(req.sid));
    try {
      await replica.start();
    } catch (err) {
      replica.close();
      ctx.copies.remove(copy);
      throw err;
    }
    return { ok: true };
  }

  /** Serves named: the primary wrote the record naming this host (over core NATS, ahead of the watch). */
  named(req: Extract<ControlRequest, { op: 'named' }>): object {
    const copy = this.ctx.copies.get(req.sid);
    if (copy?.replica && req.revision > copy.attachedAfter && copy.status.type !== 'promoting') {
      copy.replica.confirm(req.term);
      if (copy.status.type === 'attaching') copy.moveTo({ type: 'standby', term: req.term });
    }
    return { ok: true };
  }

  /** Serves detach: drops the copy unless the record names it (the record decides, not the request). */
  detach(req: Extract<ControlRequest, { op: 'detach' }>): object {
    const copy = this.ctx.copies.get(req.sid);
    if (
      copy?.replica &&
      copy.status.type !== 'promoting' &&
      !this.namesUs(this.ctx.ownership.view.get(req.sid), copy)
    )
      this.drop(copy, 'detached by its primary');
    return { ok: true };
  }

  /** Drops a copy (its replica stops; the host forgets it). */
  drop(copy: SessionCopy, why: string): void {
    copy.replica?.close();
    this.ctx.copies.remove(copy);
    this.ctx.trace(`${copy.sid}: standby copy at seq ${copy.seq} dropped: ${why}`);
  }

  /**
   * Where a replica repairs itself from: the log flush and the snapshot of
   * the primary of `epoch` (a primary of another epoch may still listen,
   * not yet fenced: its state is not this copy's), and the log.
   */
  private source(sid: string, epoch: number): ReplicaSource {
    const { ctx } = this;
    const control = async (op: 'flush' | 'snapshot'): Promise<any> => {
      const reply = await ctx.transport.request(
        subjects.control(sid, epoch),
        ctx.codec.encode({ op }),
        2_000,
      );
      const answer = ctx.codec.decode(reply) as { error?: { code: string; message: string } };
      if (answer?.error)
        throw new FtmError(`${sid}: the primary answered ${op}: ${answer.error.message}`);
      return answer;
    };
    return {
      async logAfter(seq) {
        await control('flush');
        return readLogFrames(ctx.log, sid, seq);
      },
      async snapshot() {
        const answer = await control('snapshot');
        if (answer.epoch !== undefined && answer.epoch !== epoch)
          throw new FtmError(`${sid}: a snapshot of epoch ${answer.epoch}, not ${epoch}`);
        if (answer.stored === undefined) return answer;
        // Above max_payload: the primary wrote it to the snapshot store instead.
        const stored = await storedSnapshot(ctx.snapshots, ctx.codec, sid);
        if (!stored) throw new FtmError(`${sid}: the primary's stored snapshot is gone`);
        return { ...stored, logged: answer.logged };
      },
      ...(ctx.dropAtStandby ? { drop: (seq: number) => ctx.dropAtStandby!(sid, seq) } : {}),
    };
  }

  actorNamed(name: string): ActorDefinition {
    const a = this.ctx.actors.get(name);
    if (!a)
      throw new UnknownActorError(
        `actor ${JSON.stringify(name)} is not registered on host ${this.ctx.hostId}`,
      );
    return a;
  }

  /** Refuses a new session or copy beyond this host's capacity, or while it drains or rejoins. */
  assertRoom(): void {
    const { ctx } = this;
    const l = ctx.copies.load(ctx.capacity, ctx.state.draining);
    if (
      ctx.state.closed ||
      ctx.state.draining ||
      ctx.state.dead ||
      l.primaries + l.standbys >= ctx.capacity
    )
      throw new CapacityError(
        `host ${ctx.hostId} takes no more sessions (${l.primaries + l.standbys} of ${ctx.capacity}${ctx.state.closed ? ', closing' : ''}${ctx.state.draining ? ', draining' : ''}${ctx.state.dead ? ', not a member' : ''})`,
      );
  }
}
