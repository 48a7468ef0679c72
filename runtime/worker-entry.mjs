// Runs inside a worker thread: loads the actor's task module and answers jobs.
// Plain JavaScript so that it starts without a TypeScript loader; a task module
// written in TypeScript gets tsx registered first (Node 20 does not hand the
// main thread's loader hooks on to workers).
import { parentPort, workerData } from 'node:worker_threads';

const { module } = workerData;
if (/\.[cm]?tsx?$/.test(module)) {
  const { register } = await import('tsx/esm/api');
  register();
}
const { tasks } = await import(module);

parentPort.on('message', (job) => {
  try {
    const fn = tasks[job.task];
    if (!fn) throw new Error(`no task ${job.task} in ${module}`);
    parentPort.postMessage({ id: job.id, result: fn(job.input) });
  } catch (err) {
    parentPort.postMessage({ id: job.id, error: err instanceof Error ? err.message : String(err) });
  }
});
