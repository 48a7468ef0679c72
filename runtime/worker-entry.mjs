// Runs inside a worker thread: loads the actor's task module and answers jobs.
// Plain JavaScript so that it starts without a TypeScript loader (it ships as
// is in dist/runtime/). A task module written in TypeScript gets tsx
// registered first (Node 20 does not hand the main thread's loader hooks on to
// workers); tsx is an optional peer dependency, so an application that ships
// TypeScript task modules installs it itself.
import { parentPort, workerData } from 'node:worker_threads';

const { module } = workerData;
if (/\.[cm]?tsx?$/.test(module)) await registerTsx(module);
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

/** Registers tsx for `module`; without tsx, fails with one line that says what to do. */
async function registerTsx(module) {
  try {
    // Resolved from here, so the application's own tsx (hoisted next to ftmesh) is found.
    import.meta.resolve('tsx/esm/api');
  } catch (cause) {
    throw new Error(
      `${module} is TypeScript: install tsx in your project (npm i -D tsx) or compile it to JavaScript`,
      { cause },
    );
  }
  const { register } = await import('tsx/esm/api');
  register();
}
