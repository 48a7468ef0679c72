import { Worker } from 'node:worker_threads';
import { WorkerJobError } from './errors.ts';

type Job = {
  id: number;
  task: string;
  input: unknown;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
};

/**
 * A fixed pool of worker threads running one actor type's CPU tasks. The
 * module at `module` exports `tasks: Record<string, (input) => output>`.
 * Results come back to the session as messages, so the primary's commit
 * order, not the order the workers finish in, is the replicated order.
 */
export class WorkerPool {
  private readonly idle: Worker[] = [];
  private readonly all: Worker[] = [];
  private readonly queue: Job[] = [];
  private readonly running = new Map<Worker, Job>();
  private nextId = 1;

  constructor(module: URL | string, size: number) {
    const href = typeof module === 'string' ? module : module.href;
    const entry = new URL('./worker-entry.mjs', import.meta.url);
    for (let i = 0; i < size; i++) {
      // The entry is plain JS and registers tsx itself for a TypeScript task module:
      // Node 20 does not hand the main thread's loader hooks on to workers.
      const w = new Worker(entry, { workerData: { module: href }, execArgv: [] });
      w.on('message', (m: { id: number; result?: unknown; error?: string }) => this.done(w, m));
      w.on('error', (err) => this.done(w, { id: -1, error: err.message }));
      w.unref();
      this.all.push(w);
      this.idle.push(w);
    }
  }

  /** Runs `task` on a free worker; rejects with {@link WorkerJobError} when the task throws. */
  run(task: string, input: unknown): Promise<unknown> {
    return new Promise((resolve, reject) => {
      this.queue.push({ id: this.nextId++, task, input, resolve, reject });
      this.pump();
    });
  }

  private pump(): void {
    while (this.idle.length && this.queue.length) {
      const w = this.idle.pop()!;
      const job = this.queue.shift()!;
      this.running.set(w, job);
      w.ref();
      w.postMessage({ id: job.id, task: job.task, input: job.input });
    }
  }

  private done(w: Worker, m: { id: number; result?: unknown; error?: string }): void {
    const job = this.running.get(w);
    if (!job) return;
    this.running.delete(w);
    w.unref();
    this.idle.push(w);
    if (m.error !== undefined)
      job.reject(new WorkerJobError(`worker task ${job.task}: ${m.error}`));
    else job.resolve(m.result);
    this.pump();
  }

  /** Stops every worker; queued and running jobs reject. Safe to call twice. */
  async close(): Promise<void> {
    for (const job of [...this.queue, ...this.running.values()])
      job.reject(new WorkerJobError('worker pool closed'));
    this.queue.length = 0;
    this.running.clear();
    await Promise.all(this.all.splice(0).map((w) => w.terminate()));
  }
}
