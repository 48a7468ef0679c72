import type { FtmError } from './errors.ts';
import { MalformedMessageError } from './errors.ts';
import type { Clock } from './clock.ts';

/**
 * Counts the messages a process dropped because they were malformed (or
 * their handler threw), by subject family, and reports them through
 * `onError` at most once per second per family: a flood of garbage must not
 * become a flood of log lines.
 */
export class DroppedMessages {
  readonly byFamily = new Map<string, number>();
  private readonly lastReport = new Map<string, number>();
  total = 0;

  constructor(
    private readonly clock: Clock,
    private readonly onError: (err: FtmError) => void,
  ) {}

  /** Records a dropped message on `subject`, and why. */
  drop(subject: string, why: unknown): void {
    this.total++;
    const family = familyOf(subject);
    const n = (this.byFamily.get(family) ?? 0) + 1;
    this.byFamily.set(family, n);
    const now = this.clock.now();
    // One report per second per family and kind of error: a flood of one kind hides no other.
    const key = `${family} ${(why as Error)?.name ?? ''}`;
    if (now - (this.lastReport.get(key) ?? -Infinity) < 1_000) return;
    this.lastReport.set(key, now);
    const reason = why instanceof Error ? why.message : String(why);
    this.onError(
      new MalformedMessageError(
        `dropped a message on ${subject} (${n} on ${family} so far): ${reason}`,
        {
          cause: why,
        },
      ),
    );
  }

  /** Counts by family, for status and tests. */
  snapshot(): Record<string, number> {
    return Object.fromEntries(this.byFamily);
  }
}

/** `ftm.s.room-1.ack` → `ftm.s.*.ack`: one count per kind of subject, not per session. */
function familyOf(subject: string): string {
  const parts = subject.split('.');
  if (parts[0] === 'ftm' && parts.length >= 3) parts[2] = '*';
  else if (parts[0] === '$KV' && parts.length >= 3) parts.length = 2;
  return parts.join('.');
}
