import { MalformedMessageError } from './errors.ts';

/** Where a client checks that an epoch exists: the ownership record. */
export interface EpochAuthority {
  /** The session's epoch as the client's view of the record has it (0: none). */
  known(sid: string): number;
  /** Reads the record now; resolves whether its epoch is at least `epoch`. */
  confirm(sid: string, epoch: number): Promise<boolean>;
}

/** Frames parked while an epoch is being confirmed, at most. */
const maxParked = 4_096;

/**
 * Guards a client against epochs nobody wrote. A frame of a newer epoch
 * makes a client drop what it holds and send its requests again, so an epoch
 * is taken from the wire only once the ownership record has it: at once when
 * the client's view already does, else after one read of the record, with
 * the frames of that epoch parked meanwhile and replayed in order. A forged
 * epoch is refused and its frames dropped (and counted by the caller).
 */
export class EpochGate {
  private confirmed = 0;
  private readonly waiting = new Map<number, (() => void)[]>();
  private readonly refused = new Set<number>();
  private parked = 0;

  constructor(
    private readonly sid: string,
    private readonly authority: EpochAuthority | undefined,
    /** A replayed frame that failed (malformed after all): counted, never thrown. */
    private readonly onDropped: (err: unknown) => void,
  ) {}

  /**
   * Whether a frame of `epoch` (newer than the client's) may be used now.
   * False: it waits for the record (`replay` runs once it confirms).
   * @throws MalformedMessageError for an epoch the record refused
   */
  admit(epoch: number, replay: () => void): boolean {
    if (!this.authority || this.confirmed >= epoch || this.authority.known(this.sid) >= epoch)
      return true;
    if (this.refused.has(epoch))
      throw new MalformedMessageError(`${this.sid}: no record has epoch ${epoch}`);
    let queue = this.waiting.get(epoch);
    if (!queue) {
      this.waiting.set(epoch, (queue = []));
      this.authority.confirm(this.sid, epoch).then(
        (ok) => this.settle(epoch, ok),
        () => this.settle(epoch, false),
      );
    }
    if (this.parked < maxParked) {
      queue.push(replay);
      this.parked++;
    }
    return false;
  }

  private settle(epoch: number, ok: boolean): void {
    const queue = this.waiting.get(epoch) ?? [];
    this.waiting.delete(epoch);
    this.parked -= queue.length;
    if (!ok) {
      if (this.refused.size > 64) this.refused.clear();
      this.refused.add(epoch);
      for (let i = 0; i < queue.length; i++)
        this.onDropped(new MalformedMessageError(`${this.sid}: no record has epoch ${epoch}`));
      return;
    }
    this.confirmed = Math.max(this.confirmed, epoch);
    for (const replay of queue) {
      try {
        replay();
      } catch (err) {
        this.onDropped(err);
      }
    }
  }
}
