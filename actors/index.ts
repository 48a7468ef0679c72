export { counter } from './counter.ts';
import { counter } from './counter.ts';

/** Every example actor, for hosts started from the command line. */
export const exampleActors = [counter] as const;
