import { FtmError } from './errors.ts';
import type { FailoverCause, FailoverRecord } from './failover.ts';
import type { HostContext } from './host-context.ts';
import type { Owned } from './ownership.ts';
import type { SessionSnapshot } from './session-types.ts';
import { startPrimary } from './primaries.ts';
import { sleep } from './retry.ts';
import type { ReplicaManager } from './replica-manager.ts';
import type { SessionCopy } from './session-copies.ts';

/**
 * A standby copy taking its session over (PROTOCOL.md, "Promotion"): after
 * its primary was declared dead, or when a draining primary hands it over.
 * Only the compare-and-swap on the ownership record decides who wins.
 */
export class Promotion {
  constructor(
    private readonly ctx: HostContext,
    private readonly replicas: ReplicaManager,
  ) {}

  /**
   * Promotes `copy` (a named standby) now that its primary `from` is gone, or
   * hands it over (cause `drain`). Runs in the session's queue. Resolves with
   * the failover record, or undefined when the compare-and-swap was refused
   * (someone else changed the record: the copy is dropped if the record no
   * longer names it).
   * @throws when the store does not answer (retryable: the copy stays a standby)
   */
  async promote(
    copy: SessionCopy,
    from: string,
    cause: FailoverCause,
    detectedAt: number,
    expectLast?: number,
  ): Promise<FailoverRecord | undefined> {
    const { ctx } = this;
    if (copy.status.type !== 'standby' || !copy.replica) return undefined;
    const term = copy.status.term;
    copy.moveTo({ type: 'promoting' });
    // The log's last message, read alongside the swap: the new epoch's first
    // batch names it (a hand-off knows it already). A failed read is read again.
    const lastRead =
      expectLast === undefined ? ctx.log.last(copy.sid).catch(() => undefined) : undefined;
    let result;
    try {
      const change =
        cause === 'drain'
          ? { type: 'hand-off' as const, from, to: ctx.hostId, epoch: copy.epoch }
          : { type: 'promote' as const, standby: ctx.hostId, from, epoch: copy.epoch };
      result = await ctx.ownership.change(copy.sid, change);
    } catch (err) {
      if (this.stillPromoting(copy)) copy.moveTo({ type: 'standby', term });
      throw err;
    }
    // The copy went while the swap was in flight (this host read its own
    // death and dropped everything): a won swap names a host with nothing to
    // serve, and the session waits for a restore.
    if (!this.stillPromoting(copy)) {
      ctx.trace(
        `${copy.sid}: promotion ${result.ok ? 'won' : 'lost'} after this copy was dropped (${copy.status.type})`,
      );
      return undefined;
    }
    if (!result.ok) {
      ctx.trace(`${copy.sid}: promotion refused: ${result.reason}`);
      copy.moveTo({ type: 'standby', term });
      if (this.replicas.dropsUs(result.owned, copy))
        this.replicas.drop(copy, `the record moved on (${result.reason})`);
      return undefined;
    }
    return this.becomePrimary(copy, result.owned, from, cause, detectedAt, expectLast, lastRead);
  }

  private stillPromoting(copy: SessionCopy): boolean {
    return this.ctx.copies.get(copy.sid) === copy && copy.status.type === 'promoting';
  }

  /**
   * The hand-over, in one synchronous step right after the winning
   * compare-and-swap: no input can arrive between the replica stopping and
   * the primary serving, because nothing here awaits. The state, meta and
   * uncovered inputs of the replica become the primary's (no copy); its log
   * begins with an epoch marker from its seq and the frames the old
   * primary's log had not acknowledged; it serves, running the buffered
   * inputs first.
   */
  private becomePrimary(
    copy: SessionCopy,
    owned: Owned,
    from: string,
    cause: FailoverCause,
    detectedAt: number,
    expectLast: number | undefined,
    lastRead: Promise<{ seq: number; epoch: number } | undefined> | undefined,
  ): FailoverRecord {
    const { ctx } = this;
    const replica = copy.replica!;
    const oldEpoch = copy.epoch;
    const epoch = owned.record.epoch;
    const init = {
      actor: replica.actor.name,
      state: replica.state,
      seq: replica.seq,
      epoch,
      meta: replica.meta,
    };
    const unlogged = replica.unlogged();
    // When this host saw the verdict (a hand-off has none: it was asked).
    const old = ctx.membership.hosts.get(from);
    const declaredAt = old?.record.state === 'dead' ? Math.max(detectedAt, old.since) : detectedAt;
    const rec: FailoverRecord = {
      sid: copy.sid,
      cause,
      from,
      to: ctx.hostId,
      epoch,
      seq: init.seq,
      detectedAt,
      declaredAt,
      promotedAt: ctx.clock.now(),
      replayed: 0,
      traceId: '',
    };
    const queued: Uint8Array[] = [];
    const handover: { to?: (bytes: Uint8Array) => void } = {};
    const inputs = replica.takeOver((bytes) =>
      handover.to ? handover.to(bytes) : queued.push(bytes),
    );
    const primary = startPrimary(ctx, copy, copy.actor, init, {
      type: 'new-epoch',
      from: init.seq,
      // With the kept frames the log is complete to init.seq once they land;
      // without them only a snapshot at init.seq covers the gap (below).
      logged: unlogged ? unlogged.logged : 0,
      kept: unlogged ? unlogged.frames : [],
      ...(expectLast === undefined ? {} : { expectLast }),
      ...(lastRead ? { lastRead } : {}),
    });
    copy.replica = undefined;
    copy.moveTo({ type: 'primary', standby: '', term: 0 });
    if (!unlogged) this.coverWithSnapshot(copy, { ...init, meta: init.meta.snapshot() });
    primary.onNextReply = (at) => {
      rec.firstReplyAt = at;
      ctx.failoverTelemetry.firstReplied(rec);
    };
    // Opened before the buffered inputs run: the requests among them link to this failover.
    ctx.failoverTelemetry.begin(rec, replica.actor.name, oldEpoch);
    primary.serve();
    handover.to = (bytes) => primary.onInput(bytes);
    for (const bytes of inputs) primary.onInput(bytes);
    for (const bytes of queued) primary.onInput(bytes);
    rec.replayed = inputs.length + queued.length;
    rec.replayedAt = ctx.clock.now();
    // The first batch (marker, kept frames, first replies) now, not on the
    // flusher's next tick: the first replies wait for it.
    primary.log
      .flush()
      .then(() => (rec.logHandedOverAt ??= ctx.clock.now()))
      .catch((err: unknown) =>
        ctx.onError(new FtmError(`${copy.sid}: first log batch`, { cause: err })),
      );
    ctx.history.push(rec);
    ctx.trace(
      `${copy.sid}: promoted to epoch ${epoch} at seq ${init.seq} (${cause}, from ${from}); ` +
        (unlogged
          ? `log complete to ${unlogged.logged}, ${unlogged.frames.length} kept frames first`
          : 'log covered by a snapshot') +
        `; ${rec.replayed} inputs replayed`,
    );
    ctx.wake();
    // The replica's subscriptions go once ours are on the server; then a new
    // standby (the coordinator's next reconcile re-protects).
    void ctx.transport
      .flush()
      .then(() => replica.close())
      .catch((err: unknown) =>
        ctx.onError(new FtmError(`${copy.sid}: after promotion`, { cause: err })),
      );
    ctx.reconcile(copy.sid);
    return rec;
  }

  /**
   * A promoted primary whose replica could not say what the old primary's
   * log lacks: its frames wait until a snapshot at its first seq covers the
   * gap, and only then does that seq count as logged. Slower than writing
   * the kept frames (a whole state instead of a few frames), and rare.
   */
  private coverWithSnapshot(copy: SessionCopy, cover: SessionSnapshot): void {
    const { ctx } = this;
    const primary = copy.primary!;
    const covered = (async () => {
      // Retried while JetStream elects a leader (a NATS node may have died too).
      for (let attempt = 0; ; attempt++) {
        try {
          return await ctx.snapshots.put(copy.sid, ctx.codec.encode(cover), { order: cover.seq });
        } catch (err) {
          if (ctx.state.closed || primary.isStopped || attempt >= 10) throw err;
          await sleep(ctx.clock, Math.min(100 * 2 ** attempt, 5_000));
        }
      }
    })();
    primary.log.hold(covered);
    covered.then(
      () => {
        primary.log.loggedSeq = Math.max(primary.log.loggedSeq, cover.seq);
        primary.onLogged(primary.log.loggedSeq);
      },
      (err: unknown) =>
        ctx.onError(new FtmError(`${copy.sid}: snapshot after promotion`, { cause: err })),
    );
  }
}
