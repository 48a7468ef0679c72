import type { Clock } from '../runtime/ports.ts';
import type { SimEvent } from './event-queue.ts';
import type { SimProcess } from './process.ts';
import type { World } from './world.ts';

/**
 * The Clock port of one process on virtual time. Its timers are world
 * events tagged with the process: gone when it crashes, deferred while it
 * hangs (they fire on resume, in order, late: a stopped process's timers do).
 */
export function processClock(world: World, proc: SimProcess): Clock {
  return {
    now: () => world.now,
    setTimeout: (fn, ms) => world.schedule(ms, fn, proc),
    clearTimeout: (handle) => {
      if (handle && typeof handle === 'object') (handle as SimEvent).cancelled = true;
    },
  };
}
