import { FtmError, RequestTimeoutError } from './errors.ts';
import type { FailoverRecord } from './failover.ts';
import type { HostContext } from './host-context.ts';
import type { Protection } from './protection.ts';
import { within } from './retry.ts';
import type { SessionCopy } from './session-copies.ts';

/** What {@link Drain.drain} moved. */
export interface DrainReport {
  primaries: number;
  standbys: number;
  /** Per moved primary: from inputs stopped to the new primary serving, in ms. */
  handoffMs: number[];
  /** Primaries that stayed here (no standby to hand over to, a hand-off that failed or timed out). */
  kept: number;
}

/**
 * A planned hand-off of everything a host serves (a deploy, a scale-down;
 * PROTOCOL.md, "Hand-off"): each primary moves to its standby with no gap,
 * each standby copy to another host. Every step is bounded: a standby that
 * does not catch up or answer within the hand-off timeout leaves the primary
 * serving here, and the whole drain ends by its deadline.
 */
export class Drain {
  constructor(
    private readonly ctx: HostContext,
    private readonly protection: Protection,
  ) {}

  /** Drains this host; resolves by `deadlineMs` at the latest with what moved. */
  async drain(deadlineMs = 30_000): Promise<DrainReport> {
    const { ctx } = this;
    ctx.state.draining = true;
    ctx.copies.onChange?.();
    const report: DrainReport = { primaries: 0, standbys: 0, handoffMs: [], kept: 0 };
    const end = ctx.clock.now() + deadlineMs;
    for (const copy of [...ctx.copies.values()]) {
      if (copy.status.type !== 'primary') continue;
      if (ctx.clock.now() >= end) {
        report.kept++;
        continue;
      }
      const ms = await ctx.queues.run(copy.sid, () => this.handOff(copy, end));
      if (ms === undefined) report.kept++;
      else {
        report.primaries++;
        report.handoffMs.push(ms);
      }
    }
    for (const copy of [...ctx.copies.values()]) {
      if (!copy.replica || ctx.clock.now() >= end) continue;
      const primary = ctx.ownership.view.get(copy.sid)?.record.primary;
      if (!primary) continue;
      try {
        await ctx.control.request(
          primary,
          { op: 'reprotect', sid: copy.sid, exclude: [ctx.hostId] },
          this.timeout(end),
        );
        report.standbys++;
      } catch (err) {
        ctx.onError(new FtmError(`${copy.sid}: moving its standby away failed`, { cause: err }));
      }
    }
    return report;
  }

  private timeout(end: number): number {
    return Math.max(1, Math.min(this.ctx.tuning.handOffTimeoutMs, end - this.ctx.clock.now()));
  }

  /**
   * Hands one primary over to its standby; resolves with the time it took,
   * or undefined when it stayed here (then it serves again, and the timers
   * and worker results that came due meanwhile run).
   */
  private async handOff(copy: SessionCopy, end: number): Promise<number | undefined> {
    const { ctx } = this;
    if (copy.status.type !== 'primary' || ctx.copies.get(copy.sid) !== copy) return undefined;
    const started = ctx.clock.now();
    const p = copy.primary!;
    // A standby on a draining host would refuse: a new one elsewhere first.
    if (p.standbyHost && ctx.membership.hosts.get(p.standbyHost)?.record.load.draining)
      await this.protection.protect(copy, { exclude: [p.standbyHost] });
    else if (!p.standbyHost) await this.protection.protect(copy);
    const to = p.standbyHost;
    if (to && ctx.membership.hosts.get(to)?.record.load.draining) {
      ctx.trace(
        `${copy.sid}: its standby ${to} drains too and no other host has room; it stays here`,
      );
      return undefined;
    }
    if (!to || copy.status.type !== 'primary') {
      ctx.onError(new FtmError(`${copy.sid}: no host to hand over to; it stays here`));
      return undefined;
    }
    copy.moveTo({ type: 'handing-off', to });
    p.pause();
    try {
      const caughtUp = await within(
        ctx.clock,
        p.standbyCaughtUp().then(() => true),
        this.timeout(end),
      );
      if (!caughtUp) throw new RequestTimeoutError(`standby ${to} did not catch up in time`);
      const expectLast = await p.log.flush().then(() => p.log.lastStreamSeq ?? 0);
      const { record } = await ctx.control.request<{ record: FailoverRecord }>(
        to,
        {
          op: 'take-over',
          sid: copy.sid,
          from: ctx.hostId,
          epoch: p.epoch,
          expectLast,
          cause: 'drain',
        },
        this.timeout(end),
      );
      if ((copy.status as { type: string }).type === 'handing-off') {
        copy.moveTo({ type: 'fenced', reason: `handed off to ${to} (epoch ${record.epoch})` });
        p.fence();
        ctx.copies.remove(copy);
      }
      return ctx.clock.now() - started;
    } catch (err) {
      // Fenced meanwhile (the take-over landed but its answer was lost): it moved.
      if ((copy.status as { type: string }).type !== 'handing-off')
        return ctx.clock.now() - started;
      const now = await ctx.ownership.get(copy.sid).catch(() => undefined);
      if (now && now.record.epoch > p.epoch) {
        copy.moveTo({ type: 'fenced', reason: `handed off to ${to} (its answer was lost)` });
        p.fence();
        ctx.copies.remove(copy);
        return ctx.clock.now() - started;
      }
      ctx.onError(
        new FtmError(`${copy.sid}: hand-off to ${to} failed; serving it here again`, {
          cause: err,
        }),
      );
      copy.moveTo({ type: 'primary', standby: p.standbyHost, term: p.term });
      p.resume();
      return undefined;
    }
  }
}
