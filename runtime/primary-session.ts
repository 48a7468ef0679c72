import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { ActorDefinition } from './actor.ts';
import type { ValueCodec } from './codec.ts';
import { errorToWire, FtmError, HandlerError } from './errors.ts';
import { subjects } from './subjects.ts';
import { TransitionRunner } from './transition.ts';
import {
  CommitFlag,
  ConsistencyCode,
  FrameKind,
  decodeFrame,
  encodeCommit,
  encodeRefusal,
} from './wire.ts';

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
  /** Recent replies by request id: a repeated request is answered, not applied again. */
  private readonly replies = new Map<string, Uint8Array>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly codec: ValueCodec,
    readonly actor: ActorDefinition,
    readonly sid: string,
    init: { state: object; seq: number; epoch: number },
    now: () => number,
    private readonly onError: (err: FtmError) => void,
    private readonly dedupSize = 1024,
  ) {
    this.state = init.state;
    this.seq = init.seq;
    this.epoch = init.epoch;
    this.runner = new TransitionRunner(actor, sid, now);
    this.flags = ConsistencyCode[actor.consistency];
    this.outSubject = subjects.output(sid);
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
      this.nc.publish(this.outSubject, seen);
      return;
    }
    try {
      const payload = frame.payload.length ? this.codec.decode(frame.payload) : undefined;
      const t = this.runner.run(this.state, frame.type, payload, this.seq + 1);
      const reply = this.codec.encode(t.reply);
      const patches = t.patches.length ? this.codec.encode(t.patches) : empty;
      this.state = t.state;
      this.seq += 1;
      const flags = this.flags | CommitFlag.hasReply;
      this.nc.publish(
        this.outSubject,
        encodeCommit(flags, this.epoch, this.seq, frame.requestId, reply, patches),
      );
      this.remember(
        frame.requestId,
        encodeCommit(
          flags | CommitFlag.duplicate,
          this.epoch,
          this.seq,
          frame.requestId,
          reply,
          empty,
        ),
      );
    } catch (err) {
      const e =
        err instanceof FtmError
          ? err
          : new HandlerError(String((err as Error)?.message ?? err), { cause: err });
      this.onError(e);
      this.nc.publish(
        this.outSubject,
        encodeRefusal(this.epoch, this.seq, frame.requestId, this.codec.encode(errorToWire(e))),
      );
    }
  }

  private remember(requestId: string, frame: Uint8Array): void {
    this.replies.set(requestId, frame);
    if (this.replies.size > this.dedupSize) {
      const oldest = this.replies.keys().next().value;
      if (oldest !== undefined) this.replies.delete(oldest);
    }
  }

  close(): void {
    this.inputs?.unsubscribe();
    this.inputs = undefined;
  }
}
