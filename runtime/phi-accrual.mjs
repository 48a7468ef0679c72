// The phi-accrual failure detector (Hayashibara et al., 2004; as in Akka and
// Cassandra), pure and timer-free: every time is passed in, in ms. Types and
// documentation: phi-accrual.d.mts. Plain JavaScript: the liveness worker
// thread imports it without a TypeScript loader.
//
// phi = -log10(1 - F(silence)), F the normal CDF with the mean and standard
// deviation of the last `maxSamples` inter-arrival times (the mean raised by
// `acceptablePauseMs`, the deviation at least `minStdDeviationMs`), F taken
// in the logistic approximation Akka uses:
// F(y) = 1 / (1 + exp(-y (1.5976 + 0.070566 y²))), y = (x - mean) / sd.
// With a = y (1.5976 + 0.070566 y²), phi = ln(1 + e^a) / ln 10: computed so,
// it neither overflows nor loses precision far in either tail.

const A1 = 1.5976;
const A3 = 0.070566;

/** ln(1 + e^a) without overflow or underflow. */
const softplus = (a) => (a > 0 ? a + Math.log1p(Math.exp(-a)) : Math.log1p(Math.exp(a)));

/** phi of a silence of `x` ms for a normal law of mean `mean` and deviation `sd`. */
const phiOf = (x, mean, sd) => {
  const y = (x - mean) / sd;
  return softplus(y * (A1 + A3 * y * y)) / Math.LN10;
};

/**
 * The y at which phi reaches `threshold`: the root of A3 y³ + A1 y = c with
 * c = ln(10^threshold - 1) (one real root: the left side increases), by
 * Cardano, then polished by Newton.
 */
const yAt = (threshold) => {
  const t = threshold * Math.LN10;
  // ln(10^θ - 1) = θ ln 10 + ln(1 - 10^-θ), which does not overflow for a large θ.
  const c = t + Math.log1p(-Math.exp(-t));
  const p = A1 / A3;
  const q = -c / A3;
  const r = Math.sqrt((q * q) / 4 + (p * p * p) / 27);
  let y = Math.cbrt(-q / 2 + r) + Math.cbrt(-q / 2 - r);
  for (let i = 0; i < 3; i++) y -= (A3 * y * y * y + A1 * y - c) / (3 * A3 * y * y + A1);
  return y;
};

const defaults = {
  threshold: 8,
  minStdDeviationMs: 2,
  acceptablePauseMs: 5,
  maxSamples: 200,
  firstIntervalMs: 5,
};

/** One monitored id: its last beat and a ring of its last intervals with running sums. */
class History {
  constructor(size) {
    this.ring = new Float64Array(size);
    this.head = 0;
    this.count = 0;
    this.sum = 0;
    this.sumSq = 0;
    this.last = 0;
  }

  add(x) {
    const ring = this.ring;
    if (this.count === ring.length) {
      const old = ring[this.head];
      this.sum -= old;
      this.sumSq -= old * old;
    } else this.count++;
    ring[this.head] = x;
    this.sum += x;
    this.sumSq += x * x;
    this.head++;
    if (this.head === ring.length) {
      this.head = 0;
      // Once per turn of the ring (O(1) per beat, amortised): sums kept by
      // adding and subtracting drift; start them afresh from the samples.
      let s = 0;
      let s2 = 0;
      for (let i = 0; i < this.count; i++) {
        s += ring[i];
        s2 += ring[i] * ring[i];
      }
      this.sum = s;
      this.sumSq = s2;
    }
  }

  get mean() {
    return this.sum / this.count;
  }

  get stdDeviation() {
    const m = this.mean;
    return Math.sqrt(Math.max(0, this.sumSq / this.count - m * m));
  }
}

export class PhiAccrualDetector {
  #histories = new Map();
  #y;

  constructor(options = {}) {
    const o = { ...defaults };
    for (const [k, v] of Object.entries(options)) if (v !== undefined) o[k] = v;
    const check = (name, ok) => {
      if (!(typeof o[name] === 'number' && ok(o[name])))
        throw new RangeError(`PhiAccrualDetector: bad ${name} ${String(o[name])}`);
    };
    check('threshold', (x) => x > 0 && Number.isFinite(x));
    check('minStdDeviationMs', (x) => x > 0 && Number.isFinite(x));
    check('acceptablePauseMs', (x) => x >= 0 && Number.isFinite(x));
    check('maxSamples', (x) => Number.isInteger(x) && x >= 1);
    check('firstIntervalMs', (x) => x > 0 && Number.isFinite(x));
    this.threshold = o.threshold;
    this.minStdDeviationMs = o.minStdDeviationMs;
    this.acceptablePauseMs = o.acceptablePauseMs;
    this.maxSamples = o.maxSamples;
    this.firstIntervalMs = o.firstIntervalMs;
    this.#y = yAt(o.threshold);
  }

  heartbeat(id, nowMs) {
    let h = this.#histories.get(id);
    if (h === undefined) {
      // First beat: nothing measured yet. Start from two intervals around the
      // expected one, a quarter of it apart (as Akka): a host that beats once
      // and never again is still suspected, after a generous delay.
      h = new History(this.maxSamples);
      const d = this.firstIntervalMs / 4;
      h.add(this.firstIntervalMs - d);
      h.add(this.firstIntervalMs + d);
      this.#histories.set(id, h);
    } else {
      // Every interval counts, a long one too (Akka leaves out the one that
      // ends a suspicion): an id judged down is removed by the caller, so an
      // interval seen here was tolerated, and is the jitter to adapt to.
      h.add(Math.max(0, nowMs - h.last));
    }
    h.last = nowMs;
  }

  phi(id, nowMs) {
    const h = this.#histories.get(id);
    if (h === undefined) return 0;
    return phiOf(
      nowMs - h.last,
      h.mean + this.acceptablePauseMs,
      Math.max(h.stdDeviation, this.minStdDeviationMs),
    );
  }

  suspicionAtMs(id) {
    const h = this.#histories.get(id);
    if (h === undefined) return undefined;
    return (
      h.mean + this.acceptablePauseMs + this.#y * Math.max(h.stdDeviation, this.minStdDeviationMs)
    );
  }

  lastHeartbeatMs(id) {
    return this.#histories.get(id)?.last;
  }

  remove(id) {
    return this.#histories.delete(id);
  }

  has(id) {
    return this.#histories.has(id);
  }
}
