import { MalformedFrameError } from './errors.ts';

/**
 * The binary frames ftmesh sends over NATS. A fixed header in front of the
 * payload lets a receiver read the routing fields (epoch, seq, request id)
 * and cut the reply out of a frame without decoding the patches: the
 * gateway strips them, the client never pays for them.
 *
 * Input   [kind=1][flags][u16 idLen][id][u16 typeLen][type]([u16 senderLen][sender])([u16 tpLen][traceparent])[payload...]
 * Commit  [kind=2][flags][u32 epoch][u32 term][f64 seq][u16 idLen][id]([u16 tpLen][traceparent])[u32 replyLen][reply][patches...]
 * Refusal [kind=3][flags][u32 epoch][u32 term][f64 seq][u16 idLen][id][u32 errLen][error]
 * Ack     [kind=4][source][u32 epoch][u32 term][f64 seq]
 * Event   [kind=5][flags][u32 epoch][u32 term][f64 seq][u16 nameLen][name][u32 payloadLen][payload]([u16 len][client id]...)
 * Epoch   [kind=6][0][u32 epoch][u32 0][f64 from]   (in the log only: an epoch's history starts after `from`)
 *
 * `term` counts the standby changes within an epoch (see PROTOCOL.md): a
 * standby's ack releases only commits of its own term.
 * The bracketed fields are there only when a flag says so: an input's
 * `sender` (InputFlag.sender) and `traceparent` (InputFlag.traceparent, a
 * W3C trace context, sent only when sampled), a commit's `traceparent`
 * (CommitFlag.traced: the context of its transaction's span, only when
 * sampled), an event's list of client ids (EventFlag.targeted).
 * Numbers are big-endian. `seq` is a float64 holding a safe integer.
 * A commit's reply and patches, and an input's payload, are encoded by the
 * value codec; the wire layer treats them as opaque bytes.
 */
export const FrameKind = { input: 1, commit: 2, refusal: 3, ack: 4, event: 5, epoch: 6 } as const;

/** Consistency modes, as stored in the low two bits of a commit's flags. */
export const ConsistencyCode = { async: 0, standby: 1, durable: 2 } as const;

/** Commit flags beyond the consistency mode. */
export const CommitFlag = {
  /** The transaction answered a request: the reply field is meaningful. */
  hasReply: 1 << 2,
  /** A re-sent reply for a request already applied: no patches, replicas ignore it. */
  duplicate: 1 << 3,
  /** The changes are `[patches, effects]` (timers, worker jobs), not the patch list alone. */
  effects: 1 << 4,
  /**
   * On a duplicate: the primary knows the standby (and in durable mode the
   * log) already holds this seq, so the reply may be released at once.
   */
  released: 1 << 5,
  /** Committed while no standby was named: only the log's ack releases it. */
  unprotected: 1 << 6,
  /**
   * A `traceparent` (the transaction's span, sampled) follows the request id.
   * Commit frames only: on an event frame this bit is {@link EventFlag.targeted}.
   */
  traced: 1 << 7,
} as const;

/** Who acknowledged a seq. */
export const AckSource = { standby: 1, log: 2 } as const;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

export type InputFrame = {
  kind: typeof FrameKind.input;
  requestId: string;
  type: string;
  /** Who sent it (a client id, through a gateway); empty when unnamed. */
  sender: string;
  /** The W3C trace context it was sent in (sampled); empty when untraced. */
  traceparent: string;
  payload: Uint8Array;
};

/** Input flags. */
export const InputFlag = {
  /** A sender string follows the type. */
  sender: 1,
  /** A W3C `traceparent` follows the type (and the sender, when there is one). */
  traceparent: 2,
} as const;

/** Commit and event flags beyond those of {@link CommitFlag}. */
export const EventFlag = {
  /** The payload is followed by the list of client ids the event is for. */
  targeted: 1 << 7,
} as const;

export type CommitFrame = {
  kind: typeof FrameKind.commit;
  flags: number;
  epoch: number;
  term: number;
  seq: number;
  requestId: string;
  /** The context of the transaction's span (flag `traced`); empty when untraced. */
  traceparent: string;
  reply: Uint8Array;
  patches: Uint8Array;
};

export type RefusalFrame = {
  kind: typeof FrameKind.refusal;
  epoch: number;
  term: number;
  seq: number;
  requestId: string;
  error: Uint8Array;
};

export type EventFrame = {
  kind: typeof FrameKind.event;
  flags: number;
  epoch: number;
  term: number;
  seq: number;
  event: string;
  payload: Uint8Array;
  /** The client ids the event is for (flag `targeted`); absent: every client. */
  to?: string[];
};

export type AckFrame = {
  kind: typeof FrameKind.ack;
  source: number;
  epoch: number;
  term: number;
  seq: number;
};

/** In the log: epoch `epoch`'s history continues from seq `from`; earlier frames above it are void. */
export type EpochFrame = {
  kind: typeof FrameKind.epoch;
  epoch: number;
  from: number;
};

export type Frame = InputFrame | CommitFrame | RefusalFrame | AckFrame | EventFrame | EpochFrame;

/** Bytes of the header every sequenced frame (commit, refusal, ack, event, epoch) starts with. */
const headerBytes = 18;

const maxId = 0xffff;

function writeString(view: DataView, bytes: Uint8Array, at: number, s: Uint8Array): number {
  view.setUint16(at, s.length);
  bytes.set(s, at + 2);
  return at + 2 + s.length;
}

function idBytes(id: string): Uint8Array {
  const b = encoder.encode(id);
  if (b.length > maxId)
    throw new MalformedFrameError(`request id is ${b.length} bytes; at most ${maxId}`);
  return b;
}

/**
 * Encodes an input frame (a request to a session), from `sender` when given,
 * in the trace context `traceparent` when given (pass one only when sampled).
 */
export function encodeInput(
  requestId: string,
  type: string,
  payload: Uint8Array,
  sender = '',
  traceparent = '',
): Uint8Array {
  const id = idBytes(requestId);
  const t = idBytes(type);
  const from = sender ? idBytes(sender) : undefined;
  const tp = traceparent ? idBytes(traceparent) : undefined;
  const optional = (from ? 2 + from.length : 0) + (tp ? 2 + tp.length : 0);
  const out = new Uint8Array(2 + 2 + id.length + 2 + t.length + optional + payload.length);
  const view = new DataView(out.buffer);
  out[0] = FrameKind.input;
  out[1] = (from ? InputFlag.sender : 0) | (tp ? InputFlag.traceparent : 0);
  let at = writeString(view, out, 2, id);
  at = writeString(view, out, at, t);
  if (from) at = writeString(view, out, at, from);
  if (tp) at = writeString(view, out, at, tp);
  out.set(payload, at);
  return out;
}

/** A sequence position: which epoch and term, and which seq. */
export type Position = { epoch: number; term: number; seq: number };

function writeHeader(view: DataView, out: Uint8Array, kind: number, flags: number, p: Position) {
  out[0] = kind;
  out[1] = flags;
  view.setUint32(2, p.epoch);
  view.setUint32(6, p.term);
  view.setFloat64(10, p.seq);
}

function encodeSequenced(
  kind: number,
  flags: number,
  p: Position,
  requestId: string,
  body: Uint8Array,
  tail: Uint8Array | undefined,
  trace?: Uint8Array,
): Uint8Array {
  const id = idBytes(requestId);
  const tailLength = tail ? tail.length : 0;
  const traceLength = trace ? 2 + trace.length : 0;
  const out = new Uint8Array(
    headerBytes + 2 + id.length + traceLength + 4 + body.length + tailLength,
  );
  const view = new DataView(out.buffer);
  writeHeader(view, out, kind, flags, p);
  let at = writeString(view, out, headerBytes, id);
  if (trace) at = writeString(view, out, at, trace);
  view.setUint32(at, body.length);
  out.set(body, at + 4);
  at += 4 + body.length;
  if (tail) out.set(tail, at);
  return out;
}

/**
 * Encodes a committed transaction: its reply and its patches in one frame,
 * and the context of its transaction's span when `traceparent` is given
 * (the flag `traced` follows it: set with one, cleared without).
 */
export function encodeCommit(
  flags: number,
  p: Position,
  requestId: string,
  reply: Uint8Array,
  patches: Uint8Array,
  traceparent = '',
): Uint8Array {
  if (!traceparent)
    return encodeSequenced(
      FrameKind.commit,
      flags & ~CommitFlag.traced,
      p,
      requestId,
      reply,
      patches,
    );
  const trace = idBytes(traceparent);
  const traced = flags | CommitFlag.traced;
  return encodeSequenced(FrameKind.commit, traced, p, requestId, reply, patches, trace);
}

/** Encodes a refusal: the request was rolled back (handler threw, unknown type, ...). */
export function encodeRefusal(p: Position, requestId: string, error: Uint8Array): Uint8Array {
  return encodeSequenced(FrameKind.refusal, 0, p, requestId, error, undefined);
}

/**
 * Encodes an event the transaction at `p` emitted; `flags` carry the
 * consistency mode. `to` lists the client ids it is for (absent: all).
 */
export function encodeEvent(
  flags: number,
  p: Position,
  event: string,
  payload: Uint8Array,
  to?: readonly string[],
): Uint8Array {
  if (!to) return encodeSequenced(FrameKind.event, flags, p, event, payload, undefined);
  const ids = to.map(idBytes);
  const tail = new Uint8Array(ids.reduce((n, b) => n + 2 + b.length, 0));
  const view = new DataView(tail.buffer);
  let at = 0;
  for (const b of ids) at = writeString(view, tail, at, b);
  return encodeSequenced(FrameKind.event, flags | EventFlag.targeted, p, event, payload, tail);
}

/**
 * Reads `[u16 length][UTF-8]` strings from `bytes`, from `at` on; a length
 * running past the end is a malformed frame (`what` says which field).
 */
class StringReader {
  private readonly view: DataView;
  constructor(
    private readonly bytes: Uint8Array,
    public at: number,
  ) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  get done(): boolean {
    return this.at >= this.bytes.length;
  }

  read(what: string): string {
    const { bytes, at } = this;
    if (at + 2 > bytes.length) fail(`truncated ${what}`);
    const n = this.view.getUint16(at);
    if (at + 2 + n > bytes.length) fail(`truncated ${what}`);
    this.at = at + 2 + n;
    return decoder.decode(bytes.subarray(at + 2, at + 2 + n));
  }
}

function decodeTargets(bytes: Uint8Array): string[] {
  const r = new StringReader(bytes, 0);
  const to: string[] = [];
  while (!r.done) to.push(r.read('event target'));
  return to;
}

/** Encodes an acknowledgement that `source` holds every seq up to `p.seq` of the epoch (and term). */
export function encodeAck(source: number, p: Position): Uint8Array {
  const out = new Uint8Array(headerBytes);
  writeHeader(new DataView(out.buffer), out, FrameKind.ack, source, p);
  return out;
}

/** Encodes an epoch marker for the log: epoch `epoch`'s history continues after seq `from`. */
export function encodeEpochMarker(epoch: number, from: number): Uint8Array {
  const out = new Uint8Array(headerBytes);
  writeHeader(new DataView(out.buffer), out, FrameKind.epoch, 0, { epoch, term: 0, seq: from });
  return out;
}

function fail(what: string): never {
  throw new MalformedFrameError(`malformed frame: ${what}`);
}

/**
 * Decodes any frame, checking every length and number: the bytes come from
 * the wire and are untrusted. The returned byte fields are views into
 * `bytes` (no copy): keep `bytes` alive and unmodified while they are used.
 * @throws MalformedFrameError when the bytes are not a well-formed frame
 */
export function decodeFrame(bytes: Uint8Array): Frame {
  if (!(bytes instanceof Uint8Array) || bytes.length < 2) fail(`${bytes?.length} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const kind = bytes[0];
  if (kind === FrameKind.input) {
    const r = new StringReader(bytes, 2);
    const requestId = r.read('request id');
    if (!requestId) fail('input without a request id');
    const type = r.read('type');
    const sender = bytes[1]! & InputFlag.sender ? r.read('sender') : '';
    const traceparent = bytes[1]! & InputFlag.traceparent ? r.read('traceparent') : '';
    return { kind, requestId, type, sender, traceparent, payload: bytes.subarray(r.at) };
  }
  if (
    kind !== FrameKind.commit &&
    kind !== FrameKind.refusal &&
    kind !== FrameKind.event &&
    kind !== FrameKind.ack &&
    kind !== FrameKind.epoch
  )
    fail(`unknown kind ${kind}`);
  if (bytes.length < headerBytes) fail('truncated header');
  const flags = bytes[1]!;
  const epoch = view.getUint32(2);
  const term = view.getUint32(6);
  const seq = view.getFloat64(10);
  if (!Number.isSafeInteger(seq) || seq < 0) fail(`seq ${seq}`);
  if (kind === FrameKind.ack) {
    if (bytes.length !== headerBytes) fail(`ack of ${bytes.length} bytes`);
    return { kind, source: flags, epoch, term, seq };
  }
  if (kind === FrameKind.epoch) {
    if (bytes.length !== headerBytes) fail(`epoch marker of ${bytes.length} bytes`);
    return { kind, epoch, from: seq };
  }
  if (bytes.length < headerBytes + 2) fail('truncated request id length');
  const idLength = view.getUint16(headerBytes);
  let at = headerBytes + 2 + idLength;
  if (at + 4 > bytes.length) fail('truncated request id');
  const requestId = decoder.decode(bytes.subarray(headerBytes + 2, at));
  let traceparent = '';
  if (kind === FrameKind.commit && flags & CommitFlag.traced) {
    const r = new StringReader(bytes, at);
    traceparent = r.read('traceparent');
    at = r.at;
    if (at + 4 > bytes.length) fail('truncated traceparent');
  }
  const bodyLength = view.getUint32(at);
  at += 4;
  if (at + bodyLength > bytes.length) fail('truncated body');
  const body = bytes.subarray(at, at + bodyLength);
  if (kind === FrameKind.refusal) return { kind, epoch, term, seq, requestId, error: body };
  if (kind === FrameKind.event) {
    if (!(flags & EventFlag.targeted))
      return { kind, flags, epoch, term, seq, event: requestId, payload: body };
    const to = decodeTargets(bytes.subarray(at + bodyLength));
    return { kind, flags, epoch, term, seq, event: requestId, payload: body, to };
  }
  return {
    kind,
    flags,
    epoch,
    term,
    seq,
    requestId,
    traceparent,
    reply: body,
    patches: bytes.subarray(at + bodyLength),
  };
}

/** Reads only the epoch, term and seq of a sequenced frame; cheap, for routing. */
export function peekSequence(bytes: Uint8Array): Position {
  if (bytes.length < headerBytes) fail(`${bytes.length} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return { epoch: view.getUint32(2), term: view.getUint32(6), seq: view.getFloat64(10) };
}

/** The consistency mode bits of a commit frame's flags. */
export function consistencyOf(flags: number): number {
  return flags & 3;
}

/**
 * Builds the same commit without its patches: what a client receives after a
 * gateway strips them, and what the dedup table keeps to answer a repeat.
 */
export function withoutPatches(frame: CommitFrame, extraFlags = 0): Uint8Array {
  const { flags, requestId, reply, traceparent } = frame;
  return encodeCommit(flags | extraFlags, frame, requestId, reply, empty, traceparent);
}

const empty = new Uint8Array(0);

/**
 * A log batch: consecutive commit frames of one session, each prefixed with
 * its u32 length. One JetStream message holds one batch.
 */
export function encodeBatch(frames: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const f of frames) total += 4 + f.length;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  let at = 0;
  for (const f of frames) {
    view.setUint32(at, f.length);
    out.set(f, at + 4);
    at += 4 + f.length;
  }
  return out;
}

/** Splits a log batch into its frames (views into `bytes`). */
export function decodeBatch(bytes: Uint8Array): Uint8Array[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const frames: Uint8Array[] = [];
  let at = 0;
  while (at < bytes.length) {
    if (at + 4 > bytes.length) fail('truncated batch');
    const n = view.getUint32(at);
    if (at + 4 + n > bytes.length) fail('truncated batch frame');
    frames.push(bytes.subarray(at + 4, at + 4 + n));
    at += 4 + n;
  }
  return frames;
}

/**
 * A datagram: `[u16 fromLen][from][u16 toLen][to][data]`. `to` is empty for
 * "every client of the session but the sender".
 */
export function encodeDatagram(from: string, to: string, data: Uint8Array): Uint8Array {
  const f = idBytes(from);
  const t = idBytes(to);
  const out = new Uint8Array(4 + f.length + t.length + data.length);
  const view = new DataView(out.buffer);
  let at = writeString(view, out, 0, f);
  at = writeString(view, out, at, t);
  out.set(data, at);
  return out;
}

/** Decodes a datagram; `data` is a view into `bytes`. */
export function decodeDatagram(bytes: Uint8Array): { from: string; to: string; data: Uint8Array } {
  const r = new StringReader(bytes, 0);
  const from = r.read('datagram');
  const to = r.read('datagram');
  return { from, to, data: bytes.subarray(r.at) };
}
