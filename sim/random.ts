import type { Random } from '../runtime/ports.ts';
import type { Prng } from './prng.ts';

/** The Random port on a seeded generator (one per process, forked from the world's). */
export function seededRandom(prng: Prng): Random {
  return {
    next: () => prng.next(),
    hex: (bytes) => prng.hex(bytes),
  };
}
