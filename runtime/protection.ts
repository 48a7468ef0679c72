import type { ActorDefinition } from './actor.ts';
import type { ControlRequest } from './control-channel.ts';
import { FtmError } from './errors.ts';
import type { HostContext } from './host-context.ts';
import type { SessionSnapshot } from './session-types.ts';
import type { SessionCopy } from './session-copies.ts';
import { within } from './retry.ts';

/** How long re-protection waits for a new epoch's first log batch at most. */
const firstBatchWaitMs = 100;

/**
 * A primary's hot standby: attaching one somewhere, naming it in the
 * record, dropping one declared dead (PROTOCOL.md, "Re-protection"). The
 * record changes only after the log holds what the old standby acknowledged,
 * and only the standby the record names, at its term, releases replies.
 */
export class Protection {
  constructor(private readonly ctx: HostContext) {}

  /** Live hosts that take sessions (room, not draining), with their loads, for placement. */
  candidates() {
    const out = [];
    for (const [id, v] of this.ctx.membership.hosts)
      if (v.record.state === 'alive' && v.record.load.capacity > 0 && !v.record.load.draining)
        out.push({ id, load: v.record.load });
    return out;
  }

  /**
   * Makes `standby` a copy of `sid`. With `init` (a new session, not serving
   * yet) the state travels in the request, or through the snapshot store
   * when it is too big for one message; without it the copy subscribes first
   * and then fetches the serving primary's state, so no commit is missed.
   */
  async attach(
    standby: string,
    actor: ActorDefinition,
    sid: string,
    init: SessionSnapshot | { epoch: number },
  ) {
    const { ctx } = this;
    const after = ctx.ownership.view.get(sid)?.revision ?? 0;
    const timeout = ctx.tuning.requestTimeoutMs;
    if (!('state' in init))
      return void (await ctx.control.request(
        standby,
        { op: 'sync', sid, actor: actor.name, after, epoch: init.epoch },
        timeout,
      ));
    const attach: ControlRequest = { op: 'attach', sid, actor: actor.name, after, snapshot: init };
    if (ctx.codec.encode(attach).length <= ctx.transport.maxPayload - 1024)
      return void (await ctx.control.request(standby, attach, timeout));
    // Stored at its seq (already there when a restore read exactly this snapshot).
    await ctx.snapshots.put(sid, ctx.codec.encode(init), { order: init.seq });
    await ctx.control.request(
      standby,
      { op: 'attach-stored', sid, actor: actor.name, seq: init.seq, after },
      timeout,
    );
  }

  /**
   * Attaches a copy on `wanted`, or on a partner of this host with room; a
   * host that refuses (full, gone) is skipped for the next. Resolves with
   * the host, or undefined when none took it.
   */
  async attachSomewhere(
    actor: ActorDefinition,
    sid: string,
    /** The state (a session not serving yet), or the epoch of the serving primary. */
    init: SessionSnapshot | { epoch: number },
    exclude: Iterable<string>,
    wanted?: { host: string; hint: boolean },
    stop: () => boolean = () => false,
  ): Promise<string | undefined> {
    const { ctx } = this;
    const tried = new Set([ctx.hostId, ...exclude]);
    for (let attempt = 0; attempt < 4 && !stop(); attempt++) {
      const standby =
        attempt === 0 && wanted
          ? wanted.host
          : ctx.placement.pickStandby(ctx.hostId, this.candidates(), tried);
      if (!standby) return undefined;
      try {
        await this.attach(standby, actor, sid, init);
        return standby;
      } catch (err) {
        if (attempt === 0 && wanted && !wanted.hint) throw err;
        ctx.onError(new FtmError(`${sid}: standby ${standby} refused`, { cause: err }));
        tried.add(standby);
      }
    }
    return undefined;
  }

  /** True while `copy` is still this host's serving primary of `epoch`. */
  private stillPrimary(copy: SessionCopy, epoch: number): boolean {
    return (
      this.ctx.copies.get(copy.sid) === copy &&
      copy.status.type === 'primary' &&
      copy.epoch === epoch
    );
  }

  /**
   * The named standby was declared dead: the log takes over its part (the
   * flush first: what it acknowledged may have been released), then the
   * record stops naming it. Resolves whether the record changed.
   */
  async dropStandby(copy: SessionCopy): Promise<boolean> {
    const { ctx } = this;
    const p = copy.primary!;
    const epoch = p.epoch;
    const term = p.term;
    const old = p.standbyHost;
    await p.log.flush();
    if (!this.stillPrimary(copy, epoch)) return false;
    const r = await ctx.ownership.change(copy.sid, {
      type: 'drop-standby',
      primary: ctx.hostId,
      epoch,
      term,
    });
    if (!r.ok || !this.stillPrimary(copy, epoch)) return false;
    p.setStandby('', r.owned.record.term);
    copy.moveTo({ type: 'primary', standby: '', term: r.owned.record.term });
    ctx.trace(
      `${copy.sid}: epoch ${epoch} standby ${old} dropped at seq ${p.seq}, logged ${p.log.loggedSeq}`,
    );
    return true;
  }

  /**
   * Gives a primary a (new) hot standby (`wanted` first, never one of
   * `exclude`): attaches a
   * copy, flushes the log, names it in the record (term + 1), tells it.
   * Without a live host with room the session goes on unprotected: the log
   * stands in. Resolves with the standby named, or undefined.
   */
  async protect(
    copy: SessionCopy,
    opts: { exclude?: Iterable<string>; wanted?: string } = {},
  ): Promise<string | undefined> {
    const { ctx } = this;
    const p = copy.primary!;
    const epoch = p.epoch;
    const term = p.term;
    const old = p.standbyHost;
    // The failover that made this copy primary (if one did) is timed from here.
    const rec = ctx.history.findLast((f) => f.sid === copy.sid && f.epoch === epoch);
    if (rec && rec.reprotectedAt === undefined) rec.reprotectStartedAt ??= ctx.clock.now();
    // A new epoch's first batch (its marker and first replies) goes before
    // the new standby's sync: that sync encodes the whole state and would
    // hold the first reply back. Bounded: with the log down, the standby is
    // what the session needs most.
    if (!old && !p.log.marked) await within(ctx.clock, p.log.flush(), firstBatchWaitMs);
    if (rec && rec.reprotectedAt === undefined) rec.standbySyncStartedAt = ctx.clock.now();
    const standby = await this.attachSomewhere(
      copy.actor,
      copy.sid,
      { epoch },
      [old, ...(opts.exclude ?? [])],
      opts.wanted ? { host: opts.wanted, hint: true } : undefined,
      () => !this.stillPrimary(copy, epoch),
    );
    if (!standby) return undefined;
    if (rec && rec.reprotectedAt === undefined) rec.standbySyncedAt = ctx.clock.now();
    // What the old standby acknowledged is in the log before the record stops naming it.
    if (old) await p.log.flush();
    const r = this.stillPrimary(copy, epoch)
      ? await ctx.ownership.change(copy.sid, {
          type: 'name-standby',
          primary: ctx.hostId,
          epoch,
          term,
          standby,
        })
      : undefined;
    if (!r?.ok || !this.stillPrimary(copy, epoch)) {
      // Not named: the copy is nobody's standby. Its host drops it (and its own reconcile would).
      if (!r?.ok) this.detach(standby, copy.sid);
      return undefined;
    }
    p.setStandby(standby, r.owned.record.term);
    copy.moveTo({ type: 'primary', standby, term: r.owned.record.term });
    // The failover that made this copy primary ends here: two copies again.
    if (rec && rec.reprotectedAt === undefined) {
      rec.standby = standby;
      rec.reprotectedAt = ctx.clock.now();
      ctx.failoverTelemetry.reprotected(rec);
    }
    this.tellNamed(standby, copy.sid, r.owned.revision, r.owned.record.term);
    ctx.trace(
      `${copy.sid}: epoch ${epoch} standby ${standby} named at term ${r.owned.record.term}, seq ${p.seq}`,
    );
    if (old && old !== standby && ctx.membership.isAlive(old)) this.detach(old, copy.sid);
    return standby;
  }

  /**
   * Tells a standby that the record now names it, over core NATS: it
   * acknowledges from then on. Its ownership watch would tell it too, but
   * that is a JetStream consumer, re-created for seconds when a NATS node
   * dies; the replies must not wait for it.
   */
  tellNamed(standby: string, sid: string, revision: number, term: number): void {
    if (!standby || standby === this.ctx.hostId) return;
    this.ctx.control
      .request(standby, { op: 'named', sid, revision, term }, this.ctx.tuning.requestTimeoutMs)
      .catch((err: unknown) =>
        this.ctx.trace(`${sid}: telling ${standby} it is named failed: ${String(err)}`),
      );
  }

  /** Asks `host` to drop its copy; a failure is left to that host's own reconcile, which collects unnamed copies. */
  detach(host: string, sid: string): void {
    this.ctx.control
      .request(host, { op: 'detach', sid }, this.ctx.tuning.requestTimeoutMs)
      .catch((err: unknown) =>
        this.ctx.trace(
          `${sid}: detach of ${host} failed (it collects the copy itself): ${String(err)}`,
        ),
      );
  }
}
