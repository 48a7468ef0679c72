import { strict as assert } from 'node:assert';
import { PhiAccrualDetector } from '../../runtime/phi-accrual.mjs';

/** Beats of `id` at `times`. */
const beats = (d: PhiAccrualDetector, id: string, times: readonly number[]) => {
  for (const t of times) d.heartbeat(id, t);
};
/** `n` beats every `every` ms from 0, each shifted by `jitter(i)`; returns the last one's time. */
const steady = (
  d: PhiAccrualDetector,
  id: string,
  n: number,
  every = 5,
  jitter: (i: number) => number = () => 0,
) => {
  const times = Array.from({ length: n }, (_, i) => i * every + jitter(i));
  beats(d, id, times);
  return times[n - 1]!;
};

describe('phi-accrual failure detector', function () {
  it('phi grows with the silence, and reaches the threshold at suspicionAtMs', function () {
    const d = new PhiAccrualDetector({ threshold: 8, minStdDeviationMs: 1, acceptablePauseMs: 0 });
    const last = steady(d, 'a', 100, 5, (i) => (i % 2 ? 0.5 : -0.5));
    let before = -1;
    for (let s = 0; s <= 40; s += 0.5) {
      const phi = d.phi('a', last + s);
      assert.ok(phi >= before, `phi fell from ${before} to ${phi} at a silence of ${s} ms`);
      before = phi;
    }
    assert.ok(d.phi('a', last) < 0.1, 'just after a beat: no suspicion');
    assert.ok(d.phi('a', last + 1_000) > 100, 'a long silence: certain');
    assert.ok(Number.isFinite(d.phi('a', last + 1e9)), 'no overflow far in the tail');
    const at = d.suspicionAtMs('a')!;
    assert.ok(Math.abs(d.phi('a', last + at) - 8) < 1e-6, `phi at suspicionAtMs: ${at}`);
    assert.ok(d.phi('a', last + at - 0.1) < 8 && d.phi('a', last + at + 0.1) > 8);
  });

  it('adapts: a noisy history is suspected later than a steady one', function () {
    const d = new PhiAccrualDetector({
      threshold: 8,
      minStdDeviationMs: 0.5,
      acceptablePauseMs: 0,
    });
    const lastSteady = steady(d, 'steady', 200);
    // Same mean interval, but beats up to 4 ms early or late.
    const lastNoisy = steady(d, 'noisy', 200, 5, (i) => [0, 4, -4, 2, -2][i % 5]!);
    const calm = d.suspicionAtMs('steady')!;
    const noisy = d.suspicionAtMs('noisy')!;
    assert.ok(noisy > calm + 5, `noisy ${noisy} ms vs steady ${calm} ms`);
    // At the same silence, the steady one is the more suspect.
    assert.ok(d.phi('steady', lastSteady + 10) > d.phi('noisy', lastNoisy + 10));
  });

  it('only the last maxSamples intervals count', function () {
    const d = new PhiAccrualDetector({ threshold: 8, minStdDeviationMs: 0.1, maxSamples: 50 });
    // A noisy past, then 50 steady intervals: the noise is forgotten.
    steady(d, 'a', 100, 5, (i) => (i % 2 ? 3 : -3));
    const noisy = d.suspicionAtMs('a')!;
    beats(
      d,
      'a',
      Array.from({ length: 51 }, (_, i) => 1_000 + i * 5),
    );
    const calm = d.suspicionAtMs('a')!;
    assert.ok(calm < noisy - 10, `after the window: ${calm} ms, before: ${noisy} ms`);
    // Exactly as a fresh detector with only the steady beats (less the bootstrap).
    const fresh = new PhiAccrualDetector({ threshold: 8, minStdDeviationMs: 0.1, maxSamples: 50 });
    beats(
      fresh,
      'a',
      Array.from({ length: 52 }, (_, i) => i * 5),
    );
    assert.ok(Math.abs(fresh.suspicionAtMs('a')! - calm) < 1e-9);
  });

  it('minStdDeviation is a floor under a perfectly steady history', function () {
    const narrow = new PhiAccrualDetector({ minStdDeviationMs: 0.5, acceptablePauseMs: 0 });
    const wide = new PhiAccrualDetector({ minStdDeviationMs: 3, acceptablePauseMs: 0 });
    const last = steady(narrow, 'a', 300);
    steady(wide, 'a', 300);
    // The bootstrap's two intervals are gone (300 > maxSamples): the deviation measured is 0.
    const n = narrow.suspicionAtMs('a')!;
    const w = wide.suspicionAtMs('a')!;
    assert.ok(n > 5 && w > n, `narrow ${n} ms, wide ${w} ms`);
    // Linear in the floor: mean + y·sd, the same y for both.
    assert.ok(Math.abs((w - 5) / (n - 5) - 6) < 1e-9);
    // One millisecond late is no news with the wide floor, but suspect with the narrow one.
    assert.ok(narrow.phi('a', last + 5 + 3) > 8);
    assert.ok(wide.phi('a', last + 5 + 3) < 1);
  });

  it('acceptablePause shifts the suspicion by that much', function () {
    const none = new PhiAccrualDetector({ acceptablePauseMs: 0 });
    const ten = new PhiAccrualDetector({ acceptablePauseMs: 10 });
    const last = steady(none, 'a', 100, 5, (i) => (i % 3) - 1);
    steady(ten, 'a', 100, 5, (i) => (i % 3) - 1);
    assert.ok(Math.abs(ten.suspicionAtMs('a')! - none.suspicionAtMs('a')! - 10) < 1e-9);
    const s = none.suspicionAtMs('a')!;
    assert.ok(Math.abs(ten.phi('a', last + s + 10) - none.phi('a', last + s)) < 1e-9);
  });

  it('the first beat starts monitoring with firstIntervalMs and a quarter of it as deviation', function () {
    const d = new PhiAccrualDetector({
      threshold: 8,
      minStdDeviationMs: 0.1,
      acceptablePauseMs: 0,
      firstIntervalMs: 20,
    });
    assert.equal(d.has('a'), false);
    assert.equal(d.phi('a', 123), 0, 'an id never heard is not suspected');
    assert.equal(d.suspicionAtMs('a'), undefined);
    d.heartbeat('a', 1_000);
    assert.equal(d.has('a'), true);
    assert.equal(d.lastHeartbeatMs('a'), 1_000);
    // Mean 20, deviation 5 (a history of 15 and 25): the threshold 8 is about 5.2 deviations out.
    const at = d.suspicionAtMs('a')!;
    assert.ok(at > 20 + 5 * 5 && at < 20 + 5 * 5.5, `first suspicion at ${at} ms`);
    assert.ok(d.phi('a', 1_000 + 20) < 0.5);
    assert.ok(d.phi('a', 1_000 + at + 1) > 8);
  });

  it('remove() forgets an id; its next beat starts afresh', function () {
    const d = new PhiAccrualDetector({ minStdDeviationMs: 0.1 });
    const last = steady(d, 'a', 100, 5, (i) => (i % 2 ? 2 : -2));
    steady(d, 'b', 100);
    const noisy = d.suspicionAtMs('a')!;
    assert.equal(d.remove('a'), true);
    assert.equal(d.remove('a'), false);
    assert.equal(d.has('a'), false);
    assert.equal(d.phi('a', last + 1_000), 0);
    assert.equal(d.has('b'), true, 'the others stay');
    d.heartbeat('a', last + 1_000);
    const fresh = new PhiAccrualDetector({ minStdDeviationMs: 0.1 });
    fresh.heartbeat('a', 0);
    assert.equal(d.suspicionAtMs('a'), fresh.suspicionAtMs('a'));
    assert.notEqual(d.suspicionAtMs('a'), noisy);
  });

  it('running sums stay exact over many beats', function () {
    const d = new PhiAccrualDetector({ minStdDeviationMs: 0.01, maxSamples: 64 });
    const jitter = (i: number) => ((i * 7919) % 13) / 10;
    const last = steady(d, 'a', 100_003, 5, jitter);
    const ref = new PhiAccrualDetector({ minStdDeviationMs: 0.01, maxSamples: 64 });
    // The same last 64 intervals, fed to a detector that has seen only them (and its bootstrap, gone).
    const times = Array.from({ length: 100 }, (_, k) => {
      const i = 100_003 - 100 + k;
      return i * 5 + jitter(i);
    });
    beats(ref, 'a', times);
    assert.ok(Math.abs(d.suspicionAtMs('a')! - ref.suspicionAtMs('a')!) < 1e-6);
    assert.ok(Math.abs(d.phi('a', last + 9) - ref.phi('a', times.at(-1)! + 9)) < 1e-6);
  });

  it('rejects invalid options', function () {
    assert.throws(() => new PhiAccrualDetector({ threshold: 0 }), RangeError);
    assert.throws(() => new PhiAccrualDetector({ minStdDeviationMs: 0 }), RangeError);
    assert.throws(() => new PhiAccrualDetector({ acceptablePauseMs: -1 }), RangeError);
    assert.throws(() => new PhiAccrualDetector({ maxSamples: 0.5 }), RangeError);
    assert.throws(() => new PhiAccrualDetector({ firstIntervalMs: Number.NaN }), RangeError);
  });
});
