import { headers, type NatsConnection } from '@nats-io/transport-node';
import {
  jetstream,
  jetstreamManager,
  type JetStreamClient,
  type JetStreamManager,
} from '@nats-io/jetstream';
import { subjects, storeNames } from './subjects.ts';
import { FtmError } from './errors.ts';
import { decodeBatch, encodeBatch, peekSequence } from './wire.ts';

/** Batches above this size are split, well under the 1 MiB client default payload. */
const maxBatchBytes = 512 * 1024;

/**
 * The durable log: commit frames of a session, batched into JetStream messages
 * on `ftm.log.<sid>` off the hot path. A batch's msgID (`sid.writerEpoch.firstSeq`)
 * makes a retried publish idempotent.
 */
export class DurableLog {
  private constructor(
    private readonly js: JetStreamClient,
    readonly jsm: JetStreamManager,
  ) {}

  /** Binds to (and creates if missing) the log stream. Do this at start-up, never on the hot path. */
  static async open(nc: NatsConnection, replicas = 1): Promise<DurableLog> {
    const jsm = await jetstreamManager(nc);
    try {
      await jsm.streams.info(storeNames.logStream);
    } catch {
      await jsm.streams.add({
        name: storeNames.logStream,
        subjects: [subjects.logAll],
        num_replicas: replicas,
      });
    }
    return new DurableLog(jetstream(nc), jsm);
  }

  /**
   * Reads every logged frame of `sid` with seq > `after`, in order.
   * @throws when JetStream does not answer or delivers less than it holds:
   *   an empty result means an empty log, never a failed read
   */
  async read(sid: string, after: number): Promise<Uint8Array[]> {
    const subject = subjects.log(sid);
    // null when the session has no batch at all; a failure throws.
    const last = await this.jsm.streams.getMessage(storeNames.logStream, {
      last_by_subj: subject,
    });
    if (!last) return [];
    const consumer = await this.js.consumers.get(storeNames.logStream, {
      filter_subjects: subject,
    });
    const frames: Uint8Array[] = [];
    let seen = 0;
    while (seen < last.seq) {
      const batch = await consumer.fetch({ max_messages: 256, expires: 2_000 });
      let got = 0;
      for await (const m of batch) {
        got++;
        seen = m.seq;
        for (const f of decodeBatch(m.data))
          if (peekSequence(f).seq > after) frames.push(f.slice());
        if (seen >= last.seq) break;
      }
      if (got === 0)
        throw new FtmError(
          `log of ${sid}: read stopped at stream seq ${seen} of ${last.seq}; JetStream may be electing a leader, retry`,
        );
    }
    return frames;
  }

  /**
   * Writes frames a replica holds, for a writer that is not the session's
   * primary: a standby dropping its copy logs what it acknowledged first. The
   * frames are the primary's own, byte for byte: where the primary logs them
   * too, a reader keeps one per seq.
   */
  async writeKept(sid: string, frames: readonly Uint8Array[], writer: string): Promise<void> {
    if (!frames.length) return;
    await this.append(sid, frames, `kept.${writer}`);
  }

  /**
   * Publishes one batch of frames; its msgID (`sid.writer.firstSeq`) makes a
   * retry idempotent. Resolves with the batch's stream seq.
   */
  async append(sid: string, frames: readonly Uint8Array[], writer: string): Promise<number> {
    const h = headers();
    h.set('Ftm-Last-Seq', String(peekSequence(frames[frames.length - 1]!).seq));
    const ack = await this.js.publish(subjects.log(sid), encodeBatch(frames), {
      msgID: `${sid}.${writer}.${peekSequence(frames[0]!).seq}`,
      headers: h,
      timeout: 2_000,
    });
    return ack.seq;
  }

  /** Deletes the batches of `sid` whose stream seq is below `streamSeq`. */
  async purgeBefore(sid: string, streamSeq: number): Promise<void> {
    await this.jsm.streams.purge(storeNames.logStream, {
      filter: subjects.log(sid),
      seq: streamSeq,
    });
  }
}

/**
 * One session's writer to the log. Frames are appended synchronously on the
 * hot path; `flush()` publishes what is pending as one batch, one batch in
 * flight at a time so the log keeps commit order.
 */
export class SessionLog {
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  private discarded = false;
  private chain: Promise<void> = Promise.resolve();
  /** Highest seq the log is known to hold. */
  loggedSeq = 0;
  /** Published batches not yet purged: stream seq and the last commit seq they hold. */
  readonly batches: { streamSeq: number; lastSeq: number }[] = [];

  constructor(
    private readonly log: DurableLog,
    readonly sid: string,
    /**
     * The epoch of the primary writing: it names the batches. A promoted
     * primary's first batch may start with its predecessor's frames (see
     * ReplicaSession.unlogged); named by the writer, it cannot be taken for a
     * duplicate of a batch the predecessor published at the same seq.
     */
    readonly epoch: number,
    private readonly onLogged: (seq: number) => void,
    private readonly onError: (err: Error) => void,
  ) {}

  get hasPending(): boolean {
    return this.pending.length > 0;
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

  /**
   * A promoted primary's start: the log holds every seq up to `logged`, and
   * `frames` (its predecessor's, which the replica kept) go out first, in
   * the next batch.
   */
  resumeAfter(logged: number, frames: readonly Uint8Array[]): void {
    this.loggedSeq = logged;
    for (const f of frames) this.append(f);
  }

  /** Drops what is pending and refuses later appends: a fenced primary writes nothing more. */
  discard(): void {
    this.discarded = true;
    this.pending = [];
    this.pendingBytes = 0;
  }

  /** Resolves once every frame appended before the call is in the log; returns the logged seq. */
  flush(): Promise<number> {
    if (this.pending.length) {
      const frames = this.pending;
      this.pending = [];
      this.pendingBytes = 0;
      this.chain = this.chain.then(() => this.publish(frames));
    }
    return this.chain.then(() => this.loggedSeq);
  }

  private async publish(frames: Uint8Array[]): Promise<void> {
    const firstSeq = peekSequence(frames[0]!).seq;
    const lastSeq = peekSequence(frames[frames.length - 1]!).seq;
    for (let attempt = 0; ; attempt++) {
      try {
        const streamSeq = await this.log.append(this.sid, frames, String(this.epoch));
        this.batches.push({ streamSeq, lastSeq });
        this.loggedSeq = lastSeq;
        this.onLogged(lastSeq);
        return;
      } catch (err) {
        // msgID makes the retry idempotent. Never skip a batch: a later one
        // would leave a hole in the log and its ack would count for this one
        // too. Retry while JetStream recovers (an election takes seconds);
        // stop only when this writer is discarded (fenced, or its host closed).
        if (this.discarded) return;
        if (attempt === 5 || (attempt > 5 && attempt % 20 === 0))
          this.onError(
            new FtmError(`log of ${this.sid}: batch at seq ${firstSeq} not stored yet, retrying`, {
              cause: err,
            }),
          );
        await new Promise((r) => setTimeout(r, Math.min(50 * (attempt + 1), 1_000)));
      }
    }
  }

  /** Purges the batches whose every commit is at or below `seq` (covered by a snapshot). */
  async purgeUpTo(seq: number): Promise<void> {
    let cut = -1;
    for (let i = 0; i < this.batches.length && this.batches[i]!.lastSeq <= seq; i++) cut = i;
    if (cut < 0) return;
    const upTo = this.batches[cut]!.streamSeq + 1;
    this.batches.splice(0, cut + 1);
    await this.log.purgeBefore(this.sid, upTo);
  }
}
