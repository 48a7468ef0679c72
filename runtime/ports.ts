/**
 * The ports through which the runtime reaches the world: messaging, the two
 * KV buckets, the log, snapshots, time and randomness. Production binds them
 * to NATS and JetStream (`nats-transport.ts`, `nats-stores.ts`); the
 * simulator (`sim/`) binds them to in-memory fakes with seeded faults. The
 * runtime imports no NATS type outside those bindings.
 */
import type { Clock } from './clock.ts';

export type { Clock };

/** A message as a subscriber receives it. */
export interface TransportMessage {
  readonly subject: string;
  readonly data: Uint8Array;
  /** Answers a request; false when the message expects no answer. */
  respond(data: Uint8Array): boolean;
}

export interface TransportSubscription {
  unsubscribe(): void;
}

/**
 * Publish/subscribe and request/reply. Every message from it is untrusted:
 * a callback may throw on one, and the binding counts and reports that
 * (see {@link Transport.subscribe}) without ending the subscription.
 */
export interface Transport {
  publish(subject: string, data: Uint8Array): void;
  /**
   * Calls `onMessage` for every message on `subject` (NATS wildcards
   * allowed). An exception thrown by it is reported as a dropped message;
   * the subscription goes on.
   */
  subscribe(subject: string, onMessage: (m: TransportMessage) => void): TransportSubscription;
  /**
   * Sends a request and resolves with the first answer.
   * @throws NoResponderError when nobody subscribes to `subject`
   * @throws RequestTimeoutError when no answer came within `timeoutMs`
   */
  request(subject: string, data: Uint8Array, timeoutMs: number): Promise<Uint8Array>;
  /** Resolves once everything published before reached the server. */
  flush(): Promise<void>;
  /** The largest message the server takes, in bytes. */
  readonly maxPayload: number;
}

/** One key's latest value; `value` undefined when the key was deleted or purged. */
export interface KvEntry {
  readonly key: string;
  readonly value: Uint8Array | undefined;
  readonly revision: number;
}

/** A key-value bucket whose writes can name the revision they replace (compare-and-swap). */
export interface KvPort {
  get(key: string): Promise<KvEntry | undefined>;
  /** @throws KvConflictError when the key holds a value */
  create(key: string, value: Uint8Array): Promise<number>;
  /** @throws KvConflictError when the key is not at `revision` any more */
  update(key: string, value: Uint8Array, revision: number): Promise<number>;
  /** Removes the key and its history. */
  purge(key: string): Promise<void>;
  /**
   * Calls `onEntry` with every key's latest entry, then with every change.
   * Resolves once the entries that existed when it started were delivered.
   */
  watch(onEntry: (e: KvEntry) => void, onError: (err: Error) => void): Promise<{ stop(): void }>;
}

/** One message of a session's log, in stream order. */
export interface LogMessage {
  readonly seq: number;
  readonly data: Uint8Array;
  /** The epoch of the primary that appended it (0: unknown). */
  readonly epoch: number;
}

/**
 * The sessions' log: one subject per session in one stream. Appends are
 * fenced at the store: each names the stream sequence of the subject's last
 * message as the writer believes it, and any other writer's append since
 * makes it fail with {@link LogConflictError}.
 */
export interface LogPort {
  /**
   * Appends `data`, written by the primary of `epoch`, unless the subject's
   * last message is not `expectLast` (0: the subject is empty). `msgId`
   * makes a retry of the same append idempotent (it answers the first
   * append's seq). Resolves with the message's stream seq.
   * @throws LogConflictError when another append came first
   */
  append(
    sid: string,
    data: Uint8Array,
    opts: { msgId: string; expectLast: number; epoch: number },
  ): Promise<number>;
  /** The subject's last message: its stream seq (0 when none) and its writer's epoch. */
  last(sid: string): Promise<{ seq: number; epoch: number }>;
  /** Every message of the subject, in order. A failed read throws, never answers short. */
  read(sid: string): Promise<LogMessage[]>;
  /** Deletes the subject's messages below stream seq `seq` (none when `seq` is 1 or less). */
  purgeBefore(sid: string, seq: number): Promise<void>;
  /** Deletes every message of the subject. */
  purgeAll(sid: string): Promise<void>;
}

/** Snapshots by session, each with an order (its seq): an older one never replaces a newer. */
export interface SnapshotPort {
  /** Stores `bytes` unless a snapshot of the same or a higher order is stored; resolves whether it stored. */
  put(sid: string, bytes: Uint8Array, opts: { order: number }): Promise<boolean>;
  get(sid: string): Promise<Uint8Array | undefined>;
  delete(sid: string): Promise<void>;
}

/** Randomness: ids and jitter. Seeded in the simulator. */
export interface Random {
  /** A float in [0, 1). */
  next(): number;
  /** `bytes` random bytes as lowercase hex. */
  hex(bytes: number): string;
}
