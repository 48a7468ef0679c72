import { randomBytes } from 'node:crypto';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { ValueCodec } from './codec.ts';
import { ClosedError, RequestTimeoutError, errorFromWire, type WireError } from './errors.ts';
import { subjects } from './subjects.ts';
import {
  AckSource,
  CommitFlag,
  ConsistencyCode,
  FrameKind,
  consistencyOf,
  decodeDatagram,
  decodeFrame,
  encodeDatagram,
  encodeInput,
} from './wire.ts';

/** An event held until its transaction may be released, like a reply. */
type HeldEvent = { seq: number; epoch: number; mode: number; event: string; payload: Uint8Array };

type Pending = {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  deadline: number;
  /** The encoded input, sent again when the session's epoch changes before the reply is released. */
  frame: Uint8Array;
  /** Set once the commit arrived; the reply waits here until its release condition holds. */
  held?: { seq: number; epoch: number; mode: number; released: boolean; reply: Uint8Array };
};

/**
 * Sends requests to one session and releases each reply by the actor's
 * consistency mode: `async` at once, `standby` once the standby acknowledged
 * the reply's seq, `durable` once the log did too. The gateway uses the same rule.
 */
export class SessionClient {
  private readonly pending = new Map<string, Pending>();
  /**
   * Ids of held replies in arrival order. A session's commits arrive in seq
   * order, so an ack releases a prefix of this queue: no scan of every request.
   */
  private readonly held: string[] = [];
  private readonly subs: Subscription[];
  private readonly prefix = randomBytes(6).toString('base64url');
  private counter = 0;
  private standbyAck = { epoch: 0, seq: 0 };
  private logAck = { epoch: 0, seq: 0 };
  /** The newest epoch seen; output of older ones is dropped. */
  private epoch = 0;
  /** How many times a new epoch made this client send its unreleased requests again. */
  resends = 0;
  private readonly eventListeners: ((event: string, payload: unknown) => void)[] = [];
  private readonly heldEvents: HeldEvent[] = [];
  private sweep: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly codec: ValueCodec,
    readonly sid: string,
    private readonly defaultTimeoutMs = 5_000,
  ) {
    this.subs = [
      nc.subscribe(subjects.output(sid), { callback: (_e, m) => this.onOutput(m.data) }),
      nc.subscribe(subjects.ack(sid), { callback: (_e, m) => this.onAck(m.data) }),
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
   */
  request(
    type: string,
    payload?: unknown,
    opts: { requestId?: string; timeoutMs?: number } = {},
  ): Promise<unknown> {
    if (this.closed) return Promise.reject(new ClosedError(`client of ${this.sid} is closed`));
    const requestId = opts.requestId ?? `${this.prefix}.${(++this.counter).toString(36)}`;
    return new Promise((resolve, reject) => {
      const body = payload === undefined ? new Uint8Array(0) : this.codec.encode(payload);
      const frame = encodeInput(requestId, type, body);
      this.pending.set(requestId, {
        resolve,
        reject,
        deadline: Date.now() + (opts.timeoutMs ?? this.defaultTimeoutMs),
        frame,
      });
      this.sweep ??= setInterval(() => this.expire(), 50);
      this.nc.publish(subjects.input(this.sid), frame);
    });
  }

  private onOutput(bytes: Uint8Array): void {
    const f = decodeFrame(bytes);
    if (f.kind !== FrameKind.commit && f.kind !== FrameKind.refusal) return;
    if (f.epoch < this.epoch) return; // a fenced primary's late output
    if (f.epoch > this.epoch) this.newEpoch(f.epoch);
    const p = this.pending.get(f.requestId);
    if (!p || p.held) return;
    if (f.kind === FrameKind.refusal) {
      this.pending.delete(f.requestId);
      return p.reject(errorFromWire(this.codec.decode(f.error) as WireError));
    }
    p.held = {
      seq: f.seq,
      epoch: f.epoch,
      mode: consistencyOf(f.flags),
      released: (f.flags & CommitFlag.released) !== 0,
      reply: f.reply.slice(),
    };
    if (!this.release(f.requestId, p)) this.held.push(f.requestId);
  }

  /**
   * Calls `fn` with every event the session's actor emits (`ctx.emit`), in
   * commit order, once its transaction may be released (the same rule as replies).
   */
  onEvent(fn: (event: string, payload: unknown) => void): void {
    if (!this.eventListeners.length) {
      this.subs.push(
        this.nc.subscribe(subjects.events(this.sid), {
          callback: (_e, m) => this.onEventFrame(m.data),
        }),
      );
    }
    this.eventListeners.push(fn);
  }

  /** Sends a datagram to the session's primary, as client `from`, to one client or (empty) the others. */
  sendDatagram(data: Uint8Array, from: string, to = ''): void {
    this.nc.publish(subjects.datagramIn(this.sid), encodeDatagram(from, to, data));
  }

  /** Calls `fn` with every datagram the primary forwards to the session's clients. */
  onDatagram(fn: (data: Uint8Array, from: string, to: string) => void): void {
    this.subs.push(
      this.nc.subscribe(subjects.datagramOut(this.sid), {
        callback: (_e, m) => {
          try {
            const d = decodeDatagram(m.data);
            fn(d.data, d.from, d.to);
          } catch {
            // A malformed datagram is dropped, as UDP would.
          }
        },
      }),
    );
  }

  private onEventFrame(bytes: Uint8Array): void {
    const f = decodeFrame(bytes);
    if (f.kind !== FrameKind.event || f.epoch < this.epoch) return;
    if (f.epoch > this.epoch) this.newEpoch(f.epoch);
    this.heldEvents.push({
      seq: f.seq,
      epoch: f.epoch,
      mode: consistencyOf(f.flags),
      event: f.event,
      payload: f.payload.slice(),
    });
    this.releaseEvents();
  }

  private releaseEvents(): void {
    while (this.heldEvents.length) {
      const e = this.heldEvents[0]!;
      if (!this.releasable(e)) break;
      this.heldEvents.shift();
      const payload = e.payload.length ? this.codec.decode(e.payload) : undefined;
      for (const fn of this.eventListeners) fn(e.event, payload);
    }
  }

  private onAck(bytes: Uint8Array): void {
    const f = decodeFrame(bytes);
    if (f.kind !== FrameKind.ack || f.epoch < this.epoch) return;
    if (f.epoch > this.epoch) this.newEpoch(f.epoch);
    const mark = f.source === AckSource.log ? this.logAck : this.standbyAck;
    if (f.epoch < mark.epoch || (f.epoch === mark.epoch && f.seq <= mark.seq)) return;
    mark.epoch = f.epoch;
    mark.seq = f.seq;
    while (this.held.length) {
      const id = this.held[0]!;
      const p = this.pending.get(id);
      // Gone (timed out) or released: drop it; otherwise stop at the first still held.
      if (p?.held && !this.release(id, p)) break;
      this.held.shift();
    }
    if (this.heldEvents.length) this.releaseEvents();
  }

  /**
   * An ack releases only replies of its own epoch: a seq of an older epoch
   * may have been replaced by the new primary's history.
   */
  private acked(
    mark: { epoch: number; seq: number },
    held: { epoch: number; seq: number },
  ): boolean {
    return mark.epoch === held.epoch && mark.seq >= held.seq;
  }

  /**
   * The session moved to a new primary. Replies held from the old epoch may
   * never be acknowledged now: forget them and send every unreleased request
   * again with its id. The new primary answers a request it has already
   * applied from its dedup table, and runs one it has not: once either way.
   */
  private newEpoch(epoch: number): void {
    this.epoch = epoch;
    this.held.length = 0;
    // Events of an older epoch may never be acknowledged; a re-run input emits them again.
    for (let i = this.heldEvents.length - 1; i >= 0; i--)
      if (this.heldEvents[i]!.epoch < epoch) this.heldEvents.splice(i, 1);
    for (const p of this.pending.values()) {
      if (p.held && p.held.epoch >= epoch) {
        continue;
      }
      p.held = undefined;
      this.resends++;
      this.nc.publish(subjects.input(this.sid), p.frame);
    }
    for (const [id, p] of this.pending) if (p.held) this.held.push(id);
  }

  /** True when a transaction of this mode, epoch and seq may be shown to clients. */
  private releasable(h: { mode: number; epoch: number; seq: number }): boolean {
    return (
      h.mode === ConsistencyCode.async ||
      (this.acked(this.standbyAck, h) &&
        (h.mode !== ConsistencyCode.durable || this.acked(this.logAck, h)))
    );
  }

  /** Releases the reply if its mode allows it now; true when released. */
  private release(id: string, p: Pending): boolean {
    const h = p.held!;
    if (!h.released && !this.releasable(h)) return false;
    this.pending.delete(id);
    p.resolve(this.codec.decode(h.reply));
    return true;
  }

  private expire(): void {
    const now = Date.now();
    for (const [id, p] of this.pending) {
      if (p.deadline > now) continue;
      this.pending.delete(id);
      p.reject(
        new RequestTimeoutError(
          `request ${id} to ${this.sid}: ${p.held ? 'reply held, no ack' : 'no reply'} before the deadline`,
        ),
      );
    }
    if (this.pending.size === 0) {
      clearInterval(this.sweep);
      this.sweep = undefined;
    }
  }

  /** Stops listening; pending requests reject with {@link ClosedError}. Safe to call twice. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of this.subs) s.unsubscribe();
    clearInterval(this.sweep);
    for (const p of this.pending.values())
      p.reject(new ClosedError(`client of ${this.sid} closed`));
    this.pending.clear();
  }
}
