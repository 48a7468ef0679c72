import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { ActorDefinition } from './actor.ts';
import type { ValueCodec } from './codec.ts';
import { errorToWire, FtmError, HandlerError, InvalidMessageError } from './errors.ts';
import { subjects } from './subjects.ts';
import type { SessionLog } from './durable-log.ts';
import { TransitionRunner } from './transition.ts';
import { preciseNow } from './failover.ts';
import {
  SessionMeta,
  encodeChanges,
  type Effect,
  type Job,
  type MetaSnapshot,
  type Timer,
} from './session-meta.ts';
import type { WorkerPool } from './worker-pool.ts';
import {
  AckSource,
  CommitFlag,
  ConsistencyCode,
  FrameKind,
  decodeFrame,
  encodeAck,
  decodeDatagram,
  encodeCommit,
  encodeDatagram,
  encodeEvent,
  encodeRefusal,
} from './wire.ts';

/** What a replica or a restore needs to start from: a state at a seq, with the runtime's meta. */
export type SessionSnapshot = {
  actor: string;
  state: object;
  seq: number;
  epoch: number;
  meta: MetaSnapshot;
};

/** Tuning of a primary; the host passes its options down. */
export type PrimaryOptions = {
  /** A snapshot every this many commits (default 1000)... */
  snapshotEvery?: number;
  /** ...or once the commits since the last one reach this many bytes (default 4 MiB). */
  snapshotEveryBytes?: number;
  /** Unacknowledged commits are sent again after this long without a commit (default 20 ms). */
  retransmitAfterMs?: number;
};

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
  /** Dedup table, timers and jobs: replicated with every commit. */
  readonly meta: SessionMeta;
  private readonly armed = new Map<string, NodeJS.Timeout>();
  private acks: Subscription | undefined;
  private datagrams: Subscription | undefined;
  /** Commits the standby has not acknowledged yet, oldest first: sent again if it stays silent. */
  private readonly unacked: { seq: number; frame: Uint8Array }[] = [];
  /** Highest seq the standby acknowledged in this epoch. */
  standbyAcked: number;
  private lastSentAt = 0;
  private retransmitBackoff = 1;
  private readonly snapshotEvery: number;
  private readonly snapshotEveryBytes: number;
  private bytesSinceSnapshot = 0;
  private readonly retransmitAfterMs: number;
  /**
   * The host holding the hot copy; empty while the session has none (after
   * a failover with no live host to re-protect on). Then the log stands in:
   * every commit is flushed at once and the log's ack counts as the standby's.
   */
  standbyHost = '';
  /** Called once, when a newer epoch shows this copy is no longer the primary. */
  onFenced: ((epoch: number) => void) | undefined;
  /** Called after each commit: the host's timer then flushes the log and retransmits. */
  onWork: (() => void) | undefined;
  /** Called with the time of the next reply sent, then cleared: failover timelines use it. */
  onNextReply: ((at: number) => void) | undefined;
  private ackWaiters: { seq: number; resolve: () => void }[] = [];
  private fenced = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly codec: ValueCodec,
    readonly actor: ActorDefinition,
    readonly sid: string,
    /** A promoted replica hands its meta over as it is: no copy on the failover path. */
    init: { state: object; seq: number; epoch: number; meta: MetaSnapshot | SessionMeta },
    private readonly now: () => number,
    private readonly onError: (err: FtmError) => void,
    readonly log: SessionLog,
    /**
     * Stores a snapshot; resolves true when the log up to it may be purged:
     * it is stored and this copy still owns the session.
     */
    private readonly saveSnapshot: (snap: SessionSnapshot) => Promise<boolean>,
    private readonly workers: WorkerPool | undefined,
    options: PrimaryOptions = {},
  ) {
    this.state = init.state;
    this.seq = init.seq;
    this.epoch = init.epoch;
    this.standbyAcked = init.seq;
    this.meta = init.meta instanceof SessionMeta ? init.meta : new SessionMeta(init.meta);
    this.snapshotEvery = options.snapshotEvery ?? 1000;
    this.snapshotEveryBytes = options.snapshotEveryBytes ?? 4 * 1024 * 1024;
    this.retransmitAfterMs = options.retransmitAfterMs ?? 20;
    this.runner = new TransitionRunner(actor, sid, now);
    this.flags = ConsistencyCode[actor.consistency];
    this.outSubject = subjects.output(sid);
  }

  /** Serves control requests (snapshot, flush); needed before a standby attaches. */
  listen(): void {
    this.control = this.nc.subscribe(subjects.control(this.sid), {
      callback: (_err, msg) => {
        const req = this.codec.decode(msg.data) as SessionControl;
        const fail = (err: unknown) => msg.respond(this.codec.encode({ error: errorToWire(err) }));
        if (req.op === 'snapshot') {
          // With how far the log reaches: a standby that keeps the frames above
          // it can cover them on promotion.
          const bytes = this.codec.encode({ ...this.snapshot(), logged: this.log.loggedSeq });
          if (bytes.length <= (this.nc.info?.max_payload ?? 1024 * 1024) - 1024) {
            msg.respond(bytes);
            return;
          }
          // Too big for one NATS message (a large state, a dedup table full of
          // large replies): it goes through the snapshot store, which chunks it.
          this.snapshotNow().then(
            (seq) => msg.respond(this.codec.encode({ stored: seq, logged: seq })),
            fail,
          );
        } else
          this.log.flush().then((loggedSeq) => msg.respond(this.codec.encode({ loggedSeq })), fail);
      },
    });
  }

  snapshot(): SessionSnapshot {
    return {
      actor: this.actor.name,
      state: this.state,
      seq: this.seq,
      epoch: this.epoch,
      meta: this.meta.snapshot(),
    };
  }

  /**
   * Writes a snapshot of the current state, then purges the log up to it.
   * Resolves with the snapshot's seq. One at a time per session.
   *
   * The snapshot is written only once its seq is released (acknowledged by
   * the standby, or logged when there is none). A successor starts from at
   * least every released seq, so such a snapshot is part of every later
   * epoch's history; one taken by a primary already replaced (it does not
   * know yet) at a seq nobody acknowledged would put commits its successor
   * never made back into the session.
   */
  snapshotNow(): Promise<number> {
    this.snapshotting ??= (async () => {
      try {
        const snap = this.snapshot(); // immer state is immutable: no copy needed
        this.sinceSnapshot = 0;
        this.bytesSinceSnapshot = 0;
        await this.released(snap.seq);
        await this.log.flush();
        // Fenced meanwhile: what we hold is not the session's history any more.
        if (this.fenced || this.standbyAcked < snap.seq) return snap.seq;
        if (await this.saveSnapshot(snap)) await this.log.purgeUpTo(snap.seq);
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

  /**
   * Called by the log once a batch is stored. Durable-mode replies wait for
   * this ack; the standby drops the frames it kept for a promotion up to it.
   */
  onLogged(seq: number): void {
    if (this.fenced) return;
    this.nc.publish(subjects.ack(this.sid), encodeAck(AckSource.log, this.epoch, seq));
    if (!this.standbyHost) {
      this.nc.publish(subjects.ack(this.sid), encodeAck(AckSource.standby, this.epoch, seq));
      this.acked(seq);
    }
  }

  /**
   * Starts taking inputs. Timers and jobs recorded before (a restored or
   * promoted session) are re-armed and re-run now: a timer whose time has
   * passed fires at once.
   */
  serve(): void {
    this.acks = this.nc.subscribe(subjects.ack(this.sid), {
      callback: (_err, msg) => this.onAck(msg.data),
    });
    for (const [key, timer] of this.meta.timers) this.arm(key, timer);
    for (const [id, job] of this.meta.jobs) this.dispatch(id, job);
    if (this.actor.datagram) this.receiveDatagrams(this.actor.datagram);
    this.resumeInputs();
  }

  /** Only the primary takes the session's datagrams: the subscriber swap on promotion. */
  private receiveDatagrams(handle: NonNullable<ActorDefinition['datagram']>): void {
    const out = subjects.datagramOut(this.sid);
    this.datagrams = this.nc.subscribe(subjects.datagramIn(this.sid), {
      callback: (_err, msg) => {
        try {
          const d = decodeDatagram(msg.data);
          handle(this.state, d.data, {
            sid: this.sid,
            from: d.from,
            forward: (data, to = '') => this.nc.publish(out, encodeDatagram(d.from, to, data)),
          });
        } catch (err) {
          this.onError(new FtmError(`${this.sid}: datagram dropped`, { cause: err }));
        }
      },
    });
  }

  /** Subscribes to the session's inputs (again, after {@link stopInputs}). */
  resumeInputs(): void {
    if (this.fenced || this.inputs) return;
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

  /** Handles one input frame; exposed so that a promoted replica can hand over its inputs. */
  onInput(bytes: Uint8Array): void {
    if (this.fenced) return;
    let frame;
    try {
      frame = decodeFrame(bytes);
    } catch (err) {
      return this.onError(err as FtmError);
    }
    if (frame.kind !== FrameKind.input) return;
    const seen = this.meta.dedup.get(frame.requestId);
    if (seen) {
      // Encoded only here, on the rare repeat, not on every commit.
      let flags = seen.flags | CommitFlag.duplicate;
      const held =
        this.flags === ConsistencyCode.durable
          ? Math.min(this.standbyAcked, this.log.loggedSeq)
          : this.standbyAcked;
      if (seen.seq <= held) flags |= CommitFlag.released;
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
    const check = this.actor.messages?.[frame.type];
    let verdict: true | string;
    try {
      verdict = check ? check(payload) : true;
    } catch (err) {
      verdict = String((err as Error)?.message ?? err);
    }
    if (verdict !== true) {
      return this.refuse(
        frame.requestId,
        new InvalidMessageError(`${this.actor.name}.${frame.type}: ${verdict}`),
      );
    }
    this.commit(frame.requestId, frame.type, payload);
  }

  /**
   * Runs one transaction and publishes it. `requestId` is empty for messages
   * no client sent (timers, worker results): they commit without a reply.
   * `done` are effects the message itself settles (the timer that fired, the
   * job that answered); they are recorded before the handler's own.
   */
  private commit(
    requestId: string,
    type: string,
    payload: unknown,
    done: readonly Effect[] = [],
  ): void {
    try {
      const t = this.runner.run(this.state, type, payload, this.seq + 1);
      const effects = done.length ? [...done, ...t.effects] : t.effects;
      const reply = requestId ? this.codec.encode(t.reply) : empty;
      const changes = encodeChanges(this.codec, t.patches, effects);
      this.state = t.state;
      this.seq += 1;
      let flags = requestId ? this.flags | CommitFlag.hasReply : this.flags;
      if (effects.length) flags |= CommitFlag.effects;
      const commit = encodeCommit(flags, this.epoch, this.seq, requestId, reply, changes);
      this.nc.publish(this.outSubject, commit);
      if (requestId && this.onNextReply) {
        this.onNextReply(preciseNow());
        this.onNextReply = undefined;
      }
      this.sent(commit);
      for (const e of t.events) {
        const payload = e.payload === undefined ? empty : this.codec.encode(e.payload);
        this.nc.publish(
          subjects.events(this.sid),
          encodeEvent(this.flags, this.epoch, this.seq, e.event, payload),
        );
      }
      this.log.append(commit);
      if (this.flags === ConsistencyCode.durable || !this.standbyHost) this.flushSoon();
      this.bytesSinceSnapshot += commit.length;
      if (
        ++this.sinceSnapshot >= this.snapshotEvery ||
        this.bytesSinceSnapshot >= this.snapshotEveryBytes
      ) {
        this.snapshotNow().catch((err: unknown) =>
          this.onError(new FtmError(`snapshot of ${this.sid} failed`, { cause: err })),
        );
      }
      const remembered = requestId
        ? { flags: flags & ~CommitFlag.effects, seq: this.seq, reply }
        : undefined;
      this.meta.record(requestId, remembered, effects);
      if (effects.length) this.start(effects);
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
    if (this.fenced) return;
    this.nc.publish(
      this.outSubject,
      encodeRefusal(this.epoch, this.seq, requestId, this.codec.encode(errorToWire(e))),
    );
  }

  /** Starts what a commit recorded: arms and disarms timers, runs worker jobs. */
  private start(effects: readonly Effect[]): void {
    for (const e of effects) {
      if (e.op === 'timer') this.arm(e.key, e);
      else if (e.op === 'cancel') this.disarm(e.key);
      else if (e.op === 'job') this.dispatch(e.id, e);
    }
  }

  private arm(key: string, timer: Timer): void {
    this.disarm(key);
    const fire = () => {
      // Node may fire a millisecond early; a timer never runs before its time.
      const left = timer.at - this.now();
      if (left > 0) return void this.armed.set(key, setTimeout(fire, left));
      this.armed.delete(key);
      if (this.inputs) this.commit('', timer.type, timer.payload, [{ op: 'cancel', key }]);
    };
    this.armed.set(key, setTimeout(fire, Math.max(0, timer.at - this.now())));
  }

  private disarm(key: string): void {
    const handle = this.armed.get(key);
    if (handle === undefined) return;
    clearTimeout(handle);
    this.armed.delete(key);
  }

  /** Starts a committed worker job; its result commits as a message of its own. */
  private dispatch(id: string, job: Job): void {
    if (!this.workers) {
      return this.onError(
        new FtmError(`actor ${this.actor.name} has no workers option: job ${job.task} not run`),
      );
    }
    const done: Effect[] = [{ op: 'done', id }];
    this.workers.run(job.task, job.input).then(
      (result) => this.inputs && this.commit('', job.resultType, { result }, done),
      (err: unknown) =>
        this.inputs && this.commit('', job.resultType, { error: (err as Error).message }, done),
    );
  }

  private sent(frame: Uint8Array): void {
    this.unacked.push({ seq: this.seq, frame });
    // Beyond this the standby fills the gap from the log instead.
    if (this.unacked.length > 4096) this.unacked.shift();
    this.lastSentAt = this.now();
    this.retransmitBackoff = 1;
    this.onWork?.();
  }

  /** Commits the standby has not acknowledged yet (the host's timer keeps running for them). */
  get hasUnacked(): boolean {
    return this.unacked.length > 0;
  }

  private onAck(bytes: Uint8Array): void {
    const f = decodeFrame(bytes);
    if (f.kind !== FrameKind.ack) return;
    // Someone acknowledges a newer epoch: another copy was promoted. Stop at once.
    if (f.epoch > this.epoch) return this.fence(f.epoch);
    if (f.source !== AckSource.standby || f.epoch !== this.epoch) return;
    this.acked(f.seq);
  }

  private acked(seq: number): void {
    if (seq <= this.standbyAcked) return;
    this.standbyAcked = seq;
    let n = 0;
    while (n < this.unacked.length && this.unacked[n]!.seq <= seq) n++;
    if (n) this.unacked.splice(0, n);
    if (this.ackWaiters.length) {
      const ready = this.ackWaiters.filter((w) => w.seq <= seq);
      this.ackWaiters = this.ackWaiters.filter((w) => w.seq > seq);
      for (const w of ready) w.resolve();
    }
  }

  /** Resolves once the standby acknowledged everything committed so far. */
  standbyCaughtUp(): Promise<void> {
    return this.released(this.seq);
  }

  /** Resolves once `seq` is released (acknowledged), or when this copy closes. */
  private released(seq: number): Promise<void> {
    if (this.standbyAcked >= seq || !this.acks) return Promise.resolve();
    return new Promise((resolve) => this.ackWaiters.push({ seq, resolve }));
  }

  /** Stops taking inputs (a planned handoff); the standby keeps buffering them. */
  stopInputs(): void {
    this.inputs?.unsubscribe();
    this.inputs = undefined;
  }

  /**
   * A newer epoch exists: this copy stops serving and never writes again,
   * not even the log frames it still holds.
   */
  fence(epoch: number): void {
    if (this.fenced) return;
    this.fenced = true;
    this.log.discard();
    this.close();
    this.onFenced?.(epoch);
  }

  get isFenced(): boolean {
    return this.fenced;
  }

  /**
   * Sends the unacknowledged commits again when the standby stayed silent
   * for a while after the last commit: a lost last frame has no later frame
   * to reveal the gap. Backs off while the standby stays silent. The host
   * calls this on its sweep; returns how many frames went out.
   */
  retransmit(now: number): number {
    if (!this.unacked.length || !this.inputs) return 0;
    if (now - this.lastSentAt < this.retransmitAfterMs * this.retransmitBackoff) return 0;
    this.lastSentAt = now;
    this.retransmitBackoff = Math.min(this.retransmitBackoff * 2, 64);
    const frames = this.unacked.slice(0, 256);
    for (const { frame } of frames) this.nc.publish(this.outSubject, frame);
    return frames.length;
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

  close(): void {
    this.inputs?.unsubscribe();
    this.control?.unsubscribe();
    this.acks?.unsubscribe();
    this.datagrams?.unsubscribe();
    this.datagrams = undefined;
    for (const w of this.ackWaiters) w.resolve();
    this.ackWaiters = [];
    this.inputs = undefined;
    this.control = undefined;
    this.acks = undefined;
    for (const handle of this.armed.values()) clearTimeout(handle);
    this.armed.clear();
  }
}
