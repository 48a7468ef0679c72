import type { SimProcess } from './process.ts';

/** A scheduled piece of work: runs at `at`, after every event of the same time scheduled before it. */
export type SimEvent = {
  readonly at: number;
  readonly seq: number;
  readonly run: () => void;
  /** The process it runs on: dropped when it crashed, deferred while it hangs. */
  readonly proc: SimProcess | undefined;
  /**
   * Runs on the simulated server only (routing, a store applying an
   * operation): no runtime code runs in it, so no microtask follows and no
   * host state changes.
   */
  readonly server: boolean;
  cancelled: boolean;
};

const before = (x: SimEvent, y: SimEvent) => x.at < y.at || (x.at === y.at && x.seq < y.seq);

/** A binary min-heap of events ordered by (time, insertion seq): the world's agenda. */
export class EventQueue {
  private readonly heap: SimEvent[] = [];

  get size(): number {
    return this.heap.length;
  }

  push(e: SimEvent): void {
    const h = this.heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(h[i]!, h[parent]!)) break;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }

  peek(): SimEvent | undefined {
    return this.heap[0];
  }

  pop(): SimEvent | undefined {
    const h = this.heap;
    const top = h[0];
    const last = h.pop();
    if (h.length && last) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && before(h[l]!, h[m]!)) m = l;
        if (r < h.length && before(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}
