import type { Patch } from 'immer';
import type { ValueCodec } from './codec.ts';
import { CommitFlag, type CommitFrame } from './wire.ts';

/**
 * The runtime's own part of a session's replicated state, next to the
 * actor's state: the dedup table (recent replies by request id), the armed
 * timers and the worker jobs not yet answered. Every copy keeps it by
 * applying the same commits, it travels in snapshots, and on promotion the
 * new primary answers repeats from it, re-arms the timers and re-runs the jobs.
 */

/** A side effect a transaction recorded, replicated in its commit frame. */
export type Effect =
  | { op: 'timer'; key: string; at: number; type: string; payload: unknown }
  | { op: 'cancel'; key: string }
  | { op: 'job'; id: string; task: string; input: unknown; resultType: string }
  | { op: 'done'; id: string };

export type Timer = { at: number; type: string; payload: unknown };
export type Job = { task: string; input: unknown; resultType: string };
export type Remembered = { seq: number; flags: number; reply: Uint8Array };

/** Plain-data form of {@link SessionMeta}, as it travels in snapshots. */
export type MetaSnapshot = {
  dedup: [id: string, seq: number, flags: number, reply: Uint8Array][];
  timers: [key: string, timer: Timer][];
  jobs: [id: string, job: Job][];
};

export const emptyMeta = (): MetaSnapshot => ({ dedup: [], timers: [], jobs: [] });

export class SessionMeta {
  /** Insertion order is seq order, so the first key is the oldest reply. */
  readonly dedup = new Map<string, Remembered>();
  readonly timers = new Map<string, Timer>();
  readonly jobs = new Map<string, Job>();

  constructor(
    from: MetaSnapshot = emptyMeta(),
    /**
     * Replies remembered per session. A client may resend a request with its
     * id for as long as it stays in here: at 1,000 requests/s, 10,000 cover
     * 10 s of retries (client timeouts are a few seconds). Copies must agree
     * on it, so it is fixed, not an option per host.
     */
    private readonly dedupSize = 10_000,
  ) {
    for (const [id, seq, flags, reply] of from.dedup) this.dedup.set(id, { seq, flags, reply });
    for (const [key, t] of from.timers) this.timers.set(key, t);
    for (const [id, j] of from.jobs) this.jobs.set(id, j);
  }

  /**
   * Records one commit: its reply (when it answered a request) and its
   * effects, in order. Primary and replicas call this with the same frames.
   */
  record(requestId: string, entry: Remembered | undefined, effects: readonly Effect[]): void {
    if (requestId && entry) {
      this.dedup.set(requestId, entry);
      if (this.dedup.size > this.dedupSize) {
        const oldest = this.dedup.keys().next().value;
        if (oldest !== undefined) this.dedup.delete(oldest);
      }
    }
    for (const e of effects) {
      if (e.op === 'timer') this.timers.set(e.key, { at: e.at, type: e.type, payload: e.payload });
      else if (e.op === 'cancel') this.timers.delete(e.key);
      else if (e.op === 'job')
        this.jobs.set(e.id, { task: e.task, input: e.input, resultType: e.resultType });
      else this.jobs.delete(e.id);
    }
  }

  /** Records a received commit frame (replicas, log replay); copies the reply out of the frame. */
  recordFrame(f: CommitFrame, effects: readonly Effect[]): void {
    const remembered =
      f.flags & CommitFlag.hasReply
        ? { seq: f.seq, flags: f.flags & ~CommitFlag.effects, reply: f.reply.slice() }
        : undefined;
    this.record(f.requestId, remembered, effects);
  }

  snapshot(): MetaSnapshot {
    return {
      dedup: [...this.dedup].map(([id, r]) => [id, r.seq, r.flags, r.reply]),
      timers: [...this.timers],
      jobs: [...this.jobs],
    };
  }
}

/** The changes a commit frame carries after its reply: patches, and effects when there are any. */
export type Changes = { patches: Patch[]; effects: readonly Effect[] };

const none: readonly Effect[] = Object.freeze([]);
const empty = new Uint8Array(0);

/**
 * Encodes a commit's changes. Without effects (the common case) the bytes are
 * the patch list alone; with effects they are `[patches, effects]` and the
 * commit carries {@link CommitFlag.effects}.
 */
export function encodeChanges(
  codec: ValueCodec,
  patches: Patch[],
  effects: readonly Effect[],
): Uint8Array {
  if (effects.length) return codec.encode([patches, effects]);
  return patches.length ? codec.encode(patches) : empty;
}

/** Decodes what {@link encodeChanges} wrote; `flags` are the commit's flags. */
export function decodeChanges(codec: ValueCodec, flags: number, bytes: Uint8Array): Changes {
  if (!bytes.length) return { patches: [], effects: none };
  const value = codec.decode(bytes);
  if (!Array.isArray(value)) throw new Error('changes are not a list');
  if (!(flags & CommitFlag.effects)) return { patches: value as Patch[], effects: none };
  const [patches, effects] = value as [unknown, unknown];
  if (!Array.isArray(patches) || !Array.isArray(effects))
    throw new Error('changes with effects are not [patches, effects]');
  return { patches: patches as Patch[], effects: effects as Effect[] };
}
