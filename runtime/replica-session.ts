import { freeze } from 'immer';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { ActorDefinition } from './actor.ts';
import type { ValueCodec } from './codec.ts';
import { CorruptPatchError, FtmError, StaleEpochError } from './errors.ts';
import { subjects } from './subjects.ts';
import { TransitionRunner } from './transition.ts';
import { SessionMeta, decodeChanges, type MetaSnapshot } from './session-meta.ts';
import {
  AckSource,
  CommitFlag,
  FrameKind,
  decodeFrame,
  encodeAck,
  type CommitFrame,
} from './wire.ts';

/** Where a replica repairs itself from: the durable log and the primary's snapshot. */
export interface ReplicaSource {
  /** Asks the primary to flush its log, then reads the logged frames after `seq`. */
  logAfter(seq: number): Promise<Uint8Array[]>;
  /** The primary's current state. */
  snapshot(): Promise<{ state: object; seq: number; epoch: number; meta: MetaSnapshot }>;
  /** Fault injection for tests: true drops the frame as if the network lost it. */
  drop?(seq: number): boolean;
}

/**
 * The hot standby of a session: applies commit frames strictly in seq order,
 * holds back early arrivals, refuses stale epochs and corrupt patches (its
 * state stays as it was), and acknowledges the applied seq on `ftm.s.<sid>.ack`.
 * It also keeps the inputs that no commit has covered yet, for promotion.
 */
export class ReplicaSession {
  readonly role = 'standby' as const;
  state: object;
  seq: number;
  epoch: number;
  /** Dedup table, timers and jobs, kept by applying the same commits as the primary. */
  meta: SessionMeta;
  private readonly runner: TransitionRunner;
  private readonly early = new Map<number, CommitFrame>();
  /** Inputs seen but not yet covered by a commit, in arrival order (bounded). */
  readonly uncovered = new Map<string, Uint8Array>();
  private subs: Subscription[] = [];
  private ackScheduled = false;
  private repairing = false;
  private stopped = false;
  /** Until the primary's snapshot is in, every frame waits in `early`. */
  private syncing: boolean;
  /** Set on promotion: inputs go straight to the new primary instead of the buffer. */
  private forward: ((bytes: Uint8Array) => void) | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly codec: ValueCodec,
    readonly actor: ActorDefinition,
    readonly sid: string,
    /** The state to start from; undefined: fetch it from the primary in start(), streaming meanwhile. */
    init: { state: object; seq: number; epoch: number; meta: MetaSnapshot } | undefined,
    private readonly onError: (err: FtmError) => void,
    private readonly source: ReplicaSource,
    private readonly maxUncovered = 10_000,
  ) {
    this.syncing = init === undefined;
    this.state = init?.state ?? {};
    this.seq = init?.seq ?? 0;
    this.epoch = init?.epoch ?? 0;
    this.meta = new SessionMeta(init?.meta);
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
      this.nc.subscribe(subjects.output(this.sid), { callback: (_e, m) => this.onOutput(m.data) }),
      this.nc.subscribe(subjects.input(this.sid), { callback: (_e, m) => this.onInput(m.data) }),
    );
    await this.nc.flush();
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

  private install(snap: { state: object; seq: number; epoch: number; meta: MetaSnapshot }): void {
    this.state = freeze(snap.state, true);
    this.seq = snap.seq;
    this.epoch = Math.max(this.epoch, snap.epoch);
    this.meta = new SessionMeta(snap.meta);
  }

  private onInput(bytes: Uint8Array): void {
    if (this.forward) return this.forward(bytes);
    try {
      const f = decodeFrame(bytes);
      if (f.kind !== FrameKind.input) return;
      this.uncovered.set(f.requestId, bytes);
      if (this.uncovered.size > this.maxUncovered) {
        const oldest = this.uncovered.keys().next().value;
        if (oldest !== undefined) this.uncovered.delete(oldest);
      }
    } catch (err) {
      this.onError(err as FtmError);
    }
  }

  /** Handles one frame from the output subject. Exposed for fault-injection tests. */
  onOutput(bytes: Uint8Array): void {
    if (this.stopped) return;
    let f;
    try {
      f = decodeFrame(bytes);
    } catch (err) {
      return this.onError(
        new CorruptPatchError(`${this.sid}: ${(err as Error).message}`, { cause: err }),
      );
    }
    if (f.kind === FrameKind.refusal) {
      this.uncovered.delete(f.requestId);
      return;
    }
    if (f.kind !== FrameKind.commit || f.flags & CommitFlag.duplicate) return;
    if (this.syncing) {
      this.early.set(f.seq, { ...f, patches: f.patches.slice(), reply: f.reply.slice() });
      return;
    }
    if (f.epoch < this.epoch) {
      return this.onError(
        new StaleEpochError(
          `${this.sid}: commit ${f.seq} of epoch ${f.epoch} refused, epoch is ${this.epoch}`,
        ),
      );
    }
    // Already applied: a retransmit, maybe because our ack was lost. Ack again.
    if (f.seq <= this.seq) return this.scheduleAck();
    if (this.source.drop?.(f.seq)) return;
    if (f.seq > this.seq + 1) {
      // Held back until the gap before it is filled from the log.
      this.early.set(f.seq, { ...f, patches: f.patches.slice(), reply: f.reply.slice() });
      this.repair('gap');
      return;
    }
    if (!this.apply(f)) return this.repair('corrupt');
    this.drainEarly();
  }

  private drainEarly(): void {
    for (const [seq, f] of this.early)
      if (seq <= this.seq || f.epoch < this.epoch) this.early.delete(seq);
    for (let next = this.early.get(this.seq + 1); next; next = this.early.get(this.seq + 1)) {
      this.early.delete(next.seq);
      if (!this.apply(next)) return;
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
            if (f.kind === FrameKind.commit && f.seq === this.seq + 1 && !this.apply(f)) break;
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

  private apply(f: CommitFrame): boolean {
    if (this.stopped) return false;
    let effects;
    try {
      const changes = decodeChanges(this.codec, f.flags, f.patches);
      if (changes.patches.length) this.state = this.runner.apply(this.state, changes.patches);
      effects = changes.effects;
    } catch (err) {
      this.onError(
        new CorruptPatchError(
          `${this.sid}: commit ${f.seq} refused, replica kept at ${this.seq}: ${(err as Error).message}`,
          { cause: err },
        ),
      );
      return false;
    }
    this.seq = f.seq;
    this.epoch = f.epoch;
    this.meta.recordFrame(f, effects);
    this.uncovered.delete(f.requestId);
    this.scheduleAck();
    return true;
  }

  /** One ack per burst: frames handled in the same tick share it. */
  private scheduleAck(): void {
    if (this.ackScheduled) return;
    this.ackScheduled = true;
    queueMicrotask(() => {
      this.ackScheduled = false;
      if (this.subs.length)
        this.nc.publish(subjects.ack(this.sid), encodeAck(AckSource.standby, this.epoch, this.seq));
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
