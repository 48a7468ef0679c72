export { runSeed } from './run-seed.ts';
export type { SeedOptions, SeedResult } from './run-seed.ts';
export { runSeeds } from './run-seeds.ts';
export type { RunSeedsOptions, SeedReport } from './run-seeds.ts';
export type { Violation, Release } from './invariants.ts';
export { faultKinds } from './faults.ts';
export type { FaultKind } from './faults.ts';
