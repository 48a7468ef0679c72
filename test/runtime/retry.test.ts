import { strict as assert } from 'node:assert';
import type { Clock } from '../../runtime/clock.ts';
import { systemClock } from '../../runtime/clock.ts';
import { within } from '../../runtime/retry.ts';

/** The system clock, counting the timers still pending. */
function countingClock(): Clock & { pending: () => number } {
  const live = new Set<unknown>();
  return {
    now: () => systemClock.now(),
    setTimeout(fn, ms) {
      const h = systemClock.setTimeout(() => {
        live.delete(h);
        fn();
      }, ms);
      live.add(h);
      return h;
    },
    clearTimeout(h) {
      live.delete(h);
      systemClock.clearTimeout(h);
    },
    pending: () => live.size,
  };
}

describe('within: a bound that leaves no timer behind', function () {
  it('resolves with the promise when it settles first, and its timer is gone (a pending one would hold a closing process)', async () => {
    const clock = countingClock();
    assert.equal(await within(clock, Promise.resolve(7), 60_000), 7);
    assert.equal(clock.pending(), 0);
  });

  it('resolves undefined when the bound passes first', async () => {
    const clock = countingClock();
    assert.equal(await within(clock, new Promise<number>(() => undefined), 5), undefined);
    assert.equal(clock.pending(), 0);
  });

  it('passes a rejection on, and clears its timer too', async () => {
    const clock = countingClock();
    await assert.rejects(within(clock, Promise.reject(new Error('no')), 60_000), /no/);
    assert.equal(clock.pending(), 0);
  });
});
