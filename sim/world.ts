import { EventQueue, type SimEvent } from './event-queue.ts';
import { Prng } from './prng.ts';
import { SimProcess } from './process.ts';
import { Trace } from './trace.ts';

/** Lets every microtask run: the runtime's promise chains settle before the next event. */
const drainMicrotasks = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Virtual time starts here (ms): far from 0, so no "unset" zero is ever a real time. */
export const startTime = 10_000;

/** More events than this at one instant of virtual time is a loop that never lets time pass. */
const maxStepsPerInstant = 100_000;

/**
 * The simulated world of one seed: virtual time, the agenda of events
 * ordered by (time, insertion order), the seeded PRNG and the trace. The
 * loop pops the earliest event, sets the time, runs it, lets the microtasks
 * it caused run, then calls {@link afterStep} (the invariant checks);
 * an event of the server alone (routing, a store applying an operation)
 * runs no runtime code and needs neither.
 * Nothing real is scheduled in the simulated path: a timer, an I/O or a
 * random draw outside the world would make a seed unrepeatable.
 */
export class World {
  now = startTime;
  steps = 0;
  readonly rng: Prng;
  readonly trace: Trace;
  /** Called after every step; a violation stops the run (see {@link stop}). */
  afterStep: (() => void) | undefined;
  /** Called with what an event threw: in a real process, an uncaught exception. */
  onThrow: ((err: unknown) => void) | undefined;
  /**
   * Called when events keep coming due at one instant (more than
   * {@link maxStepsPerInstant}): a loop that never lets time pass. The run stops.
   */
  onStall: ((detail: string) => void) | undefined;
  private lastAt = Number.NaN;
  private stepsAtInstant = 0;
  /** Set to end the run at once (a violation was found). */
  stopped = false;
  private seq = 0;
  private readonly queue = new EventQueue();

  constructor(readonly seed: number) {
    this.rng = new Prng(seed);
    this.trace = new Trace(() => this.now);
  }

  /** Runs `fn` in `delayMs` (on `proc`, when given: dropped if it crashed, deferred while it hangs). */
  schedule(delayMs: number, fn: () => void, proc?: SimProcess): SimEvent {
    const delay = Number.isFinite(delayMs) && delayMs > 0 ? delayMs : 0;
    return this.enqueue(this.now + delay, fn, proc);
  }

  /** Runs `fn` at time `at` (never in the past). */
  at(at: number, fn: () => void, proc?: SimProcess): SimEvent {
    return this.enqueue(Math.max(at, this.now), fn, proc);
  }

  /**
   * Runs `fn` at time `at` on the simulated server: `fn` must not call into
   * the runtime (only schedule what does), so the loop neither drains
   * microtasks nor checks invariants after it.
   */
  atServer(at: number, fn: () => void): SimEvent {
    return this.enqueue(Math.max(at, this.now), fn, undefined, true);
  }

  private enqueue(
    at: number,
    run: () => void,
    proc: SimProcess | undefined,
    server = false,
  ): SimEvent {
    const e: SimEvent = { at, seq: this.seq++, run, proc, server, cancelled: false };
    this.queue.push(e);
    return e;
  }

  /** A process resumes: what came due while it hung runs now, in the order it came due. */
  resume(proc: SimProcess): void {
    proc.hung = false;
    const waiting = proc.deferred.splice(0);
    for (const e of waiting) if (!e.cancelled) this.enqueue(this.now, e.run, proc, e.server);
  }

  /** A process crashes: what it had pending is gone. */
  crash(proc: SimProcess): void {
    proc.crashed = true;
    proc.hung = false;
    proc.deferred.length = 0;
  }

  /** Creates a process (a host's or the client's). */
  process(name: string, hostId: string): SimProcess {
    return new SimProcess(name, hostId);
  }

  /**
   * Runs events until virtual time `until` (then the clock stands at
   * `until`), `done()` turns true, or the run is stopped.
   */
  async run(until: number, done?: () => boolean): Promise<void> {
    while (!this.stopped && !done?.()) {
      const e = this.queue.peek();
      if (!e || e.at > until) {
        this.now = Math.max(this.now, until);
        return;
      }
      this.queue.pop();
      if (e.cancelled) continue;
      if (e.at === this.lastAt) {
        if (++this.stepsAtInstant > maxStepsPerInstant) {
          this.onStall?.(`more than ${maxStepsPerInstant} events at ${e.at.toFixed(3)} ms`);
          this.stopped = true;
          return;
        }
      } else {
        this.lastAt = e.at;
        this.stepsAtInstant = 0;
      }
      this.now = e.at;
      const proc = e.proc;
      if (proc?.crashed) continue;
      if (proc?.hung) {
        proc.deferred.push(e);
        continue;
      }
      this.steps++;
      if (e.server) {
        e.run();
        continue;
      }
      try {
        e.run();
      } catch (err) {
        this.onThrow?.(err);
      }
      await drainMicrotasks();
      this.afterStep?.();
    }
  }

  /** Runs until `promise` settles or `maxMs` of virtual time passed; resolves whether it settled. */
  async runUntilSettled(promise: Promise<unknown>, maxMs: number): Promise<boolean> {
    let settled = false;
    promise.then(
      () => (settled = true),
      () => (settled = true),
    );
    await drainMicrotasks();
    await this.run(this.now + maxMs, () => settled);
    return settled;
  }
}
