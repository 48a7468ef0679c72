import type { ActorDefinition } from './actor.ts';
import { SessionLog, type LogStart } from './durable-log.ts';
import { FtmError } from './errors.ts';
import type { HostContext } from './host-context.ts';
import { PrimarySession } from './primary-session.ts';
import type { SessionSnapshot } from './session-types.ts';
import type { SessionCopy } from './session-copies.ts';
import type { SessionMeta } from './session-meta.ts';

/** The state a primary starts from; a promoted replica hands over its meta object as it is. */
export type PrimaryInit = Omit<SessionSnapshot, 'meta'> & {
  meta: SessionSnapshot['meta'] | SessionMeta;
};

/**
 * Creates the primary of `copy` in the epoch of `init`, listening for
 * control requests (a standby's sync needs them) but not serving yet. Its
 * log writer starts as `logStart` says (PROTOCOL.md, "The log is fenced").
 */
export function startPrimary(
  ctx: HostContext,
  copy: SessionCopy,
  actor: ActorDefinition,
  init: PrimaryInit,
  logStart: LogStart,
): PrimarySession {
  const sid = copy.sid;
  // The log calls back into the primary it belongs to, created right after it.
  const ref: { primary?: PrimarySession } = {};
  const log = new SessionLog(
    ctx.log,
    sid,
    init.epoch,
    logStart,
    ctx.random.hex(4),
    ctx.clock,
    (seq) => ref.primary?.onLogged(seq),
    (err) => fenceCopy(ctx, copy, `the log refused epoch ${init.epoch}: ${err.message}`),
    (err) => ctx.onError(new FtmError(`log write of ${sid}`, { cause: err })),
  );
  const primary = new PrimarySession(
    ctx.sessionDeps,
    actor,
    sid,
    init,
    log,
    (snap) => saveSnapshot(ctx, snap, sid),
    ctx.poolFor(actor),
    ctx.primaryOptions,
  );
  ref.primary = primary;
  primary.onWork = ctx.wake;
  primary.onNewerEpoch = (epoch) => checkNewerEpoch(ctx, copy, epoch);
  primary.onCloseRequested = () => ctx.requestClose(sid);
  primary.listen();
  copy.primary = primary;
  return primary;
}

/**
 * Stores a snapshot unless one at the same or a later seq is stored (a
 * lagging writer never puts an older state back). The primary calls it only
 * for a released seq; the log's fencing keeps a purge from ever reaching a
 * successor's batches (they all come after ours), so no ownership check is
 * needed here.
 */
async function saveSnapshot(
  ctx: HostContext,
  snap: SessionSnapshot,
  sid: string,
): Promise<boolean> {
  return ctx.snapshots.put(sid, ctx.codec.encode(snap), { order: snap.seq });
}

/**
 * An ack of a newer epoch reached a primary: maybe another copy was
 * promoted, maybe someone forged it. The record decides.
 */
function checkNewerEpoch(ctx: HostContext, copy: SessionCopy, epoch: number): void {
  if (copy.status.type !== 'primary' && copy.status.type !== 'handing-off') return;
  // One read at a time per copy, at most every 100 ms: a flood of forged acks costs one read.
  const now = ctx.clock.now();
  if (copy.epochCheckAt !== undefined && now - copy.epochCheckAt < 100) return;
  copy.epochCheckAt = now;
  ctx.ownership.get(copy.sid).then(
    (owned) => {
      if (owned && (owned.record.epoch > copy.epoch || owned.record.closed))
        fenceCopy(
          ctx,
          copy,
          `epoch ${owned.record.epoch} exists (seen in an ack of epoch ${epoch})`,
        );
    },
    (err: unknown) => ctx.onError(new FtmError(`${copy.sid}: checking the record`, { cause: err })),
  );
}

/**
 * Stops a primary copy at once (not queued: a local stop): it publishes and
 * writes nothing more, and the host forgets it.
 */
export function fenceCopy(
  ctx: HostContext,
  copy: SessionCopy,
  reason: string,
  /** A stop the host asked for (a close, a hand-off): no error to report. */
  opts: { expected?: boolean } = {},
): void {
  const s = copy.status.type;
  if (s !== 'primary' && s !== 'handing-off') return;
  const p = copy.primary!;
  copy.moveTo({ type: 'fenced', reason });
  p.fence();
  ctx.copies.remove(copy);
  ctx.trace(
    `${copy.sid}: epoch ${p.epoch} fenced at seq ${p.seq} (logged ${p.log.loggedSeq}, acked ${p.standbyAcked}): ${reason}`,
  );
  if (!opts.expected && !ctx.state.draining && !ctx.state.closed && !ctx.state.dead)
    ctx.onError(new FtmError(`${copy.sid}: this host stopped serving epoch ${p.epoch}: ${reason}`));
}
