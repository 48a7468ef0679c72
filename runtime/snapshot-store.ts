import { randomBytes } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import {
  JetStreamApiCodes,
  JetStreamApiError,
  jetstreamManager,
  type JetStreamManager,
} from '@nats-io/jetstream';
import { Kvm, type KV } from '@nats-io/kv';
import {
  Base64UrlPaddedCodec,
  getSha256Backend,
  Objm,
  setSha256Backend,
  type ObjectStore,
} from '@nats-io/obj';
import { systemClock, type Clock } from './clock.ts';
import { FtmError, InvalidArgumentError, RequestTimeoutError } from './errors.ts';
import { assertId, storeNames } from './subjects.ts';

/** Options of {@link SnapshotStore.open}. */
export interface SnapshotStoreOptions {
  /** JetStream replicas of the KV bucket and the object store: 1 for one server, 3 for a cluster (default 1). */
  replicas?: number;
  /**
   * Snapshots of at most this many bytes are stored inline in their KV entry; larger ones go to
   * the object store (default 512 KiB). Must fit the server's `max_payload` with 1 KiB to spare.
   */
  inlineLimit?: number;
  /** Called with errors handled without throwing (a replaced object that could not be deleted). Default: logs. */
  onError?: (err: FtmError) => void;
  /** Clock of the read-stall timeout (default: the system clock). */
  clock?: Clock;
  /** A large read that receives no chunk for this many ms is abandoned (default 5 000). */
  readStallMs?: number;
}

const defaults = {
  replicas: 1,
  inlineLimit: 512 * 1024,
  readStallMs: 5_000,
} as const;

/**
 * Chunk size of large objects. 1 MiB chunks put and get 20 MiB in about a quarter of the time
 * 128 KiB chunks (the library's default) take; the library clamps it to the server's max_payload.
 */
const chunkSize = 1024 * 1024;
/** Room left under max_payload for the entry's tag and the publish headers. */
const headerRoom = 1024;
/** The JetStream stream behind the object store (ADR-20 layout). */
const objectStream = `OBJ_${storeNames.largeSnapshots}`;
/** Reads of a large snapshot that a concurrent writer replaced before `get` gives up. */
const maxReadAttempts = 5;
/** Compare-and-set attempts of one switch before a conflict is thrown to the caller. */
const maxSwapAttempts = 10;

/** First byte of a KV entry: what follows it; `ordered` is or-ed in when an order follows. */
const Tag = { inline: 0, pointer: 1, ordered: 2 } as const;

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

type Entry = { type: 'inline'; bytes: Uint8Array } | { type: 'pointer'; name: string };

/**
 * The KV entry points at an object that is gone (deleted by hand, or lost with its stream).
 * Terminal: retrying reads the same dangling pointer.
 */
export class SnapshotMissingError extends FtmError {
  override name = 'SnapshotMissingError';
  override readonly code = 'snapshot_missing';
}

/**
 * Stores one snapshot (opaque, already encoded bytes) per session id.
 *
 * Every snapshot has a KV entry in `ftm-snapshots` whose first byte says what follows: the bytes
 * themselves (at most `inlineLimit`), or the name of an object in `ftm-snapshots-large`. A large
 * snapshot is written to a fresh object first and the KV entry is switched to it only once the
 * object is complete, so a reader sees the old snapshot or the new one, never half of one. The
 * object the switch displaced is deleted afterwards.
 *
 * The switch is a compare-and-set on the entry's revision: with two writers of one sid the last
 * switch wins and each writer deletes exactly the object it displaced. A put that fails after its
 * object was stored (or a process that dies there) leaves that object unreferenced: a leak is
 * preferred to deleting an object a late-applied switch may still point at.
 *
 * @example
 * const store = await SnapshotStore.open(nc, { replicas: 3 });
 * await store.put('cart-42', codec.encode(snapshot));
 * const bytes = await store.get('cart-42');
 */
export class SnapshotStore {
  private constructor(
    private readonly kv: KV,
    private readonly objects: ObjectStore,
    private readonly jsm: JetStreamManager,
    private readonly inlineLimit: number,
    private readonly readStallMs: number,
    private readonly clock: Clock,
    private readonly onError: (err: FtmError) => void,
  ) {}

  /**
   * Binds to the KV bucket and the object store, creating them if missing. Do this at start-up:
   * both are created here rather than the object store on the first large put, because creating
   * a replicated store takes 0.1-0.65 s (NATS-FACTS), which must not stall a session's snapshot.
   * @throws InvalidArgumentError when an option is out of range
   */
  static async open(nc: NatsConnection, opts: SnapshotStoreOptions = {}): Promise<SnapshotStore> {
    const replicas = opts.replicas ?? defaults.replicas;
    const inlineLimit = opts.inlineLimit ?? defaults.inlineLimit;
    const readStallMs = opts.readStallMs ?? defaults.readStallMs;
    if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5)
      throw new InvalidArgumentError(`replicas ${replicas} is invalid: use an integer from 1 to 5`);
    if (!Number.isInteger(inlineLimit) || inlineLimit < 0)
      throw new InvalidArgumentError(
        `inlineLimit ${inlineLimit} is invalid: use a byte count >= 0`,
      );
    const maxPayload = nc.info?.max_payload;
    if (maxPayload !== undefined && inlineLimit + headerRoom > maxPayload)
      throw new InvalidArgumentError(
        `inlineLimit ${inlineLimit} does not fit the server's max_payload ${maxPayload} ` +
          `(${headerRoom} bytes are kept for headers): lower inlineLimit or raise max_payload`,
      );
    if (!(readStallMs > 0))
      throw new InvalidArgumentError(
        `readStallMs ${readStallMs} is invalid: use a number of ms > 0`,
      );

    // The object store hashes every chunk with SHA-256. Its default pure-JS hash blocks the event
    // loop for ~300 ms per 20 MiB (put and get each); node:crypto is 4x faster. The setting is
    // process-wide in @nats-io/obj and only ever moves it to the faster backend.
    if (getSha256Backend() !== 'native') setSha256Backend('native');

    const [kv, objects, jsm] = await Promise.all([
      new Kvm(nc).create(storeNames.snapshots, { replicas, history: 1 }),
      new Objm(nc).create(storeNames.largeSnapshots, { replicas }),
      jetstreamManager(nc),
    ]);
    const onError =
      opts.onError ??
      ((err: FtmError) =>
        console.error(`[ftmesh snapshots] ${err.name}: ${err.message}`, err.cause));
    return new SnapshotStore(
      kv,
      objects,
      jsm,
      inlineLimit,
      readStallMs,
      opts.clock ?? systemClock,
      onError,
    );
  }

  /**
   * Stores `bytes` as the snapshot of `sid`, replacing the previous one. Resolves once the new
   * snapshot is what {@link get} returns and the object it replaced (if any) was deleted; a failed
   * deletion goes to `onError`, it does not reject.
   *
   * With `order` (a session's seq), the put replaces only a snapshot of a lower order: a writer
   * that lagged behind never puts an older state back over a newer one (whose log may already be
   * purged). Resolves true when stored, false when the stored snapshot's order is as high or higher.
   * @throws InvalidArgumentError for a bad sid, bytes or order
   */
  async put(sid: string, bytes: Uint8Array, opts: { order?: number } = {}): Promise<boolean> {
    assertId('sid', sid);
    if (!(bytes instanceof Uint8Array))
      throw new InvalidArgumentError('bytes: pass the encoded snapshot as a Uint8Array');
    const { order } = opts;
    if (order !== undefined && !Number.isFinite(order))
      throw new InvalidArgumentError(`order ${order} is invalid: pass a finite number`);
    let value: Uint8Array;
    let stored: string | undefined;
    if (bytes.length <= this.inlineLimit) {
      value = encodeEntry(Tag.inline, order, bytes);
    } else {
      // A fresh name per write: the object a reader may be streaming is never overwritten.
      stored = `${sid}.${randomBytes(8).toString('hex')}`;
      await this.objects.putBlob({ name: stored, options: { max_chunk_size: chunkSize } }, bytes);
      value = encodeEntry(Tag.pointer, order, utf8.encode(stored));
    }
    const outranked = (current: Uint8Array) =>
      order !== undefined && (orderOf(current) ?? -Infinity) >= order;
    const swapped = await this.swap(sid, value, outranked);
    if (swapped === false) {
      if (stored !== undefined) await this.deleteObject(sid, stored);
      return false;
    }
    if (swapped !== undefined && swapped !== stored) await this.deleteObject(sid, swapped);
    return true;
  }

  /**
   * Reads the snapshot of `sid`; resolves undefined when there is none.
   * @throws SnapshotMissingError when the entry points at an object that is gone
   * @throws RequestTimeoutError when a large read stalls and the object still looks complete
   */
  async get(sid: string): Promise<Uint8Array | undefined> {
    assertId('sid', sid);
    for (let attempt = 1; ; attempt++) {
      const current = await this.kv.get(sid);
      if (current === null || current.operation !== 'PUT') return undefined;
      const entry = decodeEntry(sid, current.value);
      if (entry.type === 'inline') return entry.bytes;
      const read = await this.readObject(entry.name);
      if (read instanceof Uint8Array) return read;
      // A writer may have switched the entry and deleted this object while we read it: follow
      // the new pointer. Only an unchanged entry means the object itself is broken.
      const now = await this.kv.get(sid);
      if (now?.revision !== current.revision) {
        if (attempt < maxReadAttempts) continue;
        throw new RequestTimeoutError(
          `the snapshot of session "${sid}" was replaced during each of ${attempt} reads; try again`,
        );
      }
      if (read.type === 'stalled' && (await this.hasChunks(read.nuid)))
        throw new RequestTimeoutError(
          `reading the snapshot of session "${sid}" (object "${entry.name}") stalled for ` +
            `${this.readStallMs} ms; the object looks complete, try again`,
        );
      throw new SnapshotMissingError(
        `the snapshot of session "${sid}" points at object "${entry.name}" in object store ` +
          `"${storeNames.largeSnapshots}", which is ${read.type === 'missing' ? 'missing' : 'missing its data'}: ` +
          `the snapshot is lost. Write a new one with put() from a live copy of the session, or ` +
          `delete("${sid}") to drop the entry (the log was purged up to the lost snapshot, so a ` +
          `restore from the log alone misses the commits before it).`,
      );
    }
  }

  /**
   * Removes the snapshot of `sid` (KV entry and object); resolves also when there was none. A
   * failed deletion of the object goes to `onError` (the snapshot is gone either way).
   */
  async delete(sid: string): Promise<void> {
    assertId('sid', sid);
    const replaced = await this.swap(sid, undefined);
    if (replaced) await this.deleteObject(sid, replaced);
  }

  /**
   * Writes `value` (or a delete marker when undefined) as the entry of `sid`, compare-and-set
   * against the entry read just before. Resolves with the object name the replaced entry pointed
   * at, if any; false, writing nothing, when `keep` says the current entry stays.
   */
  private async swap(
    sid: string,
    value: Uint8Array | undefined,
    keep: (current: Uint8Array) => boolean = () => false,
  ): Promise<string | undefined | false> {
    for (let attempt = 1; ; attempt++) {
      const current = await this.kv.get(sid);
      const live = current !== null && current.operation === 'PUT';
      if (value === undefined && !live) return undefined;
      if (live && keep(current.value)) return false;
      // A delete marker has a revision too: the next write must expect it, not 0.
      const previousSeq = current?.revision ?? 0;
      try {
        if (value === undefined) await this.kv.delete(sid, { previousSeq });
        else await this.kv.put(sid, value, { previousSeq });
        return live ? pointerIn(current.value) : undefined;
      } catch (err) {
        if (!isWrongLastSequence(err) || attempt >= maxSwapAttempts) throw err;
      }
    }
  }

  /**
   * Reads a whole object. A read that gets no chunk for `readStallMs` is cancelled: the library's
   * reader waits forever when the chunks it expects were purged under it.
   */
  private async readObject(
    name: string,
  ): Promise<Uint8Array | { type: 'missing' } | { type: 'stalled'; nuid: string }> {
    const result = await this.objects.get(name);
    if (result === null) return { type: 'missing' };
    // The same failure rejects reader.read() below; this copy must not go unhandled.
    result.error.catch(() => undefined);
    const out = new Uint8Array(result.info.size);
    const reader = result.data.getReader();
    let filled = 0;
    let lastChunkAt = this.clock.now();
    let stalled = false;
    let timer: unknown;
    const check = (): void => {
      const idle = this.clock.now() - lastChunkAt;
      if (idle < this.readStallMs) {
        timer = this.clock.setTimeout(check, this.readStallMs - idle);
        return;
      }
      stalled = true;
      // Resolves the pending read() with done and stops the library's consumer.
      reader.cancel().catch(() => undefined);
    };
    timer = this.clock.setTimeout(check, this.readStallMs);
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (filled + value.length > out.length)
          throw new FtmError(`snapshot object "${name}" holds more than its recorded size`);
        out.set(value, filled);
        filled += value.length;
        lastChunkAt = this.clock.now();
      }
    } catch (err) {
      if (err instanceof FtmError) throw err;
      throw new FtmError(`reading snapshot object "${name}" failed`, { cause: err });
    } finally {
      this.clock.clearTimeout(timer);
    }
    if (stalled) return { type: 'stalled', nuid: result.info.nuid };
    if (filled !== out.length)
      throw new FtmError(`snapshot object "${name}" ended after ${filled} of ${out.length} bytes`);
    return out;
  }

  /** True when the stream still holds chunks of the object with this nuid. */
  private async hasChunks(nuid: string): Promise<boolean> {
    const m = await this.jsm.streams.getMessage(objectStream, {
      last_by_subj: `$O.${storeNames.largeSnapshots}.C.${nuid}`,
    });
    return m !== null;
  }

  /**
   * Deletes an object no entry points at any more, reporting a failure to `onError`. The
   * library's delete leaves a tombstone on the object's meta subject; with a fresh name per
   * write those would pile up forever, so the subject is purged too.
   */
  private async deleteObject(sid: string, name: string): Promise<void> {
    try {
      await this.objects.delete(name);
      await this.jsm.streams.purge(objectStream, { filter: objectMetaSubject(name) });
    } catch (err) {
      this.onError(
        new FtmError(
          `could not delete snapshot object "${name}" of session "${sid}" after it was replaced; ` +
            `it stays in object store "${storeNames.largeSnapshots}" until deleted by hand`,
          { cause: err },
        ),
      );
    }
  }
}

/** The subject holding an object's metadata (ADR-20 layout). */
function objectMetaSubject(name: string): string {
  return `$O.${storeNames.largeSnapshots}.M.${Base64UrlPaddedCodec.encode(name)}`;
}

/**
 * An entry: its tag, then (tags with an order) the order as a float64, then the bytes or the
 * object's name.
 */
function encodeEntry(tag: number, order: number | undefined, body: Uint8Array): Uint8Array {
  const head = order === undefined ? 1 : 9;
  const value = new Uint8Array(head + body.length);
  value[0] = order === undefined ? tag : tag | Tag.ordered;
  if (order !== undefined) new DataView(value.buffer).setFloat64(1, order);
  value.set(body, head);
  return value;
}

/** The order a put gave the entry; undefined when it gave none. */
function orderOf(value: Uint8Array): number | undefined {
  if (!(value[0]! & Tag.ordered) || value.length < 9) return undefined;
  return new DataView(value.buffer, value.byteOffset, value.byteLength).getFloat64(1);
}

/** The bytes or object name after the tag (and the order). */
function bodyOf(value: Uint8Array): Uint8Array {
  return value.subarray(value[0]! & Tag.ordered ? 9 : 1);
}

function decodeEntry(sid: string, value: Uint8Array): Entry {
  switch (value[0]! & ~Tag.ordered) {
    case Tag.inline:
      // A copy into a plain Uint8Array: the entry may be a Buffer viewing the client's read
      // buffer, and Buffer#slice() would return another view of it, not a copy.
      return { type: 'inline', bytes: new Uint8Array(bodyOf(value)) };
    case Tag.pointer:
      return { type: 'pointer', name: fromUtf8.decode(bodyOf(value)) };
    default:
      throw new FtmError(
        `the snapshot entry of session "${sid}" has unknown tag ${value[0]}: it was written by a ` +
          `newer ftmesh or by hand; read it with that version, or delete("${sid}") and write a new one`,
      );
  }
}

/** The object an entry points at, if it is a pointer. */
function pointerIn(value: Uint8Array): string | undefined {
  return (value[0]! & ~Tag.ordered) === Tag.pointer ? fromUtf8.decode(bodyOf(value)) : undefined;
}

function isWrongLastSequence(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence ||
      err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}
