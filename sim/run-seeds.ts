import { fork } from 'node:child_process';
import { runSeed, type SeedOptions, type SeedResult } from './run-seed.ts';

/** A seed's result as reported across processes: the trace cut to its tail. */
export type SeedReport = Omit<SeedResult, 'trace'> & { traceTail: string[] };

/** Options of {@link runSeeds}. */
export type RunSeedsOptions = SeedOptions & {
  /** Processes to run seeds in (default 1: this one). */
  jobs?: number;
  /** Trace lines kept per seed with a violation (default 60). */
  tailLines?: number;
};

/** Cuts a result down to what a report needs. */
export function toReport(r: SeedResult, tailLines: number): SeedReport {
  const { trace, ...rest } = r;
  return { ...rest, traceTail: r.violations.length ? trace.slice(-tailLines) : [] };
}

/**
 * Runs `seeds`, here or spread over `jobs` child processes (a seed's run
 * does not depend on where it runs); calls `onResult` for each, in the
 * order they finish.
 */
export async function runSeeds(
  seeds: readonly number[],
  options: RunSeedsOptions,
  onResult: (r: SeedReport) => void,
): Promise<void> {
  const { jobs = 1, tailLines = 60, ...seedOptions } = options;
  if (jobs <= 1 || seeds.length < 2) {
    for (const seed of seeds) onResult(toReport(await runSeed(seed, seedOptions), tailLines));
    return;
  }
  const worker = new URL('./seed-worker.ts', import.meta.url).pathname;
  const parts = Array.from({ length: Math.min(jobs, seeds.length) }, (_, j) =>
    seeds.filter((_, i) => i % jobs === j),
  );
  await Promise.all(
    parts.map(
      (part) =>
        new Promise<void>((resolve, reject) => {
          const child = fork(worker, [], { execArgv: process.execArgv, stdio: 'inherit' });
          child.on('message', (r: SeedReport) => onResult(r));
          child.on('error', reject);
          child.on('exit', (code) =>
            code === 0 ? resolve() : reject(new Error(`a seed worker exited with ${code}`)),
          );
          child.send({ seeds: part, options: seedOptions, tailLines });
        }),
    ),
  );
}
