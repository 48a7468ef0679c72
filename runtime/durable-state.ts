import { freeze } from 'immer';
import type { ActorDefinition } from './actor.ts';
import type { ValueCodec } from './codec.ts';
import type { Clock, LogPort, SnapshotPort } from './ports.ts';
import type { SessionSnapshot } from './session-types.ts';
import { SessionMeta, decodeChanges, emptyMeta } from './session-meta.ts';
import { TransitionRunner } from './transition.ts';
import { decodeBatch, decodeFrame, FrameKind, type CommitFrame } from './wire.ts';

/** A session's durable state: the latest snapshot with the log after it applied. */
export type DurableState = SessionSnapshot & {
  /** Log frames applied on top of the snapshot. */
  logged: number;
  /** Stream seq of the subject's last message when read: a restore's marker expects it. */
  lastStreamSeq: number;
  /** Messages read, frames voided by an epoch marker, for the trace. */
  read: { messages: number; frames: number; voided: number };
};

/** The stored snapshot of `sid`, decoded; undefined when there is none. */
export async function storedSnapshot(
  snapshots: SnapshotPort,
  codec: ValueCodec,
  sid: string,
): Promise<SessionSnapshot | undefined> {
  const bytes = await snapshots.get(sid);
  return bytes && (codec.decode(bytes) as SessionSnapshot);
}

/**
 * Reads a session's durable state: the latest snapshot plus the log after
 * it, applied in stream order. At each epoch marker `(epoch, from)` the
 * frames read so far above `from` are void (an old primary's last batch,
 * logged after its successor had started from `from`, never acknowledged by
 * it); JetStream refused every later append of the old epoch.
 */
export async function readDurable(
  log: LogPort,
  snapshots: SnapshotPort,
  codec: ValueCodec,
  actor: ActorDefinition,
  sid: string,
  clock: Clock,
): Promise<DurableState> {
  let snap: SessionSnapshot;
  let messages;
  for (let attempt = 0; ; attempt++) {
    snap = (await storedSnapshot(snapshots, codec, sid)) ?? {
      actor: actor.name,
      state: actor.initialState(undefined),
      seq: 0,
      epoch: 1,
      meta: emptyMeta(),
    };
    messages = await log.read(sid);
    // A newer snapshot was written and the log purged up to it between our
    // two reads: the log then starts beyond the snapshot. Read both again.
    const first = firstCommitSeq(messages);
    if (!(first !== undefined && first > snap.seq + 1 && attempt < 3)) break;
  }
  const { bySeq, frames, voided, maxEpoch: logEpoch } = replay(messages);
  const maxEpoch = Math.max(snap.epoch, logEpoch);
  const runner = new TransitionRunner(actor, sid, () => clock.now());
  const meta = new SessionMeta(snap.meta);
  let state = freeze(snap.state, true);
  let seq = snap.seq;
  let logged = 0;
  for (let f = bySeq.get(seq + 1); f; f = bySeq.get(seq + 1)) {
    const changes = decodeChanges(codec, f.flags, f.patches);
    if (changes.patches.length) state = runner.apply(state, changes.patches);
    meta.recordFrame(f, changes.effects);
    seq = f.seq;
    logged++;
  }
  return {
    actor: actor.name,
    state,
    seq,
    epoch: maxEpoch,
    meta: meta.snapshot(),
    logged,
    lastStreamSeq: messages.at(-1)?.seq ?? 0,
    read: { messages: messages.length, frames, voided },
  };
}

function firstCommitSeq(messages: readonly { data: Uint8Array }[]): number | undefined {
  for (const m of messages)
    for (const bytes of decodeBatch(m.data)) {
      const f = decodeFrame(bytes);
      if (f.kind === FrameKind.commit) return f.seq;
    }
  return undefined;
}

/**
 * The commit frames a log holds, one per seq, in stream order with the epoch
 * markers applied: at a marker `(epoch, from)` the frames read so far above
 * `from` are void. A message appended by an older epoch's primary after a
 * newer epoch's marker is ignored whole (the store refuses such appends; a
 * reader does not rely on it alone).
 */
function replay(messages: readonly { data: Uint8Array; epoch?: number }[]) {
  const bySeq = new Map<number, CommitFrame>();
  const raw = new Map<number, Uint8Array>();
  let frames = 0;
  let voided = 0;
  let maxEpoch = 0;
  let markedEpoch = 0;
  for (const m of messages) {
    if (m.epoch && m.epoch < markedEpoch) continue;
    for (const bytes of decodeBatch(m.data)) {
      const f = decodeFrame(bytes);
      if (f.kind === FrameKind.epoch) {
        if (f.epoch < markedEpoch) continue;
        markedEpoch = f.epoch;
        maxEpoch = Math.max(maxEpoch, f.epoch);
        for (const seq of bySeq.keys())
          if (seq > f.from) {
            bySeq.delete(seq);
            raw.delete(seq);
            voided++;
          }
      } else if (f.kind === FrameKind.commit) {
        frames++;
        maxEpoch = Math.max(maxEpoch, f.epoch);
        bySeq.set(f.seq, f);
        raw.set(f.seq, bytes);
      }
    }
  }
  return { bySeq, raw, frames, voided, maxEpoch };
}

/**
 * The logged commit frames of `sid` above seq `after`, in seq order, as
 * bytes: what a standby fills a gap with.
 * @throws when the log cannot be read (never an empty answer for a failed read)
 */
export async function readLogFrames(
  log: LogPort,
  sid: string,
  after: number,
): Promise<Uint8Array[]> {
  const { raw } = replay(await log.read(sid));
  return [...raw.keys()]
    .filter((seq) => seq > after)
    .sort((a, b) => a - b)
    .map((seq) => raw.get(seq)!);
}
