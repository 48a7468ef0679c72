import type { ControlRequest } from './control-channel.ts';
import type { DrainReport } from './drain.ts';
import { ClosedError, CrashNotAllowedError, FtmError, SessionNotFoundError } from './errors.ts';
import type { HostContext } from './host-context.ts';
import type { HostStatus } from './mesh-client.ts';
import type { Promotion } from './promotion.ts';
import type { Protection } from './protection.ts';
import type { ReplicaManager } from './replica-manager.ts';
import type { SessionLifecycle } from './session-lifecycle.ts';
import { stateHash } from './state-hash.ts';

/** The parts that answer other hosts' control requests. */
export type ControlParts = {
  ctx: HostContext;
  replicas: ReplicaManager;
  protection: Protection;
  promotion: Promotion;
  lifecycle: SessionLifecycle;
  drain: () => Promise<DrainReport>;
  status: () => HostStatus;
  /** The binding's way to end this process (HostPorts.crash); absent: crash requests are refused. */
  crash?: { pid: number; kill: () => void };
};

/** Requests a host that is not a member (starting, or declared dead) refuses. */
const needsMembership = new Set<ControlRequest['op']>([
  'attach',
  'attach-stored',
  'sync',
  'open',
  'take-over',
]);

/** How long a request that needs membership waits for a join under way. */
const memberWaitMs = 1_000;

/**
 * Answers the control requests of other hosts (already checked for shape by
 * the control channel). Whatever touches a session runs in its queue.
 */
export function controlHandler(parts: ControlParts): (req: ControlRequest) => Promise<object> {
  const { ctx, replicas, protection, promotion, lifecycle } = parts;
  return async (req) => {
    // Just joined: the record may say alive before this host learnt its join landed.
    if (
      ctx.state.dead &&
      needsMembership.has(req.op) &&
      !(await ctx.state.untilMember(ctx.clock, memberWaitMs))
    )
      throw new ClosedError(`host ${ctx.hostId} is not a member now (starting, or joining again)`);
    switch (req.op) {
      case 'attach':
      case 'attach-stored':
      case 'sync':
        return ctx.queues.run(req.sid, () => replicas.attach(req));
      case 'named':
        return ctx.queues.run(req.sid, () => replicas.named(req));
      case 'detach':
        return ctx.queues.run(req.sid, () => replicas.detach(req));
      case 'open':
        return {
          record: await lifecycle.open(req.actor, req.sid, {
            ...(req.standby ? { standby: req.standby } : {}),
            ...(req.standbyHint ? { standbyHint: req.standbyHint } : {}),
            init: req.init,
          }),
        };
      case 'take-over':
        return ctx.queues.run(req.sid, async () => {
          // A draining host takes no session on: the one handing off keeps it instead.
          if (ctx.state.draining && req.cause === 'drain')
            throw new ClosedError(`host ${ctx.hostId} is draining: it takes over nothing`);
          const copy = ctx.copies.get(req.sid);
          if (!copy?.replica || copy.status.type !== 'standby')
            throw new SessionNotFoundError(`host ${ctx.hostId} holds no standby of ${req.sid}`);
          const record = await promotion.promote(
            copy,
            req.from,
            req.cause,
            ctx.clock.now(),
            req.expectLast,
          );
          if (!record) throw new FtmError(`${req.sid}: not taken over on ${ctx.hostId}`);
          return { record };
        });
      case 'reprotect':
        return ctx.queues.run(req.sid, async () => ({
          standby:
            (await protection.protect(lifecycle.primaryCopy(req.sid), { exclude: req.exclude })) ??
            '',
        }));
      case 'close':
        await lifecycle.close(req.sid);
        return { ok: true };
      case 'inspect': {
        const c = lifecycle.copy(req.sid);
        return {
          info: lifecycle.info(req.sid),
          hash: stateHash(c.state),
          state: c.state,
          meta: c.meta!.snapshot(),
          failovers: ctx.history.filter((f) => f.sid === req.sid),
        };
      }
      case 'failovers':
        return { failovers: ctx.history };
      case 'drain':
        return { report: await parts.drain() };
      case 'status':
        return parts.status();
      case 'crash': {
        const crash = parts.crash;
        if (!crash)
          throw new CrashNotAllowedError(
            `host ${ctx.hostId} refuses to crash: it was started without allowCrash (ftmesh host --allow-crash)`,
          );
        ctx.trace(`crash requested: SIGKILL of pid ${crash.pid} once answered`);
        // Answered first: the control channel sends this answer before the next turn of the loop.
        ctx.clock.setTimeout(() => crash.kill(), 0);
        return { host: ctx.hostId, pid: crash.pid, at: ctx.clock.now() };
      }
    }
  };
}
