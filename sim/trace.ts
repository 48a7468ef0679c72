/**
 * The trace of one seed: one line per fault, host decision and key event,
 * stamped with virtual time, and a running fingerprint of every line (two
 * runs of a seed are the same run when their fingerprints agree).
 */
export class Trace {
  readonly lines: string[] = [];
  private hash = 0x811c9dc5;

  constructor(private readonly now: () => number) {}

  /** Appends `text` at the current virtual time. */
  add(text: string): void {
    const line = `${this.now().toFixed(3).padStart(9)} ${text}`;
    this.lines.push(line);
    let h = this.hash;
    for (let i = 0; i < line.length; i++) h = Math.imul(h ^ line.charCodeAt(i), 16777619);
    this.hash = Math.imul(h ^ 10, 16777619) >>> 0;
  }

  /** The last `n` lines. */
  tail(n: number): string[] {
    return this.lines.slice(-n);
  }

  /** A hex digest of every line so far. */
  get fingerprint(): string {
    return (this.hash >>> 0).toString(16).padStart(8, '0');
  }
}
