import type { Clock, LogPort } from './ports.ts';
import { FtmError, LogConflictError } from './errors.ts';
import { sleep } from './retry.ts';
import { encodeBatch, encodeEpochMarker, peekSequence, FrameKind } from './wire.ts';

/** Batches above this size are split, well under the 1 MiB client default payload. */
const maxBatchBytes = 512 * 1024;

/** How a writer's first append names the log's last message (PROTOCOL.md, "The log is fenced"). */
export type LogStart =
  /**
   * A new epoch (open, promotion, hand-off): its first batch begins with an
   * epoch marker from `from` and the `kept` frames; `expectLast` is the
   * subject's last message as the writer believes it (undefined: read it).
   * A refusal of that first batch means another writer appended meanwhile:
   * the writer reads the last message again and retries, so the marker
   * lands after everything the old epoch managed to write.
   */
  | {
      type: 'new-epoch';
      from: number;
      logged: number;
      kept: readonly Uint8Array[];
      expectLast?: number;
      /**
       * A read of the subject's last message already under way (a promotion
       * starts it alongside its compare-and-swap): the first batch uses it
       * instead of reading again. Stale is safe: JetStream refuses the batch
       * and the writer reads afresh.
       */
      lastRead?: Promise<{ seq: number; epoch: number } | undefined>;
    }
  /** The marker is already stored at `lastStreamSeq` (a restore writes it before serving). */
  | { type: 'marked'; logged: number; lastStreamSeq: number };

/**
 * Writes a restore's epoch marker: epoch `epoch` continues from `from`,
 * after the message at `expectLast` (the last one the restorer read).
 * Resolves with the marker's stream seq.
 * @throws LogConflictError when the log grew since that read: read again
 */
export async function writeMarker(
  port: LogPort,
  sid: string,
  epoch: number,
  from: number,
  expectLast: number,
  writer: string,
): Promise<number> {
  return port.append(sid, encodeBatch([encodeEpochMarker(epoch, from)]), {
    msgId: `${sid}.${epoch}.${writer}.m${from}`,
    expectLast,
    epoch,
  });
}

/**
 * One session's writer to the log, for one epoch. Frames are appended
 * synchronously on the hot path; `flush()` publishes what is pending as one
 * batch, one batch in flight at a time so the log keeps commit order.
 *
 * Every batch names the stream seq of the subject's last message (the
 * writer's own previous batch): JetStream refuses it when another writer
 * appended since. After this writer's marker landed, such a refusal means a
 * newer epoch claimed the log: the writer is fenced (`onFenced`) and
 * writes nothing more.
 */
export class SessionLog {
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private discarded = false;
  private chain: Promise<void> = Promise.resolve();
  /** Highest commit seq the log is known to hold. */
  loggedSeq = 0;
  /** The stream seq of this writer's last stored message; undefined until its marker landed. */
  lastStreamSeq: number | undefined;
  private expectLast: number | undefined;
  private lastRead: Promise<{ seq: number; epoch: number } | undefined> | undefined;
  /** Published batches not yet purged: stream seq and the last commit seq they hold. */
  readonly batches: { streamSeq: number; lastSeq: number }[] = [];
  /** Names this writer's batches: a retry is idempotent, another writer's batch never a duplicate. */
  private readonly writer: string;

  constructor(
    private readonly port: LogPort,
    readonly sid: string,
    readonly epoch: number,
    start: LogStart,
    writerId: string,
    private readonly clock: Clock,
    private readonly onLogged: (seq: number) => void,
    private readonly onFenced: (err: LogConflictError) => void,
    private readonly onError: (err: Error) => void,
  ) {
    this.writer = writerId;
    this.loggedSeq = start.logged;
    if (start.type === 'marked') {
      this.lastStreamSeq = this.expectLast = start.lastStreamSeq;
    } else {
      this.expectLast = start.expectLast;
      this.lastRead = start.lastRead;
      this.pending.push(encodeEpochMarker(epoch, start.from));
      for (const f of start.kept) this.append(f);
    }
  }

  get hasPending(): boolean {
    return this.pending.length > 0;
  }

  /** True once this writer's epoch marker is stored (its later refusals fence it). */
  get marked(): boolean {
    return this.lastStreamSeq !== undefined;
  }

  append(frame: Uint8Array): void {
    if (this.discarded) return;
    this.pending.push(frame);
    this.pendingBytes += frame.length;
    if (this.pendingBytes >= maxBatchBytes) void this.flush();
  }

  /**
   * Makes every later batch wait for `covered`: a promoted primary's frames
   * must not reach the log before a snapshot covers what its predecessor
   * may never have logged, or the log would have a hole.
   */
  hold(covered: Promise<unknown>): void {
    // Never a rejected chain: when the cover fails for good, nothing more is
    // written (a hole is worse than a log that stops), and the error is reported.
    this.chain = this.chain
      .then(() => covered)
      .then(
        () => undefined,
        (err: unknown) => {
          this.discard();
          this.onError(err as Error);
        },
      );
  }

  private fenced(why: string): void {
    this.discard();
    this.onFenced(new LogConflictError(`log of ${this.sid}, epoch ${this.epoch}: ${why}`));
  }

  /** Drops what is pending and refuses later appends: a fenced primary writes nothing more. */
  discard(): void {
    this.discarded = true;
    this.pending = [];
    this.pendingBytes = 0;
  }

  get isDiscarded(): boolean {
    return this.discarded;
  }

  /** Resolves once every frame appended before the call is in the log; returns the logged seq. */
  flush(): Promise<number> {
    if (this.pending.length && !this.discarded) {
      const frames = this.pending;
      this.pending = [];
      this.pendingBytes = 0;
      this.chain = this.chain.then(() => this.publish(frames));
    }
    return this.chain.then(() => this.loggedSeq);
  }

  private async publish(frames: Uint8Array[]): Promise<void> {
    const first = peekSequence(frames[0]!);
    const head = frames[0]![0] === FrameKind.epoch ? `m${first.seq}` : String(first.seq);
    const msgId = `${this.sid}.${this.epoch}.${this.writer}.${head}`;
    let lastCommit = 0;
    for (const f of frames) if (f[0] === FrameKind.commit) lastCommit = peekSequence(f).seq;
    const batch = encodeBatch(frames);
    for (let attempt = 0; ; attempt++) {
      if (this.discarded) return;
      try {
        if (this.expectLast === undefined) {
          const started = this.lastRead;
          this.lastRead = undefined;
          const last = (started && (await started)) ?? (await this.port.last(this.sid));
          if (this.discarded) return;
          // A newer epoch already claimed the log: this writer never appends again.
          if (last.epoch > this.epoch)
            return this.fenced(`the log's last message is epoch ${last.epoch}'s`);
          this.expectLast = last.seq;
        }
        const streamSeq = await this.port.append(this.sid, batch, {
          msgId,
          expectLast: this.expectLast,
          epoch: this.epoch,
        });
        this.lastStreamSeq = this.expectLast = streamSeq;
        if (lastCommit) {
          this.batches.push({ streamSeq, lastSeq: lastCommit });
          this.loggedSeq = Math.max(this.loggedSeq, lastCommit);
          this.onLogged(this.loggedSeq);
        }
        return;
      } catch (err) {
        if (this.discarded) return;
        if (err instanceof LogConflictError) {
          // A newer epoch's marker stands after our last batch: we are fenced.
          if (this.marked) return this.fenced(err.message);
          // Our marker has not landed: the old epoch appended since we looked. Look again.
          this.expectLast = undefined;
          continue;
        }
        // The connection is closed for good: nothing will ever be stored by this writer.
        if ((err as FtmError).code === 'closed') return this.discard();
        // msgID makes the retry idempotent. Never skip a batch: a later one
        // would leave a hole in the log and its ack would count for this one
        // too. Retry while JetStream recovers (an election takes seconds);
        // stop only when this writer is discarded (fenced, or its host closed).
        if (attempt === 5 || (attempt > 5 && attempt % 20 === 0))
          this.onError(
            new FtmError(`log of ${this.sid}: batch at seq ${first.seq} not stored yet, retrying`, {
              cause: err,
            }),
          );
        await sleep(this.clock, Math.min(50 * (attempt + 1), 1_000));
      }
    }
  }

  /**
   * Purges the batches whose every commit is at or below `seq` (covered by a
   * snapshot). Never the subject's last message: it is the next append's
   * expectation.
   */
  async purgeUpTo(seq: number): Promise<void> {
    let cut = -1;
    for (let i = 0; i < this.batches.length && this.batches[i]!.lastSeq <= seq; i++) cut = i;
    if (cut < 0 || this.lastStreamSeq === undefined) return;
    const upTo = Math.min(this.batches[cut]!.streamSeq + 1, this.lastStreamSeq);
    this.batches.splice(0, cut + 1);
    await this.port.purgeBefore(this.sid, upTo);
  }
}
