import { availableParallelism } from 'node:os';
import { runSeeds, type SeedReport } from './run-seeds.ts';

/**
 * The simulator's command line:
 *
 *   tsx sim/run.ts [--seeds N] [--first F] [--seed S] [--jobs J] [--json]
 *                  [--fence-off] [--long-pauses] [--tail L] [--quiet]
 *
 * Runs seeds F..F+N-1 (default 1..200), or the one seed S, over J processes
 * (default: the CPUs); prints each violation with its seed, invariant and
 * the last L (60) lines of its trace, in seed order, then a summary. With
 * --json the last line is one JSON object. Exit code 1 when any seed broke
 * an invariant.
 */
const args = process.argv.slice(2);
const flag = (name: string) => args.includes(name);
const value = (name: string): number | undefined => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : undefined;
};

const one = value('--seed');
const count = value('--seeds') ?? 200;
const first = value('--first') ?? 1;
const seeds = one !== undefined ? [one] : Array.from({ length: count }, (_, i) => first + i);
const json = flag('--json');
const quiet = flag('--quiet');
const fenceOff = flag('--fence-off');
const longPauses = flag('--long-pauses');
const tailLines = value('--tail') ?? 60;
const jobs = value('--jobs') ?? availableParallelism();

const reports: SeedReport[] = [];
const started = performance.now();
let done = 0;
await runSeeds(seeds, { fenceOff, longPauses, jobs, tailLines }, (r) => {
  reports.push(r);
  if (++done % 500 === 0 && !quiet && !json)
    console.error(
      `… ${done}/${seeds.length} seeds, ${reports.filter((x) => x.violations.length).length} with violations`,
    );
});
const wallMs = performance.now() - started;
reports.sort((a, b) => a.seed - b.seed);

const summary = {
  seeds: reports.length,
  steps: 0,
  faults: {} as Record<string, number>,
  failovers: 0,
  releases: 0,
  violations: 0,
  byInvariant: {} as Record<string, number[]>,
  exemptions: 0,
  fenceOff,
  longPauses,
  jobs,
  wallMs: Math.round(wallMs),
  msPerSeed: 0,
  cpuMsPerSeed: 0,
};
let cpuMs = 0;
for (const r of reports) {
  summary.steps += r.steps;
  summary.failovers += r.failovers;
  summary.releases += r.releases;
  summary.exemptions += r.notes.length;
  cpuMs += r.wallMs;
  for (const [k, n] of Object.entries(r.faults)) summary.faults[k] = (summary.faults[k] ?? 0) + n;
  for (const v of r.violations) {
    summary.violations++;
    (summary.byInvariant[v.invariant] ??= []).push(r.seed);
    console.log(`\nseed ${r.seed}: ${v.invariant} at ${v.at.toFixed(3)}: ${v.detail}`);
    for (const line of r.traceTail) console.log(`  ${line}`);
  }
  if (!quiet && !json) for (const n of r.notes) console.log(`seed ${r.seed}: ${n}`);
  if (one !== undefined && !json)
    console.log(`seed ${r.seed}: fingerprint ${r.fingerprint}, ${r.steps} steps`);
}
summary.msPerSeed = Number((wallMs / Math.max(1, reports.length)).toFixed(2));
summary.cpuMsPerSeed = Number((cpuMs / Math.max(1, reports.length)).toFixed(2));

const faults = Object.entries(summary.faults)
  .sort()
  .map(([k, n]) => `${k} ${n}`)
  .join(', ');
console.log(
  `\n${summary.seeds} seeds${fenceOff ? ' (log fencing off)' : ''}${longPauses ? ' (long pauses)' : ''}: ` +
    `${summary.steps} steps, ${summary.failovers} failovers, ${summary.releases} replies released, ` +
    `${summary.violations} violations; ${summary.msPerSeed} ms per seed (${jobs} jobs; ${summary.cpuMsPerSeed} ms of one process)\n` +
    `faults: ${faults || 'none'}` +
    (summary.exemptions
      ? `\n${summary.exemptions} standby-mode sessions exempted from released-in-history after a double loss`
      : ''),
);
for (const [inv, list] of Object.entries(summary.byInvariant))
  console.log(`  ${inv}: seeds ${list.slice(0, 20).join(' ')}${list.length > 20 ? ' …' : ''}`);
if (json) console.log(JSON.stringify(summary));
process.exitCode = summary.violations ? 1 : 0;
