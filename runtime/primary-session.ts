import type { Span } from '@opentelemetry/api';
import { reservedTypes, type ActorDefinition } from './actor.ts';
import { CommitTraces } from './commit-traces.ts';
import type { ValueCodec } from './codec.ts';
import { errorToWire, FtmError, HandlerError, InvalidMessageError } from './errors.ts';
import { subjects } from './subjects.ts';
import type { SessionLog } from './durable-log.ts';
import { TransitionRunner } from './transition.ts';
import { SessionMeta, encodeChanges, type Effect, type MetaSnapshot } from './session-meta.ts';
import type { WorkerPool } from './worker-pool.ts';
import { SessionEffects } from './session-effects.ts';
import type { PrimaryOptions, SessionDeps, SessionSnapshot } from './session-types.ts';
import { StandbyAcks } from './standby-acks.ts';
import { serveSessionControl } from './session-control.ts';
import type { Clock, Transport, TransportSubscription } from './ports.ts';
import {
  Attr,
  SpanKind,
  SpanName,
  SpanStatusCode,
  traceparentOf,
  type SessionTelemetry,
} from './telemetry.ts';
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

const empty = new Uint8Array(0);

/**
 * Where a primary is in its life: created (not taking inputs yet), serving,
 * paused for a hand-off (inputs stopped, timers and worker results kept for
 * later), stopped (fenced or closed: it publishes nothing more).
 */
type Phase = 'created' | 'serving' | 'paused' | 'stopped';

/** Refusals a primary remembers (a client repeats a request within seconds). */
const MAX_REMEMBERED_REFUSALS = 1_000;

/**
 * The live copy of a session: one writer, one transaction at a time. Each
 * committed transaction gets the next seq (gap-free per epoch) and leaves as
 * one commit frame on `ftm.s.<sid>.out` carrying the reply and the patches,
 * stamped with the epoch and the standby's term (PROTOCOL.md).
 */
export class PrimarySession {
  readonly role = 'primary' as const;
  state: object;
  seq: number;
  readonly epoch: number;
  /** The record's term for the standby named now ({@link setStandby}). */
  term = 0;
  /**
   * The host holding the hot copy; empty while the record names none. Then
   * the log stands in: every commit is flushed at once and the log's ack
   * releases it (commits carry the `unprotected` flag).
   */
  standbyHost = '';
  /** Dedup table, timers and jobs: replicated with every commit. */
  readonly meta: SessionMeta;
  /** Called once a newer epoch shows in an ack: the host checks the record and fences. */
  onNewerEpoch: ((epoch: number) => void) | undefined;
  /** Called after each commit: the host's flusher then flushes the log and retransmits. */
  onWork: (() => void) | undefined;
  /** Called with the time of the next reply sent, then cleared: failover timelines use it. */
  onNextReply: ((at: number) => void) | undefined;
  /** Called when the actor asked to end the session (`ctx.close()`): the host closes it. */
  onCloseRequested: (() => void) | undefined;

  private phase: Phase = 'created';
  private readonly runner: TransitionRunner;
  private readonly flags: number;
  private readonly outSubject: string;
  private readonly transport: Transport;
  private readonly codec: ValueCodec;
  private readonly clock: Clock;
  private readonly onError: (err: FtmError) => void;
  private readonly dropped: (subject: string, err: unknown) => void;
  private readonly suspended: () => boolean;
  private readonly telemetry: SessionTelemetry;
  /** Sampled commits waiting for their standby and log acks (tracing only). */
  private readonly traces: CommitTraces;
  /** Inputs that came while the host was suspended, in order: they run once it goes on. */
  private held: Uint8Array[] = [];
  /** Recent refusals by request id, oldest first: a repeat is answered, not run again. */
  private readonly refusals = new Map<string, Uint8Array>();
  private inputs: TransportSubscription | undefined;
  private control: TransportSubscription | undefined;
  private ackSub: TransportSubscription | undefined;
  private datagrams: TransportSubscription | undefined;
  private flushScheduled = false;
  private sinceSnapshot = 0;
  private bytesSinceSnapshot = 0;
  private snapshotting: Promise<number> | undefined;
  private readonly effects: SessionEffects;
  private readonly acks: StandbyAcks;
  /** Timers and worker results that came due while paused: they run on resume. */
  private deferred: (() => void)[] = [];
  private readonly snapshotEvery: number;
  private readonly snapshotEveryBytes: number;
  /** Callers waiting for a seq to be released or acknowledged. */
  private waiters: { ready: () => boolean; resolve: () => void }[] = [];

  constructor(
    deps: SessionDeps,
    readonly actor: ActorDefinition,
    readonly sid: string,
    /** A promoted replica hands its meta over as it is: no copy on the failover path. */
    init: { state: object; seq: number; epoch: number; meta: MetaSnapshot | SessionMeta },
    readonly log: SessionLog,
    /**
     * Stores a snapshot of a released seq; resolves true when the log up to
     * it may be purged.
     */
    private readonly saveSnapshot: (snap: SessionSnapshot) => Promise<boolean>,
    private readonly workers: WorkerPool | undefined,
    options: PrimaryOptions = {},
  ) {
    this.transport = deps.transport;
    this.codec = deps.codec;
    this.clock = deps.clock;
    this.onError = deps.onError;
    this.dropped = deps.dropped;
    this.suspended = deps.suspended;
    this.telemetry = deps.telemetry;
    this.traces = new CommitTraces(deps.telemetry.tracing, sid);
    this.state = init.state;
    this.seq = init.seq;
    this.epoch = init.epoch;
    this.meta = init.meta instanceof SessionMeta ? init.meta : new SessionMeta(init.meta);
    this.snapshotEvery = options.snapshotEvery ?? 1000;
    this.snapshotEveryBytes = options.snapshotEveryBytes ?? 4 * 1024 * 1024;
    this.acks = new StandbyAcks(init.seq, options.retransmitAfterMs ?? 20);
    this.runner = new TransitionRunner(actor, sid, () => this.clock.now());
    this.flags = ConsistencyCode[actor.consistency];
    this.outSubject = subjects.output(sid);
    this.effects = new SessionEffects({
      sid,
      actorName: actor.name,
      clock: this.clock,
      meta: this.meta,
      workers,
      onError: this.onError,
      commit: (type, payload, done) => this.commit('', type, payload, done),
      whenServing: (run) => this.whenServing(run),
      requestClose: () => this.onCloseRequested?.(),
    });
  }

  /** Highest seq the named standby acknowledged in this epoch. */
  get standbyAcked(): number {
    return this.acks.acked;
  }

  /** When the oldest commit the named standby has not acknowledged went out; undefined: none waits. */
  get oldestUnackedAt(): number | undefined {
    return this.acks.oldestSentAt;
  }

  /** Serves control requests (snapshot, flush); needed before a standby attaches. */
  listen(): void {
    this.control = serveSessionControl(this.transport, this.codec, this.sid, this.epoch, {
      snapshot: () => this.snapshot(),
      logged: () => this.log.loggedSeq,
      snapshotNow: () => this.snapshotNow(),
      flush: () => this.log.flush(),
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
   * The snapshot is written only once its seq is released. A successor
   * starts from at least every released seq, so such a snapshot is part of
   * every later epoch's history; one taken by a primary already replaced (it
   * does not know yet) at a seq nobody acknowledged would put commits its
   * successor never made back into the session.
   */
  snapshotNow(): Promise<number> {
    this.snapshotting ??= (async () => {
      try {
        const snap = this.snapshot(); // immer state is immutable: no copy needed
        this.sinceSnapshot = 0;
        this.bytesSinceSnapshot = 0;
        await this.released(snap.seq);
        await this.log.flush();
        // Stopped meanwhile: what we hold may not be the session's history any more.
        if (this.phase === 'stopped' || !this.isReleased(snap.seq)) return snap.seq;
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
   * Called by the log once a batch is stored: the log's ack releases
   * standby-mode replies, and durable ones with the standby's.
   */
  onLogged(seq: number): void {
    if (this.phase === 'stopped') return;
    this.transport.publish(
      subjects.ack(this.sid),
      encodeAck(AckSource.log, { epoch: this.epoch, term: this.term, seq }),
    );
    if (this.traces.size) this.traces.logged(seq, this.clock.now());
    this.wake();
  }

  /**
   * Starts taking inputs. Timers and jobs recorded before (a restored or
   * promoted session) are re-armed and re-run now: a timer whose time has
   * passed fires at once.
   */
  serve(): void {
    if (this.phase !== 'created') return;
    this.ackSub = this.transport.subscribe(subjects.ack(this.sid), (msg) => this.onAck(msg.data));
    this.effects.resume();
    if (this.actor.datagram) this.receiveDatagrams(this.actor.datagram);
    this.phase = 'paused';
    this.resume();
  }

  get isServing(): boolean {
    return this.phase === 'serving';
  }

  get isStopped(): boolean {
    return this.phase === 'stopped';
  }

  /**
   * The record now names `standby` at `term` (empty: none). Called right
   * after the compare-and-swap that wrote it: later commits carry the term,
   * and only that standby's acks count.
   */
  setStandby(standby: string, term: number): void {
    this.standbyHost = standby;
    this.term = term;
    if (!standby) {
      // Unprotected: the log releases from now on; nothing waits for a standby.
      this.acks.clear();
      this.traces.standbyGone();
      this.flushSoon();
    }
  }

  /** Only the primary takes the session's datagrams: the subscriber swap on promotion. */
  private receiveDatagrams(handle: NonNullable<ActorDefinition['datagram']>): void {
    const out = subjects.datagramOut(this.sid);
    this.datagrams = this.transport.subscribe(subjects.datagramIn(this.sid), (msg) => {
      try {
        const d = decodeDatagram(msg.data);
        handle(this.state, d.data, {
          sid: this.sid,
          from: d.from,
          forward: (data, to = '') => this.transport.publish(out, encodeDatagram(d.from, to, data)),
        });
      } catch (err) {
        this.dropped(subjects.datagramIn(this.sid), err);
      }
    });
  }

  /** Subscribes to the session's inputs again after {@link pause}, and runs what waited. */
  resume(): void {
    if (this.phase !== 'paused') return;
    this.phase = 'serving';
    this.inputs = this.transport.subscribe(subjects.input(this.sid), (msg) =>
      this.onInput(msg.data),
    );
    const waiting = this.deferred;
    this.deferred = [];
    for (const run of waiting) run();
  }

  /**
   * Stops taking inputs (a planned hand-off); the standby keeps buffering
   * them. Timers and worker results that come due meanwhile wait for
   * {@link resume}; if the hand-off succeeds, the new primary runs them from
   * the replicated meta instead.
   */
  pause(): void {
    if (this.phase !== 'serving') return;
    this.phase = 'paused';
    this.inputs?.unsubscribe();
    this.inputs = undefined;
  }

  /**
   * Handles one input frame; exposed so that a promoted replica can hand
   * over its inputs. The frame is untrusted: a malformed one throws
   * (the transport counts it), a bad payload is refused to its sender.
   */
  onInput(bytes: Uint8Array): void {
    if (this.phase !== 'serving') return;
    if (this.suspended()) {
      if (this.held.length < 65_536) this.held.push(bytes.slice());
      return;
    }
    const frame = decodeFrame(bytes);
    if (frame.kind !== FrameKind.input) return;
    const seen = this.meta.dedup.get(frame.requestId);
    if (seen) {
      // Encoded only here, on the rare repeat, not on every commit.
      let flags = seen.flags | CommitFlag.duplicate;
      if (this.isReleased(seen.seq)) flags |= CommitFlag.released;
      this.transport.publish(
        this.outSubject,
        encodeCommit(
          flags,
          { epoch: this.epoch, term: this.term, seq: seen.seq },
          frame.requestId,
          seen.reply,
          empty,
        ),
      );
      return;
    }
    const refused = this.refusals.get(frame.requestId);
    if (refused) return this.publishRefusal(frame.requestId, refused);
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
    this.commit(frame.requestId, frame.type, payload, undefined, frame.sender, frame.traceparent);
  }

  /**
   * Commits the session's last transaction (`onClose`) while serving, and
   * resolves once it is released (its events reach the clients) or this
   * copy stops. Then the host closes the session.
   */
  commitLast(reason: 'closed' | 'requested'): Promise<void> {
    // A suspended host publishes nothing until it re-read its record: no last word then.
    if (this.phase !== 'serving' || this.suspended() || !this.actor.onClose)
      return Promise.resolve();
    this.commit('', reservedTypes.close, { reason });
    return this.released(this.seq);
  }

  /**
   * Runs one transaction and publishes it. `requestId` is empty for messages
   * no client sent (timers, worker results): they commit without a reply.
   * `done` are effects the message itself settles (the timer that fired, the
   * job that answered); they are recorded before the handler's own.
   * `traceparent` is the input's trace context: when sampled, the
   * transaction is a span and its commit carries the span's context.
   */
  private commit(
    requestId: string,
    type: string,
    payload: unknown,
    done: readonly Effect[] = [],
    sender = '',
    traceparent = '',
  ): void {
    const span = traceparent ? this.startTransaction(traceparent, requestId, type) : undefined;
    try {
      const t = this.runner.run(this.state, type, payload, this.seq + 1, sender);
      const effects = done.length ? [...done, ...t.effects] : t.effects;
      const reply = requestId ? this.codec.encode(t.reply) : empty;
      const changes = encodeChanges(this.codec, t.patches, effects);
      this.state = t.state;
      this.seq += 1;
      let flags = requestId ? this.flags | CommitFlag.hasReply : this.flags;
      if (effects.length) flags |= CommitFlag.effects;
      if (!this.standbyHost) flags |= CommitFlag.unprotected;
      const at = { epoch: this.epoch, term: this.term, seq: this.seq };
      const trace = span ? traceparentOf(span) : '';
      const commit = encodeCommit(flags, at, requestId, reply, changes, trace);
      this.transport.publish(this.outSubject, commit);
      this.telemetry.counters.commits++;
      this.telemetry.counters.patchBytes += changes.length;
      if (span) this.endTransaction(span, at);
      if (requestId && this.onNextReply) {
        this.onNextReply(this.clock.now());
        this.onNextReply = undefined;
      }
      this.acks.sent(this.seq, commit, this.clock.now(), this.standbyHost !== '');
      this.onWork?.();
      const eventFlags = this.flags | (flags & CommitFlag.unprotected);
      for (const e of t.events) {
        const payload = e.payload === undefined ? empty : this.codec.encode(e.payload);
        this.transport.publish(
          subjects.events(this.sid),
          encodeEvent(eventFlags, at, e.event, payload, e.to),
        );
      }
      this.log.append(commit);
      if (this.flags === ConsistencyCode.durable || !this.standbyHost) this.flushSoon();
      const remembered = requestId
        ? { flags: flags & ~(CommitFlag.effects | CommitFlag.unprotected), seq: this.seq, reply }
        : undefined;
      this.meta.record(requestId, remembered, effects);
      if (effects.length) this.effects.start(effects);
      // After the meta: a snapshot holds the commit's dedup entry and timers with its state.
      this.bytesSinceSnapshot += commit.length;
      if (
        ++this.sinceSnapshot >= this.snapshotEvery ||
        this.bytesSinceSnapshot >= this.snapshotEveryBytes
      ) {
        this.snapshotNow().catch((err: unknown) =>
          this.onError(new FtmError(`snapshot of ${this.sid} failed`, { cause: err })),
        );
      }
    } catch (err) {
      const e =
        err instanceof FtmError
          ? err
          : new HandlerError(String((err as Error)?.message ?? err), { cause: err });
      this.onError(e);
      if (requestId) this.refuse(requestId, e);
      if (span?.isRecording())
        this.telemetry.tracing.safely(() => {
          span.recordException(e);
          span.setStatus({ code: SpanStatusCode.ERROR }).end(this.clock.now());
        });
    }
  }

  /** A span for a transaction whose input came in a sampled trace context; undefined otherwise. */
  private startTransaction(traceparent: string, requestId: string, type: string): Span | undefined {
    const { tracing } = this.telemetry;
    const link = tracing.safely(() => this.telemetry.failoverLink(this.sid));
    return tracing.childOf(
      traceparent,
      SpanName.transaction,
      SpanKind.CONSUMER,
      {
        [Attr.session]: this.sid,
        [Attr.actor]: this.actor.name,
        [Attr.type]: type,
        [Attr.requestId]: requestId,
        [Attr.epoch]: this.epoch,
      },
      // Served while this primary's failover is still open: the request's trace points to it.
      link ? [{ context: link }] : undefined,
    );
  }

  /** The traced commit at `at` went out: its span ends, its acks are waited for. */
  private endTransaction(span: Span, at: { term: number; seq: number }): void {
    const now = this.clock.now();
    this.telemetry.tracing.safely(() => {
      span.setAttribute(Attr.seq, at.seq).setAttribute(Attr.term, at.term).end(now);
      this.traces.committed(span, at.seq, now, this.standbyHost !== '');
    });
  }

  /**
   * Refuses a request: the client gets the typed error. The refusal is
   * remembered here (not replicated: nothing was committed), so a repeat of
   * the id is answered with it instead of running the handler again.
   */
  private refuse(requestId: string, e: FtmError): void {
    if (this.phase === 'stopped') return;
    const error = this.codec.encode(errorToWire(e));
    this.refusals.set(requestId, error);
    if (this.refusals.size > MAX_REMEMBERED_REFUSALS) {
      const oldest = this.refusals.keys().next().value;
      if (oldest !== undefined) this.refusals.delete(oldest);
    }
    this.publishRefusal(requestId, error);
  }

  private publishRefusal(requestId: string, error: Uint8Array): void {
    this.transport.publish(
      this.outSubject,
      encodeRefusal({ epoch: this.epoch, term: this.term, seq: this.seq }, requestId, error),
    );
  }

  /** Runs `commit` now while serving, later while paused or suspended, never once stopped. */
  private whenServing(run: () => void): void {
    if (this.phase === 'serving' && !this.suspended()) run();
    else if (this.phase !== 'stopped') this.deferred.push(run);
  }

  /** The host's pause check cleared: run what waited, in order. */
  goOn(): void {
    if (this.phase !== 'serving') return;
    const inputs = this.held;
    const waiting = this.deferred;
    this.held = [];
    this.deferred = [];
    for (const run of waiting) run();
    for (const bytes of inputs) this.onInput(bytes);
  }

  /** Commits the standby has not acknowledged yet (the host's flusher keeps running for them). */
  get hasUnacked(): boolean {
    return this.acks.pending;
  }

  /** An ack from the wire: untrusted; a malformed one throws (the transport counts it). */
  private onAck(bytes: Uint8Array): void {
    const f = decodeFrame(bytes);
    if (f.kind !== FrameKind.ack) return;
    // Someone acknowledges a newer epoch: maybe another copy was promoted.
    // The host checks the record before this copy stops (an ack alone is no proof).
    if (f.epoch > this.epoch) return this.onNewerEpoch?.(f.epoch);
    if (f.source !== AckSource.standby || f.epoch !== this.epoch || f.term !== this.term) return;
    if (this.standbyHost && this.acks.ack(f.seq, this.seq)) {
      if (this.traces.size) this.traces.acked(f.seq, this.clock.now());
      this.wake();
    }
  }

  /**
   * Whether `seq` is released: every successor of this copy will hold it.
   * Standby mode: the named standby acknowledged it, or the log holds it
   * while no standby is named; durable: the log holds it, and the standby
   * too while one is named. (Conservative: a commit logged under an earlier
   * standby counts only once the new one acknowledges it.)
   */
  isReleased(seq: number): boolean {
    const logged = this.log.loggedSeq >= seq;
    const acked = this.standbyAcked >= seq;
    if (this.flags === ConsistencyCode.durable) return logged && (acked || !this.standbyHost);
    return acked || (logged && !this.standbyHost);
  }

  private wake(): void {
    if (!this.waiters.length) return;
    const ready = this.waiters.filter((w) => w.ready());
    if (!ready.length) return;
    this.waiters = this.waiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve();
  }

  private until(ready: () => boolean): Promise<void> {
    if (ready() || this.phase === 'stopped') return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ ready, resolve }));
  }

  /** Resolves once the standby acknowledged everything committed so far (or this copy stopped). */
  standbyCaughtUp(): Promise<void> {
    const seq = this.seq;
    return this.until(() => this.standbyAcked >= seq);
  }

  /** Resolves once `seq` is released, or when this copy stops. */
  released(seq: number): Promise<void> {
    return this.until(() => this.isReleased(seq));
  }

  /**
   * This copy stops for good: a newer epoch exists, the log refused it, or
   * its host was declared dead. It never publishes or writes again, not even
   * the log frames it still holds.
   */
  fence(): void {
    this.log.discard();
    this.close();
  }

  /**
   * Sends the unacknowledged commits again when the standby stayed silent
   * for a while after the last commit: a lost last frame has no later frame
   * to reveal the gap. Backs off while the standby stays silent. The host
   * calls this on its sweep; returns how many frames went out.
   */
  retransmit(now: number): number {
    if (this.phase !== 'serving' || this.suspended()) return 0;
    const frames = this.acks.due(now);
    for (const frame of frames) this.transport.publish(this.outSubject, frame);
    return frames.length;
  }

  /** One log flush per burst of commits (durable mode, or no standby). */
  private flushSoon(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    this.clock.setTimeout(() => {
      this.flushScheduled = false;
      if (this.phase !== 'stopped') void this.log.flush();
    }, 0);
  }

  /** Stops serving and listening. The log keeps what it holds (close a host: flush first). */
  close(): void {
    this.phase = 'stopped';
    this.inputs?.unsubscribe();
    this.control?.unsubscribe();
    this.ackSub?.unsubscribe();
    this.datagrams?.unsubscribe();
    this.inputs = this.control = this.ackSub = this.datagrams = undefined;
    for (const w of this.waiters) w.resolve();
    this.waiters = [];
    this.deferred = [];
    this.held = [];
    this.traces.clear();
    this.effects.close();
  }
}
