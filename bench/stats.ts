/** What every benchmark reports of a sample: median, p99, max and count. */
export type Stats = { p50: number; p99: number; max: number; n: number };

/** p50/p99/max of `samples`, rounded to 3 decimals; NaN figures for no sample. */
export function stats(samples: readonly number[]): Stats {
  if (samples.length === 0) return { p50: NaN, p99: NaN, max: NaN, n: 0 };
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
  const r = (x: number) => Math.round(x * 1000) / 1000;
  return { p50: r(at(0.5)), p99: r(at(0.99)), max: r(s[s.length - 1]!), n: s.length };
}

/** Runs `fn` `n` times one after the other; returns each call's time in ms. */
export async function timeEach(n: number, fn: () => Promise<unknown>): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const t = performance.now();
    await fn();
    out.push(performance.now() - t);
  }
  return out;
}

/** Aligns a table: the first `left` columns to the left, the others to the right. */
export function columns(rows: string[][], left: number): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  return rows
    .map((r) =>
      r
        .map((cell, c) => (c < left ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!)))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
