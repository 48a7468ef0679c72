import { mulberry32 } from '../../runtime/transition.ts';
import type { NatsConnection } from '@nats-io/transport-node';
import { createValueCodec } from '../../runtime/codec.ts';
import {
  AckSource,
  CommitFlag,
  ConsistencyCode,
  encodeAck,
  encodeBatch,
  encodeCommit,
  encodeDatagram,
  encodeEvent,
  encodeInput,
  encodeRefusal,
} from '../../runtime/wire.ts';

/**
 * Malformed payloads for fault tests: every message from the wire is
 * untrusted, so whatever arrives on a subject the runtime subscribes to may
 * be refused (and reported) but must never break the subscriber.
 *
 * Each payload has a kind, so that a test can leave a kind out where it is
 * not garbage (an empty beat on `ftm.hb.<host>` is the protocol's goodbye).
 */
export type GarbageKind =
  /** Zero bytes. */
  | 'empty'
  /** One byte: each frame kind 0..8 (runtime/wire.ts knows 1..5). */
  | 'kind-byte'
  /** A valid frame of each kind (runtime/wire.ts encoders) cut short before its last field ends. */
  | 'truncated'
  /** Frames whose lengths, seq (NaN, negative, 2^60, ...) or epoch (0, 2^32 - 1) are absurd. */
  | 'absurd'
  /** Random bytes, some starting with a real frame kind. */
  | 'random'
  /** Text that is not JSON ("not json", invalid UTF-8, ...). */
  | 'text'
  /** JSON and MessagePack of the wrong shape (null, numbers, control requests missing fields...). */
  | 'wrong-shape'
  /** One large random payload (512 KiB by default). */
  | 'huge';

/** One malformed payload, named for failure messages. */
export interface GarbagePayload {
  readonly kind: GarbageKind;
  readonly name: string;
  readonly bytes: Uint8Array;
}

/** Options of {@link garbagePayloads}. */
export interface GarbagePayloadOptions {
  /** Seed of the random payloads (default 1): the same seed gives the same bytes. */
  seed?: number;
  /** Size of the `huge` payload (default 512 KiB). */
  hugeBytes?: number;
}

/** Options of {@link publishGarbage}. */
export interface GarbageOptions extends GarbagePayloadOptions {
  /** Times the whole set is sent (default 1); each round's random payloads differ (seed + round). */
  rounds?: number;
  /**
   * Subjects served by request-reply (control subjects): there every payload
   * is also sent as a request, whose answer or timeout is ignored.
   */
  requestSubjects?: readonly string[];
  /** Timeout of those requests in ms (default 200). They are sent concurrently per subject. */
  requestTimeoutMs?: number;
  /** Leaves a payload out on a subject, e.g. `(s, p) => s.startsWith('ftm.hb.') && p.kind === 'empty'`. */
  skip?: (subject: string, payload: GarbagePayload) => boolean;
}

/**
 * Every request id and event name in a garbage frame starts with this, so
 * that a frame that happens to decode is recognisable as ours.
 */
export const GARBAGE_ID_PREFIX = 'garbage';

function randomBytes(next: () => number, length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = Math.floor(next() * 256);
  return out;
}

/** A copy of `frame` with one field overwritten through a DataView. */
function patched(frame: Uint8Array, write: (view: DataView) => void): Uint8Array {
  const copy = frame.slice();
  write(new DataView(copy.buffer));
  return copy;
}

const text = new TextEncoder();
const small = new Uint8Array([0xc0]); // MessagePack nil

/** Valid frames of every kind, and where their last length-checked field ends. */
function validFrames(): { name: string; bytes: Uint8Array; end: number }[] {
  const id = (what: string) => `${GARBAGE_ID_PREFIX}-${what}`;
  const sequenced = (name: string, bytes: Uint8Array, idLength: number, bodyLength: number) => ({
    name,
    bytes,
    end: 20 + idLength + 4 + bodyLength,
  });
  const flags = ConsistencyCode.standby | CommitFlag.hasReply;
  const input = encodeInput(id('input'), 'garbage', new Uint8Array([1, 2, 3]));
  const commit = encodeCommit(
    flags,
    { epoch: 1, term: 0, seq: 1 },
    id('commit'),
    small,
    new Uint8Array([0x90]),
  );
  const datagram = encodeDatagram(id('from'), id('to'), new Uint8Array([1, 2, 3]));
  return [
    { name: 'input', bytes: input, end: input.length - 3 },
    sequenced('commit', commit, id('commit').length, small.length),
    sequenced(
      'refusal',
      encodeRefusal({ epoch: 1, term: 0, seq: 1 }, id('refusal'), small),
      id('refusal').length,
      1,
    ),
    sequenced(
      'event',
      encodeEvent(flags, { epoch: 1, term: 0, seq: 1 }, id('event'), small),
      id('event').length,
      1,
    ),
    { name: 'ack', bytes: encodeAck(AckSource.standby, { epoch: 1, term: 0, seq: 1 }), end: 18 },
    { name: 'datagram', bytes: datagram, end: datagram.length - 3 },
    { name: 'batch', bytes: encodeBatch([commit]), end: 4 + commit.length },
  ];
}

/** Frames cut at several points before `end`: none of them decodes. */
function truncatedFrames(): GarbagePayload[] {
  const out: GarbagePayload[] = [];
  for (const f of validFrames()) {
    const cuts = new Set([1, 2, 3, 6, 10, 14, 17, 18, 19, 20, 21, 24, f.end >> 1, f.end - 1]);
    for (const cut of [...cuts].sort((a, b) => a - b))
      if (cut >= 1 && cut < f.end)
        out.push({
          kind: 'truncated',
          name: `${f.name} cut at ${cut}`,
          bytes: f.bytes.slice(0, cut),
        });
  }
  return out;
}

const absurdSeqs: [string, number][] = [
  ['NaN', NaN],
  ['-1', -1],
  ['2^60', 2 ** 60],
  ['Infinity', Infinity],
  ['-Infinity', -Infinity],
  ['0.5', 0.5],
  ['MAX_VALUE', Number.MAX_VALUE],
];
const absurdEpochs: [string, number][] = [
  ['0', 0],
  ['2^32-1', 0xffffffff],
];

/** Frames with absurd seq, epoch or lengths; a few of them decode (an absurd epoch is well-formed). */
function absurdFrames(): GarbagePayload[] {
  const out: GarbagePayload[] = [];
  const add = (name: string, bytes: Uint8Array) => out.push({ kind: 'absurd', name, bytes });
  const flags = ConsistencyCode.standby | CommitFlag.hasReply;
  const id = `${GARBAGE_ID_PREFIX}-absurd`;
  const sequenced = {
    commit: encodeCommit(flags, { epoch: 1, term: 0, seq: 1 }, id, small, new Uint8Array([0x90])),
    refusal: encodeRefusal({ epoch: 1, term: 0, seq: 1 }, id, small),
    event: encodeEvent(flags, { epoch: 1, term: 0, seq: 1 }, id, small),
  };
  for (const [kind, frame] of Object.entries(sequenced)) {
    for (const [label, seq] of absurdSeqs)
      add(
        `${kind} seq ${label}`,
        patched(frame, (v) => v.setFloat64(10, seq)),
      );
    for (const [label, epoch] of absurdEpochs)
      add(
        `${kind} epoch ${label}`,
        patched(frame, (v) => v.setUint32(2, epoch)),
      );
    add(
      `${kind} id length 65535`,
      patched(frame, (v) => v.setUint16(18, 0xffff)),
    );
    add(
      `${kind} body length 2^32-1`,
      patched(frame, (v) => v.setUint32(20 + id.length, 0xffffffff)),
    );
  }
  for (const source of [AckSource.standby, AckSource.log]) {
    for (const [label, seq] of absurdSeqs)
      add(`ack ${source} seq ${label}`, encodeAck(source, { epoch: 1, term: 0, seq: seq }));
    for (const [label, epoch] of absurdEpochs)
      add(`ack ${source} epoch ${label}`, encodeAck(source, { epoch: epoch, term: 0, seq: 1 }));
  }
  add('ack source 0', encodeAck(0, { epoch: 1, term: 0, seq: 1 }));
  add('ack source 255', encodeAck(255, { epoch: 1, term: 0, seq: 1 }));
  add(
    'ack of 19 bytes',
    new Uint8Array([...encodeAck(AckSource.standby, { epoch: 1, term: 0, seq: 1 }), 0]),
  );
  const input = encodeInput(id, 'garbage', new Uint8Array([1]));
  add(
    'input id length 65535',
    patched(input, (v) => v.setUint16(2, 0xffff)),
  );
  add(
    'input type length 65535',
    patched(input, (v) => v.setUint16(4 + id.length, 0xffff)),
  );
  const datagram = encodeDatagram(id, id, new Uint8Array([1]));
  add(
    'datagram from length 65535',
    patched(datagram, (v) => v.setUint16(0, 0xffff)),
  );
  add(
    'datagram to length 65535',
    patched(datagram, (v) => v.setUint16(2 + id.length, 0xffff)),
  );
  add(
    'batch frame length 2^32-1',
    patched(encodeBatch([sequenced.commit]), (v) => v.setUint32(0, 0xffffffff)),
  );
  return out;
}

function wrongShapes(): GarbagePayload[] {
  const json = [
    'null',
    '42',
    '"ftm"',
    '[]',
    '{}',
    '[{"client":{"name":"ftm-host-"}}]',
    '{"client":null}',
    '{"client":42}',
    '{"client":{"name":42}}',
    '{"client":{"name":null}}',
    '{"client":{"name":["ftm-host-x"]}}',
    '{"type":"io.nats.server.advisory.v1.client_disconnect"}',
    '{"op":42}',
    '{"op":"attach"}',
    '{"__proto__":{"polluted":true}}',
  ];
  // The runtime's own codec: shapes a MessagePack reader decodes fine and must still refuse.
  // No valid request among them (no real op with its fields): garbage, not a forged command.
  const codec = createValueCodec();
  const packed: [string, unknown][] = [
    ['nil', null],
    ['42', 42],
    ['string', 'attach'],
    ['array', []],
    ['map', {}],
    ['op 42', { op: 42 }],
    ['op nil', { op: null }],
    ...['attach', 'attach-stored', 'sync', 'open', 'promote', 'reprotect', 'detach', 'named'].map(
      (op): [string, unknown] => [`op ${op} without fields`, { op }],
    ),
    ['inspect sid {}', { op: 'inspect', sid: {} }],
    ['load of wrong types', { primaries: 'x', standbys: null, capacity: -1, draining: 'yes' }],
    ['owner record of wrong types', { actor: 42, primary: null, standby: [], epoch: 'NaN' }],
  ];
  return [
    ...json.map((s) => ({
      kind: 'wrong-shape' as const,
      name: `JSON ${s}`,
      bytes: text.encode(s),
    })),
    ...packed.map(([name, value]) => ({
      kind: 'wrong-shape' as const,
      name: `MessagePack ${name}`,
      bytes: codec.encode(value),
    })),
  ];
}

/**
 * The malformed payloads of one round, in a fixed order (empty, kind bytes,
 * truncated, absurd, random, text, wrong shapes, huge). Deterministic given
 * the seed.
 */
export function garbagePayloads(opts: GarbagePayloadOptions = {}): GarbagePayload[] {
  const next = mulberry32(opts.seed ?? 1);
  const out: GarbagePayload[] = [{ kind: 'empty', name: 'empty', bytes: new Uint8Array(0) }];
  for (let k = 0; k <= 8; k++)
    out.push({ kind: 'kind-byte', name: `one byte ${k}`, bytes: new Uint8Array([k]) });
  out.push(...truncatedFrames(), ...absurdFrames());
  for (let i = 0; i < 8; i++) {
    const bytes = randomBytes(next, 1 + Math.floor(next() * 64));
    out.push({ kind: 'random', name: `random ${bytes.length} bytes`, bytes });
  }
  for (let kind = 1; kind <= 5; kind++) {
    const bytes = randomBytes(next, 14 + Math.floor(next() * 50));
    bytes[0] = kind;
    out.push({ kind: 'random', name: `random ${bytes.length} bytes of kind ${kind}`, bytes });
  }
  for (const s of ['not json', '{', '{"op":', 'undefined', '\u0000', '\u{1F4A5}'.repeat(8)])
    out.push({ kind: 'text', name: `text ${JSON.stringify(s)}`, bytes: text.encode(s) });
  out.push({ kind: 'text', name: 'invalid UTF-8', bytes: new Uint8Array([0xff, 0xfe, 0xfd]) });
  out.push(...wrongShapes());
  const huge = randomBytes(next, opts.hugeBytes ?? 512 * 1024);
  out.push({ kind: 'huge', name: `random ${huge.length} bytes`, bytes: huge });
  return out;
}

/**
 * Publishes every payload of {@link garbagePayloads} on each subject in turn
 * (subject by subject, round by round), and on the `requestSubjects` also as
 * requests; flushes after each subject so the server has them before the next.
 * Resolves with how many messages were sent (publishes and requests), once
 * every request was answered or timed out. Never rejects on an answer:
 * failures of requests (timeouts, no responders) are what garbage earns.
 *
 * @example
 * const sent = await publishGarbage(nc, [subjects.ack(sid), subjects.hostControl('h1')], {
 *   requestSubjects: [subjects.hostControl('h1')],
 *   rounds: 3,
 * });
 */
export async function publishGarbage(
  nc: NatsConnection,
  subjects: readonly string[],
  opts: GarbageOptions = {},
): Promise<number> {
  const requestSubjects = new Set(opts.requestSubjects ?? []);
  const timeout = opts.requestTimeoutMs ?? 200;
  let sent = 0;
  for (let round = 0; round < (opts.rounds ?? 1); round++) {
    const payloads = garbagePayloads({
      seed: (opts.seed ?? 1) + round,
      ...(opts.hugeBytes === undefined ? {} : { hugeBytes: opts.hugeBytes }),
    });
    for (const subject of subjects) {
      const mine = payloads.filter((p) => !opts.skip?.(subject, p));
      for (const p of mine) nc.publish(subject, p.bytes);
      sent += mine.length;
      if (requestSubjects.has(subject)) {
        await Promise.allSettled(mine.map((p) => nc.request(subject, p.bytes, { timeout })));
        sent += mine.length;
      }
      await nc.flush();
    }
  }
  return sent;
}
