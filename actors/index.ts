export { counter, ledger } from './counter.ts';
export { room } from './room.ts';
import { counter, ledger } from './counter.ts';
import { room } from './room.ts';

/** Every example actor, for hosts started from the command line. */
export const exampleActors = [counter, ledger, room] as const;
