import type { ValueCodec } from './codec.ts';
import type { Clock, Random, Transport, TransportSubscription } from './ports.ts';
import { EpochGate, type EpochAuthority } from './epoch-gate.ts';
import { ClosedError, RequestTimeoutError, errorFromWire, type WireError } from './errors.ts';
import { subjects } from './subjects.ts';
import { Attr, SpanName, Tracing, contextOf, parseTraceparent, isSampled } from './telemetry.ts';
import {
  AckSource,
  CommitFlag,
  ConsistencyCode,
  FrameKind,
  type CommitFrame,
  consistencyOf,
  decodeDatagram,
  decodeFrame,
  encodeDatagram,
  encodeInput,
} from './wire.ts';

/** Where a commit (or event) sits, and how it may be released. */
type Stamp = {
  seq: number;
  epoch: number;
  term: number;
  mode: number;
  /** Committed while no standby was named: only the log releases it. */
  unprotected: boolean;
};

/** An event held until its transaction may be released, like a reply. */
type HeldEvent = Stamp & { event: string; payload: Uint8Array; to: string[] | undefined };

/** A commit of the session, released: what a mirror of its state applies. */
export type ReleasedCommit = { seq: number; epoch: number; flags: number; changes: Uint8Array };

/** Listens to every released commit of a session, in seq order (see {@link SessionClient.watchCommits}). */
export type CommitWatcher = {
  commit: (c: ReleasedCommit) => void;
  /** A new epoch began while commits of the old one were held: the watcher may resync. */
  newEpoch: () => void;
};

type HeldCommit = Stamp & { flags: number; changes: Uint8Array };

type Pending = {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  deadline: number;
  /** The encoded input, sent again when the session's epoch changes before the reply is released. */
  frame: Uint8Array;
  /** Set once the commit arrived; the reply waits here until its release condition holds. */
  held?: Stamp & { released: boolean; reply: Uint8Array };
  /** The request's trace context, when sampled: its release is a span of that trace. */
  trace?: string;
  /** When the commit arrived (traced requests only). */
  heldAt?: number;
  /** The epoch whose arrival made this client send it again (traced requests only). */
  resentIn?: number;
};

/** Told of a released event; `to` lists its clients (absent: every client). */
type EventListener = (event: string, payload: unknown, to: string[] | undefined) => void;

/** What a {@link SessionClient} needs: the transport, the codec, time and randomness. */
export type SessionClientDeps = {
  transport: Transport;
  codec: ValueCodec;
  clock: Clock;
  random: Random;
  /** Where new epochs are checked (the ownership record); without it every epoch is believed. */
  epochs?: EpochAuthority;
  /** Counts a frame dropped after it waited for its epoch (malformed, or a forged epoch). */
  onDropped?: (subject: string, err: unknown) => void;
  /** Told of every reply released, with where it was committed: tests and the simulator check it. */
  onReleased?: (requestId: string, at: { epoch: number; term: number; seq: number }) => void;
  /** Where release spans of traced requests go (default: a tracer of the global API, errors on stderr). */
  tracing?: Tracing;
};

/**
 * Sends requests to one session and releases each reply by the actor's
 * consistency mode (PROTOCOL.md, "Replication and release"): `async` at
 * once; `standby` on an ack of its seq from the standby of its epoch and
 * term, or from the log; `durable` on the log's ack, and the standby's too
 * unless it was committed unprotected. The gateway uses the same rule.
 */
export class SessionClient {
  private readonly pending = new Map<string, Pending>();
  /**
   * Ids of held replies in arrival order. A session's commits arrive in seq
   * order, so an ack releases a prefix of this queue: no scan of every request.
   */
  private readonly held: string[] = [];
  private readonly subs: TransportSubscription[];
  private readonly prefix: string;
  private counter = 0;
  /** The newest standby ack (by epoch, then term); an older term's never releases a newer commit. */
  private standbyAck = { epoch: 0, term: 0, seq: 0 };
  private logAck = { epoch: 0, term: 0, seq: 0 };
  /** The newest epoch seen; output of older ones is dropped. */
  private epoch = 0;
  /** How many times a new epoch made this client send its unreleased requests again. */
  resends = 0;
  private readonly eventListeners: EventListener[] = [];
  private readonly heldEvents: HeldEvent[] = [];
  private readonly commitWatchers: CommitWatcher[] = [];
  private heldCommits: HeldCommit[] = [];
  private sweep: unknown;
  private closed = false;
  private readonly transport: Transport;
  /** The value codec of the session's frames (a mirror decodes commits with it). */
  readonly codec: ValueCodec;
  readonly clock: Clock;
  private readonly gate: EpochGate;
  private readonly onReleased: SessionClientDeps['onReleased'];
  private readonly epochs: EpochAuthority | undefined;
  private readonly tracing: Tracing;

  constructor(
    deps: SessionClientDeps,
    readonly sid: string,
    private readonly defaultTimeoutMs = 5_000,
  ) {
    this.transport = deps.transport;
    this.codec = deps.codec;
    this.clock = deps.clock;
    this.prefix = deps.random.hex(6);
    this.onReleased = deps.onReleased;
    this.epochs = deps.epochs;
    this.tracing =
      deps.tracing ??
      new Tracing((err) => console.error(`[ftmesh client of ${sid}] ${err.name}: ${err.message}`));
    this.gate = new EpochGate(sid, deps.epochs, (err) =>
      deps.onDropped?.(subjects.output(sid), err),
    );
    this.subs = [
      this.transport.subscribe(subjects.output(sid), (m) => this.onOutput(m.data)),
      this.transport.subscribe(subjects.ack(sid), (m) => this.onAck(m.data)),
    ];
  }

  /** Requests whose commit arrived but whose reply is still held for an ack. */
  heldCount(): number {
    let n = 0;
    for (const p of this.pending.values()) if (p.held) n++;
    return n;
  }

  /**
   * Sends `type` with `payload`; resolves with the handler's reply once it may
   * be released, rejects with the typed error the session sent back, or with
   * {@link RequestTimeoutError} (retryable: send again with the same requestId).
   * A sampled W3C `traceparent` travels with the input: the primary's
   * transaction and the standby's apply join that trace, and the wait for
   * the release is a span of it (`ftmesh.release`). One not sampled (or not
   * valid) is not sent.
   */
  request(
    type: string,
    payload?: unknown,
    opts: { requestId?: string; timeoutMs?: number; sender?: string; traceparent?: string } = {},
  ): Promise<unknown> {
    if (this.closed) return Promise.reject(new ClosedError(`client of ${this.sid} is closed`));
    // Before its first frame, the client takes the epoch the record has now: the
    // session's first acks and answers of that epoch are then no "new epoch" that
    // would send this request again (a request whose handler throws would run twice).
    if (this.epoch === 0) this.epoch = this.epochs?.known(this.sid) ?? 0;
    const requestId = opts.requestId ?? `${this.prefix}.${(++this.counter).toString(36)}`;
    const parent = opts.traceparent ? parseTraceparent(opts.traceparent) : undefined;
    const trace = parent && isSampled(parent) ? opts.traceparent : undefined;
    return new Promise((resolve, reject) => {
      const body = payload === undefined ? new Uint8Array(0) : this.codec.encode(payload);
      const frame = encodeInput(requestId, type, body, opts.sender, trace);
      const pending: Pending = {
        resolve,
        reject,
        deadline: this.clock.now() + (opts.timeoutMs ?? this.defaultTimeoutMs),
        frame,
      };
      if (trace) pending.trace = trace;
      this.pending.set(requestId, pending);
      this.armSweep();
      this.transport.publish(subjects.input(this.sid), frame);
    });
  }

  /** Output from the wire: untrusted; a malformed frame throws (the transport counts it). */
  private onOutput(bytes: Uint8Array): void {
    const f = decodeFrame(bytes);
    if (f.kind !== FrameKind.commit && f.kind !== FrameKind.refusal) return;
    if (f.epoch < this.epoch) return; // a fenced primary's late output
    if (f.epoch > this.epoch) {
      if (!this.gate.admit(f.epoch, () => this.onOutput(bytes))) return;
      this.newEpoch(f.epoch, f.requestId);
    }
    if (this.commitWatchers.length && f.kind === FrameKind.commit) this.watchCommit(f);
    const p = this.pending.get(f.requestId);
    if (!p || p.held) return;
    if (f.kind === FrameKind.refusal) {
      this.pending.delete(f.requestId);
      return p.reject(errorFromWire(this.codec.decode(f.error) as WireError));
    }
    p.held = {
      seq: f.seq,
      epoch: f.epoch,
      term: f.term,
      mode: consistencyOf(f.flags),
      unprotected: (f.flags & CommitFlag.unprotected) !== 0,
      released: (f.flags & CommitFlag.released) !== 0,
      reply: f.reply.slice(),
    };
    if (p.trace) p.heldAt = this.clock.now();
    if (!this.release(f.requestId, p)) this.held.push(f.requestId);
  }

  /**
   * Calls `fn` with every event the session's actor emits (`ctx.emit`), in
   * commit order, once its transaction may be released (the same rule as replies).
   */
  onEvent(fn: EventListener): void {
    if (!this.eventListeners.length) {
      this.subs.push(
        this.transport.subscribe(subjects.events(this.sid), (m) => this.onEventFrame(m.data)),
      );
    }
    this.eventListeners.push(fn);
  }

  /** Sends a datagram to the session's primary, as client `from`, to one client or (empty) the others. */
  sendDatagram(data: Uint8Array, from: string, to = ''): void {
    this.transport.publish(subjects.datagramIn(this.sid), encodeDatagram(from, to, data));
  }

  /** Calls `fn` with every datagram the primary forwards to the session's clients. */
  onDatagram(fn: (data: Uint8Array, from: string, to: string) => void): void {
    this.subs.push(
      this.transport.subscribe(subjects.datagramOut(this.sid), (m) => {
        // A malformed datagram throws: the transport drops and counts it, as UDP would drop it.
        const d = decodeDatagram(m.data);
        fn(d.data, d.from, d.to);
      }),
    );
  }

  private onEventFrame(bytes: Uint8Array): void {
    const f = decodeFrame(bytes);
    if (f.kind !== FrameKind.event || f.epoch < this.epoch) return;
    if (f.epoch > this.epoch) {
      if (!this.gate.admit(f.epoch, () => this.onEventFrame(bytes))) return;
      this.newEpoch(f.epoch);
    }
    this.heldEvents.push({
      ...stampOf(f),
      event: f.event,
      payload: f.payload.slice(),
      to: f.to,
    });
    this.releaseEvents();
  }

  private releaseEvents(): void {
    while (this.heldEvents.length) {
      const e = this.heldEvents[0]!;
      if (!this.releasable(e)) break;
      this.heldEvents.shift();
      const payload = e.payload.length ? this.codec.decode(e.payload) : undefined;
      for (const fn of this.eventListeners) fn(e.event, payload, e.to);
    }
  }

  /** An ack from the wire: untrusted; a malformed one throws (the transport counts it). */
  private onAck(bytes: Uint8Array): void {
    const f = decodeFrame(bytes);
    if (f.kind !== FrameKind.ack || f.epoch < this.epoch) return;
    if (f.source !== AckSource.standby && f.source !== AckSource.log) return;
    if (f.epoch > this.epoch) {
      if (!this.gate.admit(f.epoch, () => this.onAck(bytes))) return;
      this.newEpoch(f.epoch);
    }
    if (f.source === AckSource.log) {
      const mark = this.logAck;
      if (f.epoch < mark.epoch || (f.epoch === mark.epoch && f.seq < mark.seq)) return;
      if (f.epoch === mark.epoch && f.seq === mark.seq && f.term <= mark.term) return;
      this.logAck = {
        epoch: f.epoch,
        term: Math.max(f.term, f.epoch === mark.epoch ? mark.term : 0),
        seq: f.seq,
      };
    } else {
      const mark = this.standbyAck;
      const older =
        f.epoch < mark.epoch ||
        (f.epoch === mark.epoch &&
          (f.term < mark.term || (f.term === mark.term && f.seq <= mark.seq)));
      if (older) return;
      this.standbyAck = { epoch: f.epoch, term: f.term, seq: f.seq };
    }
    // Commits arrive in seq order and a later one is released no sooner than
    // an earlier one: the release is a prefix of `held`.
    while (this.held.length) {
      const id = this.held[0]!;
      const p = this.pending.get(id);
      // Gone (timed out) or released: drop it; otherwise stop at the first still held.
      if (p?.held && !this.release(id, p)) break;
      this.held.shift();
    }
    if (this.heldEvents.length) this.releaseEvents();
    if (this.heldCommits.length) this.releaseCommits();
  }

  /**
   * Calls `watcher.commit` with every commit of the session (whoever sent
   * its input) once it may be released, in seq order: a mirror of the
   * session's state (a gateway's client views) applies them. A commit a
   * failover rolled back is never delivered. On a new epoch, held commits
   * of the old one below the new epoch's first seq are part of the new
   * history (the promoted copy held them): they are delivered with that
   * first commit; those at or above it are dropped. A watcher that sees a
   * gap in seqs resyncs (the `$state` request).
   */
  watchCommits(watcher: CommitWatcher): () => void {
    this.commitWatchers.push(watcher);
    return () => {
      const i = this.commitWatchers.indexOf(watcher);
      if (i >= 0) this.commitWatchers.splice(i, 1);
      if (!this.commitWatchers.length) this.heldCommits = [];
    };
  }

  private watchCommit(f: CommitFrame): void {
    if (f.flags & CommitFlag.duplicate) return;
    const stamp = stampOf(f);
    if (this.heldCommits.some((h) => h.epoch < f.epoch)) {
      // The first commit of a new epoch: what the old one held below it is history.
      this.heldCommits = this.heldCommits.filter((h) => h.epoch === f.epoch || h.seq < f.seq);
      for (const h of this.heldCommits) {
        if (h.epoch === f.epoch) continue;
        h.epoch = stamp.epoch;
        h.term = stamp.term;
        h.unprotected = stamp.unprotected;
      }
    }
    this.heldCommits.push({ ...stamp, flags: f.flags, changes: f.patches.slice() });
    this.releaseCommits();
  }

  private releaseCommits(): void {
    let n = 0;
    while (n < this.heldCommits.length && this.releasable(this.heldCommits[n]!)) n++;
    if (!n) return;
    const out = this.heldCommits.splice(0, n);
    for (const c of out) {
      const released = { seq: c.seq, epoch: c.epoch, flags: c.flags, changes: c.changes };
      for (const w of this.commitWatchers) w.commit(released);
    }
  }

  /**
   * The session moved to a new primary. Replies held from the old epoch may
   * never be acknowledged now: forget them and send every unreleased request
   * again with its id. The new primary answers a request it has already
   * applied from its dedup table, and runs one it has not: once either way.
   * `answered` is the request the frame that brought the epoch answers: it
   * is not sent again (a refusal is not remembered, so a resent request
   * whose handler threw would run a second time).
   */
  private newEpoch(epoch: number, answered?: string): void {
    this.epoch = epoch;
    this.held.length = 0;
    // Events of an older epoch may never be acknowledged; a re-run input emits them again.
    for (let i = this.heldEvents.length - 1; i >= 0; i--)
      if (this.heldEvents[i]!.epoch < epoch) this.heldEvents.splice(i, 1);
    for (const [id, p] of this.pending) {
      if ((p.held && p.held.epoch >= epoch) || id === answered) continue;
      p.held = undefined;
      if (p.trace) p.resentIn = epoch;
      this.resends++;
      this.transport.publish(subjects.input(this.sid), p.frame);
    }
    for (const [id, p] of this.pending) if (p.held) this.held.push(id);
    if (this.heldCommits.some((h) => h.epoch < epoch))
      for (const w of this.commitWatchers) w.newEpoch();
  }

  /**
   * True when a transaction so stamped may be shown to clients: every
   * successor of its primary will hold it (PROTOCOL.md, "Replication and
   * release"). An ack releases only its own epoch (a seq of an older epoch
   * may have been replaced by the new primary's history). A standby's ack
   * releases commits of its term or an earlier one: that standby holds them,
   * and a standby named later synced from a state that had them. The log's
   * ack releases a commit made unprotected, or one whose standby has been
   * replaced since (the ack's term is newer): the primary flushes the log
   * before the record stops naming a standby; before that, the standby it
   * names is the successor, and the log holding a commit it lacks proves nothing.
   */
  private releasable(h: Stamp): boolean {
    if (h.mode === ConsistencyCode.async) return true;
    const s = this.standbyAck;
    const l = this.logAck;
    const byStandby = s.epoch === h.epoch && s.term >= h.term && s.seq >= h.seq;
    const logged = l.epoch === h.epoch && l.seq >= h.seq;
    const byLog = logged && (h.unprotected || l.term > h.term);
    if (h.mode === ConsistencyCode.durable) return logged && (byStandby || byLog);
    return byStandby || byLog;
  }

  /** Releases the reply if its mode allows it now; true when released. */
  private release(id: string, p: Pending): boolean {
    const h = p.held!;
    if (!h.released && !this.releasable(h)) return false;
    this.pending.delete(id);
    this.onReleased?.(id, h);
    if (p.trace) this.traceRelease(p, h);
    p.resolve(this.codec.decode(h.reply));
    return true;
  }

  /** A traced request's reply was released: the wait since its commit arrived is a span of its trace. */
  private traceRelease(p: Pending, h: Stamp): void {
    const now = this.clock.now();
    this.tracing.safely(() => {
      const parent = contextOf(p.trace!);
      if (!parent) return;
      this.tracing.record(SpanName.release, parent, p.heldAt ?? now, now, {
        [Attr.session]: this.sid,
        [Attr.epoch]: h.epoch,
        [Attr.term]: h.term,
        [Attr.seq]: h.seq,
        [Attr.consistency]: h.mode,
        // Sent again because the session moved to a new primary (a failover): its trace says so.
        ...(p.resentIn === undefined ? {} : { [Attr.resentInEpoch]: p.resentIn }),
      });
    });
  }

  private armSweep(): void {
    this.sweep ??= this.clock.setTimeout(() => {
      this.sweep = undefined;
      this.expire();
      if (this.pending.size && !this.closed) this.armSweep();
    }, 50);
  }

  private expire(): void {
    const now = this.clock.now();
    for (const [id, p] of this.pending) {
      if (p.deadline > now) continue;
      this.pending.delete(id);
      p.reject(
        new RequestTimeoutError(
          `request ${id} to ${this.sid}: ${p.held ? 'reply held, no ack' : 'no reply'} before the deadline`,
        ),
      );
    }
  }

  /** Stops listening; pending requests reject with {@link ClosedError}. Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.subs) s.unsubscribe();
    if (this.sweep !== undefined) this.clock.clearTimeout(this.sweep);
    this.sweep = undefined;
    for (const p of this.pending.values())
      p.reject(new ClosedError(`client of ${this.sid} closed`));
    this.pending.clear();
  }
}

function stampOf(f: { flags: number; epoch: number; term: number; seq: number }): Stamp {
  return {
    seq: f.seq,
    epoch: f.epoch,
    term: f.term,
    mode: consistencyOf(f.flags),
    unprotected: (f.flags & CommitFlag.unprotected) !== 0,
  };
}
