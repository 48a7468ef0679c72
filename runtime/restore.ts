import { writeMarker } from './durable-log.ts';
import { readDurable, type DurableState } from './durable-state.ts';
import { LogConflictError, SessionExistsError } from './errors.ts';
import type { FailoverCause, FailoverRecord } from './failover.ts';
import type { HostContext } from './host-context.ts';
import type { OwnerRecord } from './ownership.ts';
import { startPrimary } from './primaries.ts';
import type { ReplicaManager } from './replica-manager.ts';

/**
 * A cold restore (PROTOCOL.md, "Restore"): primary and standby are both
 * gone, so this host rebuilds the session from snapshot + log and serves it
 * in the next epoch, unprotected until the coordinator names a standby.
 */
export class Restore {
  constructor(
    private readonly ctx: HostContext,
    private readonly replicas: ReplicaManager,
  ) {}

  /**
   * Restores `sid` if its record is still `judged`. Runs in the session's
   * queue. Resolves with the failover record, or undefined when the record
   * changed since it was judged (someone else acted).
   * @throws when the log or the stores do not answer (retryable)
   */
  async restore(
    sid: string,
    judged: OwnerRecord,
    cause: FailoverCause,
    detectedAt: number,
  ): Promise<FailoverRecord | undefined> {
    const { ctx } = this;
    if (ctx.copies.has(sid)) {
      const copy = ctx.copies.get(sid)!;
      // A copy of ours the record never named (an attach cut short) goes: we restore instead.
      if (copy.replica && !copy.replica.isNamed)
        this.replicas.drop(copy, 'replaced by a restore here');
      else throw new SessionExistsError(`session ${sid} is already on host ${ctx.hostId}`);
    }
    const actor = this.replicas.actorNamed(judged.actor);
    let durable = await readDurable(ctx.log, ctx.snapshots, ctx.codec, actor, sid, ctx.clock);
    const result = await ctx.ownership.change(
      sid,
      { type: 'restore', by: ctx.hostId, judged, logEpoch: durable.epoch },
      { fresh: true },
    );
    if (!result.ok) {
      ctx.trace(`${sid}: restore refused: ${result.reason}`);
      return undefined;
    }
    const epoch = result.owned.record.epoch;
    // Claim the log: the marker expects the last message we read. A refusal
    // means the old primary logged more since (it was declared dead, but had
    // not learnt it yet): read again and build on that.
    const writer = ctx.random.hex(4);
    let marker: number;
    for (let attempt = 0; ; attempt++) {
      try {
        marker = await writeMarker(ctx.log, sid, epoch, durable.seq, durable.lastStreamSeq, writer);
        break;
      } catch (err) {
        if (!(err instanceof LogConflictError) || attempt >= 20) throw err;
        durable = await readDurable(ctx.log, ctx.snapshots, ctx.codec, actor, sid, ctx.clock);
      }
    }
    const rec = this.serve(sid, actor.name, durable, epoch, marker, judged, cause, detectedAt);
    ctx.reconcile(sid);
    return rec;
  }

  private serve(
    sid: string,
    actorName: string,
    durable: DurableState,
    epoch: number,
    marker: number,
    judged: OwnerRecord,
    cause: FailoverCause,
    detectedAt: number,
  ): FailoverRecord {
    const { ctx } = this;
    const actor = this.replicas.actorNamed(actorName);
    const copy = ctx.copies.add(sid, actor, { type: 'primary', standby: '', term: 0 });
    const primary = startPrimary(
      ctx,
      copy,
      actor,
      { actor: actorName, state: durable.state, seq: durable.seq, epoch, meta: durable.meta },
      { type: 'marked', logged: durable.seq, lastStreamSeq: marker },
    );
    const rec: FailoverRecord = {
      sid,
      cause,
      from: judged.primary,
      to: ctx.hostId,
      epoch,
      seq: durable.seq,
      detectedAt,
      declaredAt: detectedAt,
      // Its marker was written just now (restore, above): the log is this epoch's.
      logHandedOverAt: ctx.clock.now(),
      promotedAt: ctx.clock.now(),
      replayed: 0,
      traceId: '',
    };
    primary.onNextReply = (at) => {
      rec.firstReplyAt = at;
      ctx.failoverTelemetry.firstReplied(rec);
    };
    ctx.failoverTelemetry.begin(rec, actorName, judged.epoch);
    primary.serve();
    rec.replayedAt = ctx.clock.now();
    ctx.history.push(rec);
    ctx.trace(
      `${sid}: restored to epoch ${epoch} at seq ${durable.seq} (${cause}; record was epoch ${judged.epoch}, ` +
        `primary ${judged.primary || 'none'}, standby ${judged.standby || 'none'}; log: ${durable.read.messages} ` +
        `messages, ${durable.read.frames} frames, ${durable.read.voided} void, ${durable.logged} applied)`,
    );
    return rec;
  }
}
