export { counter, ledger } from './counter.ts';
import { counter, ledger } from './counter.ts';

/** Every example actor, for hosts started from the command line. */
export const exampleActors = [counter, ledger] as const;
