import { runSeed, type SeedOptions } from './run-seed.ts';
import { toReport } from './run-seeds.ts';

/**
 * A child process of `run-seeds.ts`: takes a list of seeds, runs them one
 * after the other, sends each report back, and exits.
 */
process.once('message', (job: { seeds: number[]; options: SeedOptions; tailLines: number }) => {
  void (async () => {
    for (const seed of job.seeds) {
      const r = await runSeed(seed, job.options);
      await new Promise<void>((resolve) =>
        process.send!(toReport(r, job.tailLines), () => resolve()),
      );
    }
    process.disconnect();
  })();
});
