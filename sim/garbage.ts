import { createValueCodec } from '../runtime/codec.ts';
import { subjects } from '../runtime/subjects.ts';
import {
  AckSource,
  CommitFlag,
  ConsistencyCode,
  decodeFrame,
  encodeAck,
  encodeCommit,
  encodeEvent,
  encodeInput,
  encodeRefusal,
} from '../runtime/wire.ts';
import type { Prng } from './prng.ts';

/** Subjects the runtime subscribes to, for garbage. `requests` are served by request-reply. */
export function garbageTargets(sids: readonly string[], hosts: readonly string[]) {
  const publish: string[] = [subjects.disconnectAdvisory];
  const requests: string[] = [];
  for (const sid of sids)
    publish.push(
      subjects.input(sid),
      subjects.output(sid),
      subjects.ack(sid),
      subjects.events(sid),
    );
  for (const sid of sids) requests.push(subjects.control(sid, 1), subjects.control(sid, 2));
  for (const h of hosts) requests.push(subjects.hostControl(h), subjects.probe(h));
  for (const h of hosts) publish.push(subjects.heartbeat(h));
  return { publish, requests };
}

const text = new TextEncoder();

/**
 * Malformed payloads (each run draws from a seeded PRNG): empty, one byte of
 * each frame kind, valid frames cut short, random bytes, text that is not
 * JSON, JSON and MessagePack of the wrong shape. None of them is a valid
 * frame: forged but well-formed frames are another fault than garbage.
 */
export function garbagePayload(rng: Prng): Uint8Array {
  const codec = createValueCodec();
  for (;;) {
    const bytes = candidate(rng, codec);
    if (isFrame(bytes)) continue;
    return bytes;
  }
}

function isFrame(bytes: Uint8Array): boolean {
  try {
    decodeFrame(bytes);
    return true;
  } catch {
    return false;
  }
}

function candidate(rng: Prng, codec: ReturnType<typeof createValueCodec>): Uint8Array {
  const flags = ConsistencyCode.standby | CommitFlag.hasReply;
  const at = { epoch: 1, term: 0, seq: 1 };
  switch (rng.int(0, 6)) {
    case 0:
      return new Uint8Array(0);
    case 1:
      return new Uint8Array([rng.int(0, 8)]);
    case 2: {
      const frames = [
        encodeInput('garbage-in', 'add', codec.encode('x')),
        encodeCommit(flags, at, 'garbage-commit', codec.encode(1), codec.encode([])),
        encodeRefusal(at, 'garbage-refusal', codec.encode({ code: 'x', message: 'y' })),
        encodeEvent(flags, at, 'garbage-event', codec.encode(1)),
        encodeAck(AckSource.standby, at),
      ];
      const f = rng.pick(frames);
      return f.slice(0, rng.int(1, Math.max(1, f.length - 1)));
    }
    case 3:
      return rng.bytes(rng.int(1, 48));
    case 4:
      return text.encode(rng.pick(['not json', '{', '{"op":', 'undefined', '\u0000', '💥💥']));
    case 5:
      return text.encode(
        rng.pick([
          'null',
          '42',
          '[]',
          '{}',
          '{"client":null}',
          '{"client":{"name":42}}',
          '{"client":{"name":"ftm-host-"}}',
          '{"op":"attach"}',
        ]),
      );
    default:
      return codec.encode(
        rng.pick<unknown>([
          null,
          42,
          'attach',
          [],
          {},
          { op: 42 },
          { op: 'attach' },
          { op: 'sync', sid: 7 },
          { op: 'named', sid: 'x' },
          { op: 'inspect', sid: {} },
          { op: 'snap' },
          { op: null },
        ]),
      );
  }
}
