import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { ActorDefinition } from './actor.ts';
import type { ValueCodec } from './codec.ts';
import { errorToWire, FtmError, HandlerError } from './errors.ts';
import { subjects } from './subjects.ts';
import type { SessionLog } from './durable-log.ts';
import { TransitionRunner, type WorkerJob } from './transition.ts';
import type { WorkerPool } from './worker-pool.ts';
import {
  AckSource,
  CommitFlag,
  ConsistencyCode,
  FrameKind,
  decodeFrame,
  encodeAck,
  encodeCommit,
  encodeRefusal,
} from './wire.ts';

/** What a replica or a restore needs to start from: a state at a seq. */
export type SessionSnapshot = { actor: string; state: object; seq: number; epoch: number };

/** Control requests served by a session's primary on `ftm.s.<sid>.ctl`. */
export type SessionControl = { op: 'flush' } | { op: 'snapshot' };

const empty = new Uint8Array(0);

/**
 * The live copy of a session: one writer, one transaction at a time. Each
 * committed transaction gets the next seq (gap-free per epoch) and leaves as
 * one commit frame on `ftm.s.<sid>.out` carrying the reply and the patches.
 */
export class PrimarySession {
  readonly role = 'primary' as const;
  state: object;
  seq: number;
  readonly epoch: number;
  private readonly runner: TransitionRunner;
  private readonly flags: number;
  private readonly outSubject: string;
  private inputs: Subscription | undefined;
  private control: Subscription | undefined;
  private flushScheduled = false;
  private sinceSnapshot = 0;
  private snapshotting: Promise<number> | undefined;
  /** Recent replies by request id: a repeated request is answered, not applied again. */
  private readonly replies = new Map<string, { flags: number; seq: number; reply: Uint8Array }>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly codec: ValueCodec,
    readonly actor: ActorDefinition,
    readonly sid: string,
    init: { state: object; seq: number; epoch: number },
    now: () => number,
    private readonly onError: (err: FtmError) => void,
    readonly log: SessionLog,
    private readonly saveSnapshot: (snap: SessionSnapshot) => Promise<void>,
    private readonly snapshotEvery = 1000,
    private readonly workers?: WorkerPool,
    private readonly dedupSize = 1024,
  ) {
    this.state = init.state;
    this.seq = init.seq;
    this.epoch = init.epoch;
    this.runner = new TransitionRunner(actor, sid, now);
    this.flags = ConsistencyCode[actor.consistency];
    this.outSubject = subjects.output(sid);
  }

  /** Serves control requests (snapshot, flush); needed before a standby attaches. */
  listen(): void {
    this.control = this.nc.subscribe(subjects.control(this.sid), {
      callback: (_err, msg) => {
        const req = this.codec.decode(msg.data) as SessionControl;
        if (req.op === 'snapshot') msg.respond(this.codec.encode(this.snapshot()));
        else
          this.log.flush().then(
            (loggedSeq) => msg.respond(this.codec.encode({ loggedSeq })),
            (err: unknown) => msg.respond(this.codec.encode({ error: errorToWire(err) })),
          );
      },
    });
  }

  snapshot(): SessionSnapshot {
    return { actor: this.actor.name, state: this.state, seq: this.seq, epoch: this.epoch };
  }

  /**
   * Writes a snapshot of the current state, then purges the log up to it.
   * Resolves with the snapshot's seq. One at a time per session.
   */
  snapshotNow(): Promise<number> {
    this.snapshotting ??= (async () => {
      try {
        const snap = this.snapshot(); // immer state is immutable: no copy needed
        this.sinceSnapshot = 0;
        await this.log.flush();
        await this.saveSnapshot(snap);
        await this.log.purgeUpTo(snap.seq);
        return snap.seq;
      } finally {
        this.snapshotting = undefined;
      }
    })();
    return this.snapshotting;
  }

  /** Resolves when no snapshot is being written (never rejects): close() waits for it. */
  async idle(): Promise<void> {
    await this.snapshotting?.catch(() => 0);
  }

  /** Called by the log once a batch is stored: durable-mode replies wait for this ack. */
  onLogged(seq: number): void {
    if (this.flags === ConsistencyCode.durable) {
      this.nc.publish(subjects.ack(this.sid), encodeAck(AckSource.log, this.epoch, seq));
    }
  }

  /** Starts taking inputs. */
  serve(): void {
    this.inputs = this.nc.subscribe(subjects.input(this.sid), {
      callback: (err, msg) => {
        if (err)
          return this.onError(
            new FtmError(`input subscription of ${this.sid}: ${err.message}`, { cause: err }),
          );
        this.onInput(msg.data);
      },
    });
  }

  private onInput(bytes: Uint8Array): void {
    let frame;
    try {
      frame = decodeFrame(bytes);
    } catch (err) {
      return this.onError(err as FtmError);
    }
    if (frame.kind !== FrameKind.input) return;
    const seen = this.replies.get(frame.requestId);
    if (seen) {
      // Encoded only here, on the rare repeat, not on every commit.
      const flags = seen.flags | CommitFlag.duplicate;
      this.nc.publish(
        this.outSubject,
        encodeCommit(flags, this.epoch, seen.seq, frame.requestId, seen.reply, empty),
      );
      return;
    }
    let payload: unknown;
    try {
      payload = frame.payload.length ? this.codec.decode(frame.payload) : undefined;
    } catch (err) {
      return this.refuse(
        frame.requestId,
        new HandlerError(`undecodable payload: ${(err as Error).message}`),
      );
    }
    this.commit(frame.requestId, frame.type, payload);
  }

  /**
   * Runs one transaction and publishes it. `requestId` is empty for messages
   * no client sent (worker results): they commit without a reply.
   */
  private commit(requestId: string, type: string, payload: unknown): void {
    try {
      const t = this.runner.run(this.state, type, payload, this.seq + 1);
      const reply = requestId ? this.codec.encode(t.reply) : empty;
      const patches = t.patches.length ? this.codec.encode(t.patches) : empty;
      this.state = t.state;
      this.seq += 1;
      const flags = requestId ? this.flags | CommitFlag.hasReply : this.flags;
      const commit = encodeCommit(flags, this.epoch, this.seq, requestId, reply, patches);
      this.nc.publish(this.outSubject, commit);
      this.log.append(commit);
      if (this.flags === ConsistencyCode.durable) this.flushSoon();
      if (++this.sinceSnapshot >= this.snapshotEvery) {
        this.snapshotNow().catch((err: unknown) =>
          this.onError(new FtmError(`snapshot of ${this.sid} failed`, { cause: err })),
        );
      }
      if (requestId) {
        this.remember(requestId, { flags, seq: this.seq, reply });
      }
      if (t.jobs?.length) for (const job of t.jobs) this.dispatch(job);
    } catch (err) {
      const e =
        err instanceof FtmError
          ? err
          : new HandlerError(String((err as Error)?.message ?? err), { cause: err });
      this.onError(e);
      if (requestId) this.refuse(requestId, e);
    }
  }

  private refuse(requestId: string, e: FtmError): void {
    this.nc.publish(
      this.outSubject,
      encodeRefusal(this.epoch, this.seq, requestId, this.codec.encode(errorToWire(e))),
    );
  }

  /** Starts a committed worker job; its result commits as a message of its own. */
  private dispatch(job: WorkerJob): void {
    if (!this.workers) {
      return this.onError(
        new FtmError(`actor ${this.actor.name} has no workers option: job ${job.task} not run`),
      );
    }
    this.workers.run(job.task, job.input).then(
      (result) => this.inputs && this.commit('', job.resultType, { result }),
      (err: unknown) =>
        this.inputs && this.commit('', job.resultType, { error: (err as Error).message }),
    );
  }

  /** Durable mode: one log flush per burst of commits. */
  private flushSoon(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      void this.log.flush();
    });
  }

  private remember(
    requestId: string,
    entry: { flags: number; seq: number; reply: Uint8Array },
  ): void {
    this.replies.set(requestId, entry);
    if (this.replies.size > this.dedupSize) {
      const oldest = this.replies.keys().next().value;
      if (oldest !== undefined) this.replies.delete(oldest);
    }
  }

  close(): void {
    this.inputs?.unsubscribe();
    this.control?.unsubscribe();
    this.inputs = undefined;
    this.control = undefined;
  }
}
