import { freeze } from 'immer';
import type { ActorDefinition } from './actor.ts';
import type { ValueCodec } from './codec.ts';
import { CorruptPatchError, FtmError, StaleEpochError } from './errors.ts';
import type { Transport, TransportSubscription } from './ports.ts';
import type { SessionDeps } from './session-types.ts';
import { subjects } from './subjects.ts';
import { TransitionRunner } from './transition.ts';
import { Attr, SpanKind, SpanName, type SessionTelemetry } from './telemetry.ts';
import { SessionMeta, decodeChanges, type MetaSnapshot } from './session-meta.ts';
import {
  AckSource,
  CommitFlag,
  FrameKind,
  decodeFrame,
  encodeAck,
  peekSequence,
  type CommitFrame,
} from './wire.ts';

/** Where a replica repairs itself from: the durable log and the primary's snapshot. */
export interface ReplicaSource {
  /** Asks the primary to flush its log, then reads the logged frames after `seq`. */
  logAfter(seq: number): Promise<Uint8Array[]>;
  /** The primary's current state, and how far its log reaches. */
  snapshot(): Promise<ReplicaInit & { logged?: number }>;
  /** Fault injection for tests: true drops the frame as if the network lost it. */
  drop?(seq: number): boolean;
}

/** The state a replica starts from. */
export type ReplicaInit = { state: object; seq: number; epoch: number; meta: MetaSnapshot };

/** Most frames a replica keeps for its log hand-over ({@link ReplicaSession.unlogged}). */
const maxUnloggedFrames = 8192;
const maxUnloggedBytes = 8 * 1024 * 1024;

/**
 * The hot standby of a session: applies commit frames strictly in seq order,
 * holds back early arrivals, refuses other epochs and corrupt patches (its
 * state stays as it was), and acknowledges the applied seq on `ftm.s.<sid>.ack`
 * once the ownership record names it ({@link confirm}), stamped with the
 * record's term: only then do its acks release replies.
 * It also keeps the inputs that no commit has covered yet, and the commits
 * the primary's log has not acknowledged yet: on promotion the first are run
 * again and the second written to the log, so that the log has no hole and
 * the new primary's replies are released on its first log write.
 */
export class ReplicaSession {
  readonly role = 'standby' as const;
  /** The ownership record's revision its primary had seen when it attached this copy. */
  attachedAfter = 0;
  state: object;
  seq: number;
  epoch: number;
  /** Dedup table, timers and jobs, kept by applying the same commits as the primary. */
  meta: SessionMeta;
  private readonly runner: TransitionRunner;
  /** Frames that arrived ahead of a gap (or during a sync), as received. */
  private readonly early = new Map<number, Uint8Array>();
  /** Applied frames above {@link primaryLogged}, oldest first, as received. */
  private unloggedFrames: { seq: number; bytes: Uint8Array }[] = [];
  private unloggedBytes = 0;
  /** Every applied frame above this seq is in `unloggedFrames` (or logged). */
  private keptFrom: number;
  /** The primary's log holds every seq up to this one (its log acks say so). */
  private primaryLogged: number;
  /** Inputs seen but not yet covered by a commit, in arrival order (bounded). */
  readonly uncovered = new Map<string, Uint8Array>();
  private subs: TransportSubscription[] = [];
  private ackScheduled = false;
  private repairing = false;
  private stopped = false;
  /** Until the primary's snapshot is in, every frame waits in `early`. */
  private syncing: boolean;
  /** Set on promotion: inputs go straight to the new primary instead of the buffer. */
  private forward: ((bytes: Uint8Array) => void) | undefined;
  /**
   * Whether the ownership record names this copy the standby. Only then does
   * it acknowledge: a standby's ack releases replies, and a copy the record
   * does not name (attached, the record not changed yet) would not be the
   * one promoted after a crash, nor the one a restore could ask.
   */
  private named = false;
  /** The record's term when it named this copy; its acks carry it. */
  private term = 0;
  private readonly transport: Transport;
  private readonly codec: ValueCodec;
  private readonly onError: (err: FtmError) => void;
  private readonly dropped: (subject: string, err: unknown) => void;
  private readonly suspended: () => boolean;
  private readonly telemetry: SessionTelemetry;

  constructor(
    deps: SessionDeps,
    readonly actor: ActorDefinition,
    readonly sid: string,
    /** The state to start from; undefined: fetch it from the primary in start(), streaming meanwhile. */
    init: ReplicaInit | undefined,
    private readonly source: ReplicaSource,
    private readonly maxUncovered = 10_000,
  ) {
    this.transport = deps.transport;
    this.codec = deps.codec;
    this.onError = deps.onError;
    this.dropped = deps.dropped;
    this.suspended = deps.suspended;
    this.telemetry = deps.telemetry;
    this.syncing = init === undefined;
    this.state = init?.state ?? {};
    this.seq = init?.seq ?? 0;
    this.epoch = init?.epoch ?? 0;
    this.meta = new SessionMeta(init?.meta);
    // A new session starts from nothing, a restored one from the log: either
    // way the log holds everything up to init.seq.
    this.keptFrom = this.primaryLogged = this.seq;
    this.runner = new TransitionRunner(actor, sid, () => 0);
  }

  /**
   * Subscribes to the session's inputs and output; resolves once the server
   * has the subscriptions and, when started without a state, once the
   * primary's snapshot is installed. Subscribing first means no commit made
   * while the snapshot travels is missed: it waits and applies after it.
   */
  async start(): Promise<void> {
    this.subs.push(
      this.transport.subscribe(subjects.output(this.sid), (m) => this.onOutput(m.data)),
      this.transport.subscribe(subjects.input(this.sid), (m) => this.onInput(m.data)),
      this.transport.subscribe(subjects.ack(this.sid), (m) => this.onAck(m.data)),
    );
    await this.transport.flush();
    if (this.syncing) {
      this.install(await this.source.snapshot());
      this.syncing = false;
      for (const id of this.uncovered.keys())
        if (this.meta.dedup.has(id)) this.uncovered.delete(id);
      this.drainEarly();
    }
    // Acknowledge the state we start from: a repeat answered from the dedup
    // table before the next commit is released on it.
    this.scheduleAck();
  }

  private install(snap: ReplicaInit & { logged?: number }): void {
    this.state = freeze(snap.state, true);
    this.seq = snap.seq;
    this.epoch = snap.epoch;
    this.meta = new SessionMeta(snap.meta);
    this.unloggedFrames = [];
    this.unloggedBytes = 0;
    this.keptFrom = snap.seq;
    this.primaryLogged = Math.max(this.primaryLogged, snap.logged ?? 0);
  }

  /** The primary's log acks: what they cover need not be kept any more. Untrusted. */
  private onAck(bytes: Uint8Array): void {
    const f = decodeFrame(bytes);
    if (f.kind !== FrameKind.ack || f.source !== AckSource.log || f.epoch !== this.epoch) return;
    if (f.seq <= this.primaryLogged) return;
    this.primaryLogged = f.seq;
    let n = 0;
    while (n < this.unloggedFrames.length && this.unloggedFrames[n]!.seq <= f.seq) {
      this.unloggedBytes -= this.unloggedFrames[n]!.bytes.length;
      n++;
    }
    if (n) this.unloggedFrames.splice(0, n);
  }

  /** Keeps an applied frame until the primary's log acknowledges it. */
  private keep(seq: number, bytes: Uint8Array): void {
    if (seq <= this.primaryLogged) return;
    // A copy: the received buffer is the client library's.
    this.unloggedFrames.push({ seq, bytes: bytes.slice() });
    this.unloggedBytes += bytes.length;
    // The log is far behind (JetStream stalled): stop keeping the oldest; a
    // promotion then covers the gap with a snapshot instead.
    while (
      this.unloggedFrames.length > maxUnloggedFrames ||
      this.unloggedBytes > maxUnloggedBytes
    ) {
      const dropped = this.unloggedFrames.shift()!;
      this.unloggedBytes -= dropped.bytes.length;
      this.keptFrom = dropped.seq;
    }
  }

  /**
   * For promotion: the seq up to which the old primary's log is complete,
   * and the applied frames above it, which the new primary writes to the log
   * first. Undefined when frames between the two are missing (the log fell
   * far behind, or this replica synced from a snapshot the log had not
   * reached): then only a snapshot can cover the gap.
   */
  unlogged(): { logged: number; frames: Uint8Array[] } | undefined {
    if (this.primaryLogged < this.keptFrom) return undefined;
    const logged = Math.min(this.primaryLogged, this.seq);
    return {
      logged,
      frames: this.unloggedFrames.filter((f) => f.seq > logged).map((f) => f.bytes),
    };
  }

  /** An input from the wire: untrusted; a malformed one throws (the transport counts it). */
  private onInput(bytes: Uint8Array): void {
    if (this.forward) return this.forward(bytes);
    const f = decodeFrame(bytes);
    if (f.kind !== FrameKind.input) return;
    // A copy: the received buffer is the client library's.
    this.uncovered.set(f.requestId, bytes.slice());
    if (this.uncovered.size > this.maxUncovered) {
      const oldest = this.uncovered.keys().next().value;
      if (oldest !== undefined) this.uncovered.delete(oldest);
    }
  }

  /**
   * Handles one frame from the output subject: untrusted. A frame that does
   * not decode, or of another epoch, throws (the transport drops and counts
   * it); patches that do not apply are refused (counted) and the replica
   * repairs itself. Exposed for fault-injection tests.
   */
  onOutput(bytes: Uint8Array): void {
    if (this.stopped) return;
    const f = decodeFrame(bytes);
    if (f.kind === FrameKind.refusal) {
      this.uncovered.delete(f.requestId);
      return;
    }
    if (f.kind !== FrameKind.commit || f.flags & CommitFlag.duplicate) return;
    if (this.syncing) {
      this.early.set(f.seq, bytes.slice());
      return;
    }
    // A copy follows one primary, in one epoch: an older epoch's late frame,
    // or a newer epoch's (another copy's primary), is not its to apply.
    if (f.epoch !== this.epoch)
      throw new StaleEpochError(
        `${this.sid}: commit ${f.seq} of epoch ${f.epoch} refused, this copy follows epoch ${this.epoch}`,
      );
    // Already applied: a retransmit, maybe because our ack was lost. Ack again.
    if (f.seq <= this.seq) return this.scheduleAck();
    if (this.source.drop?.(f.seq)) return;
    if (f.seq > this.seq + 1) {
      // Held back until the gap before it is filled from the log.
      this.early.set(f.seq, bytes.slice());
      this.repair('gap');
      return;
    }
    if (!this.apply(f, bytes)) return this.repair('corrupt');
    this.drainEarly();
  }

  private drainEarly(): void {
    for (const [seq, bytes] of this.early)
      if (seq <= this.seq || peekSequence(bytes).epoch !== this.epoch) this.early.delete(seq);
    for (let next = this.early.get(this.seq + 1); next; next = this.early.get(this.seq + 1)) {
      this.early.delete(this.seq + 1);
      const f = decodeFrame(next) as CommitFrame;
      if (!this.apply(f, next)) return;
    }
  }

  /**
   * Fills a gap from the durable log; when the log cannot (purged past it) or
   * a frame was corrupt, installs the primary's snapshot instead.
   */
  private repair(reason: 'gap' | 'corrupt'): void {
    if (this.repairing) return;
    this.repairing = true;
    void (async () => {
      try {
        if (reason === 'gap') {
          for (const bytes of await this.source.logAfter(this.seq)) {
            const f = decodeFrame(bytes);
            if (f.kind === FrameKind.commit && f.seq === this.seq + 1 && !this.apply(f, bytes))
              break;
          }
          this.drainEarly();
        }
        if (reason === 'corrupt' || (this.early.size > 0 && !this.early.has(this.seq + 1))) {
          const snap = await this.source.snapshot();
          if (snap.seq >= this.seq && !this.stopped) {
            this.install(snap);
            this.scheduleAck();
          }
          this.drainEarly();
        }
      } catch (err) {
        this.onError(
          new FtmError(`${this.sid}: repair after ${reason} failed: ${(err as Error).message}`, {
            cause: err,
          }),
        );
      } finally {
        this.repairing = false;
      }
    })();
  }

  /** Applies a decoded frame; `bytes` is the frame as received, kept until logged. */
  private apply(f: CommitFrame, bytes: Uint8Array): boolean {
    if (this.stopped) return false;
    // A sampled transaction's commit: its apply here is a span of the request's trace.
    const span =
      f.flags & CommitFlag.traced
        ? this.telemetry.tracing.childOf(f.traceparent, SpanName.standbyApply, SpanKind.CONSUMER, {
            [Attr.session]: this.sid,
            [Attr.seq]: f.seq,
            [Attr.epoch]: f.epoch,
          })
        : undefined;
    if (span) {
      const applied = this.applyFrame(f, bytes);
      this.telemetry.tracing.safely(() => span.end(this.telemetry.tracing.now()));
      return applied;
    }
    return this.applyFrame(f, bytes);
  }

  private applyFrame(f: CommitFrame, bytes: Uint8Array): boolean {
    let effects;
    try {
      const changes = decodeChanges(this.codec, f.flags, f.patches);
      if (changes.patches.length) this.state = this.runner.apply(this.state, changes.patches);
      effects = changes.effects;
    } catch (err) {
      this.dropped(
        subjects.output(this.sid),
        new CorruptPatchError(
          `${this.sid}: commit ${f.seq} refused, replica kept at ${this.seq}: ${(err as Error).message}`,
          { cause: err },
        ),
      );
      return false;
    }
    this.seq = f.seq;
    this.meta.recordFrame(f, effects);
    this.keep(f.seq, bytes);
    this.uncovered.delete(f.requestId);
    this.scheduleAck();
    return true;
  }

  /** The host's pause check cleared: acknowledge what was applied meanwhile. */
  goOn(): void {
    this.scheduleAck();
  }

  /** The record names this copy the standby at `term`: it acknowledges from now on. */
  confirm(term: number): void {
    if (this.named && term <= this.term) return;
    this.named = true;
    this.term = term;
    this.scheduleAck();
  }

  /** Whether the record named this copy (it acknowledges). */
  get isNamed(): boolean {
    return this.named;
  }

  /** One ack per burst: frames handled in the same tick share it. */
  private scheduleAck(): void {
    if (this.ackScheduled || !this.named) return;
    this.ackScheduled = true;
    queueMicrotask(() => {
      this.ackScheduled = false;
      // Suspended after a pause: no ack until the host knows it is alive (goOn acks then).
      if (this.subs.length && !this.stopped && !this.suspended())
        this.transport.publish(
          subjects.ack(this.sid),
          encodeAck(AckSource.standby, { epoch: this.epoch, term: this.term, seq: this.seq }),
        );
    });
  }

  /**
   * Promotion: stops applying output (frames after a gap are dropped: their
   * inputs are still uncovered and will run again) and hands the uncovered
   * inputs over, oldest first. Later inputs go to `forward` until close().
   */
  takeOver(forward: (bytes: Uint8Array) => void): Uint8Array[] {
    this.stopped = true;
    this.early.clear();
    const inputs = [...this.uncovered.values()];
    this.uncovered.clear();
    this.forward = forward;
    return inputs;
  }

  close(): void {
    this.stopped = true;
    for (const s of this.subs) s.unsubscribe();
    this.subs = [];
  }
}
