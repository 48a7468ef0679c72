import type { Clock } from './clock.ts';
import { reservedTypes } from './actor.ts';
import { FtmError } from './errors.ts';
import type { Effect, Job, SessionMeta, Timer } from './session-meta.ts';
import type { WorkerPool } from './worker-pool.ts';

/** What {@link SessionEffects} needs from its primary. */
export type EffectsHost = {
  sid: string;
  actorName: string;
  clock: Clock;
  meta: SessionMeta;
  workers: WorkerPool | undefined;
  onError: (err: FtmError) => void;
  /** Commits a message no client sent (a timer that fired, a job's result). */
  commit: (type: string, payload: unknown, done: readonly Effect[]) => void;
  /** Runs `run` now if the primary serves, later if it is paused, never once it stopped. */
  whenServing: (run: () => void) => void;
  /** The actor asked to end the session (`ctx.close()`'s timer came due). */
  requestClose: () => void;
};

/**
 * The side effects a primary's commits start: replicated timers (armed on
 * the injected clock) and worker jobs. Both come back as messages committed
 * in the session's order; a timer or job result that comes due while the
 * primary is paused waits for it (and a promoted primary re-arms what the
 * replicated meta holds).
 */
export class SessionEffects {
  private readonly armed = new Map<string, unknown>();

  constructor(private readonly host: EffectsHost) {}

  /** Re-arms every timer and re-runs every job the meta holds (a restored or promoted primary). */
  resume(): void {
    for (const [key, timer] of this.host.meta.timers) this.arm(key, timer);
    for (const [id, job] of this.host.meta.jobs) this.dispatch(id, job);
  }

  /** Starts what a commit recorded: arms and disarms timers, runs worker jobs. */
  start(effects: readonly Effect[]): void {
    for (const e of effects) {
      if (e.op === 'timer') this.arm(e.key, e);
      else if (e.op === 'cancel') this.disarm(e.key);
      else if (e.op === 'job') this.dispatch(e.id, e);
    }
  }

  private arm(key: string, timer: Timer): void {
    const { clock, meta } = this.host;
    this.disarm(key);
    const fire = () => {
      // A clock may fire a millisecond early; a timer never runs before its time.
      const left = timer.at - clock.now();
      if (left > 0) return void this.armed.set(key, clock.setTimeout(fire, left));
      this.armed.delete(key);
      this.host.whenServing(() => {
        // Cancelled or re-armed while it waited: the commit that did so decides.
        if (meta.timers.get(key)?.at !== timer.at) return;
        // `ctx.close()`: the timer stays in the meta until the session is
        // closed, so a successor that takes over before then closes it too.
        if (timer.type === reservedTypes.close) return this.host.requestClose();
        this.host.commit(timer.type, timer.payload, [{ op: 'cancel', key }]);
      });
    };
    this.armed.set(key, clock.setTimeout(fire, Math.max(0, timer.at - clock.now())));
  }

  private disarm(key: string): void {
    const handle = this.armed.get(key);
    if (handle === undefined) return;
    this.host.clock.clearTimeout(handle);
    this.armed.delete(key);
  }

  /** Starts a committed worker job; its result commits as a message of its own. */
  private dispatch(id: string, job: Job): void {
    const { workers } = this.host;
    if (!workers) {
      return this.host.onError(
        new FtmError(`actor ${this.host.actorName} has no workers option: job ${job.task} not run`),
      );
    }
    const done: Effect[] = [{ op: 'done', id }];
    const answer = (result: { result: unknown } | { error: string }) =>
      this.host.whenServing(() => {
        if (this.host.meta.jobs.has(id)) this.host.commit(job.resultType, result, done);
      });
    workers.run(job.task, job.input).then(
      (result) => answer({ result }),
      (err: unknown) => answer({ error: (err as Error).message }),
    );
  }

  /** Disarms every timer; job results that come later find the primary stopped. */
  close(): void {
    for (const handle of this.armed.values()) this.host.clock.clearTimeout(handle);
    this.armed.clear();
  }
}
