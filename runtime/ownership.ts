import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm, type KV } from '@nats-io/kv';
import type { ValueCodec } from './codec.ts';
import { SessionExistsError } from './errors.ts';
import { storeNames } from './subjects.ts';

/** Who serves a session in which epoch. Changed only by compare-and-swap. */
export type OwnerRecord = {
  actor: string;
  primary: string;
  /** Empty while the session has no standby (after a failover, before re-protection). */
  standby: string;
  epoch: number;
};

/** A record with the KV revision a compare-and-swap must name. */
export type Owned = { record: OwnerRecord; revision: number };

const wrongLastSequence = 10071;

function isCasConflict(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  return e?.code === wrongLastSequence || /wrong last sequence/i.test(String(e?.message));
}

/**
 * The ownership records in the JetStream KV bucket `ftm-owners`, with a
 * local view kept current by a watch: every host knows every session's
 * primary, standby and epoch, which is what failover and fencing decide on.
 */
export class Ownership {
  /** The latest record of every session, as the watch delivered it. */
  readonly view = new Map<string, Owned>();
  private stopWatch: (() => void) | undefined;

  private constructor(
    private readonly kv: KV,
    private readonly codec: ValueCodec,
  ) {}

  /** Binds to (creates if missing) the bucket. At start-up only: an R3 bucket takes 0.3–0.6 s. */
  static async open(nc: NatsConnection, codec: ValueCodec, replicas = 1): Promise<Ownership> {
    const kv = await new Kvm(nc).create(storeNames.owners, { replicas, history: 1 });
    return new Ownership(kv, codec);
  }

  /**
   * Starts the watch; `onChange` sees every later change (and, once, every
   * record that exists when the watch starts). Resolves once the initial
   * records are in the view.
   */
  async watch(
    onChange: (sid: string, owned: Owned | undefined, previous: Owned | undefined) => void,
  ): Promise<void> {
    const iter = await this.kv.watch({ key: '>' });
    this.stopWatch = () => iter.stop();
    let ready = (): void => undefined;
    const initial = new Promise<void>((r) => (ready = r));
    void (async () => {
      try {
        await this.follow(iter, onChange, ready);
      } catch (err) {
        // The watch ends with the connection; a host being closed does not care.
        this.onWatchError?.(err as Error);
      }
    })();
    // An empty bucket delivers nothing: the watch is live once the first
    // status arrives; bound the wait so an empty bucket does not hang us.
    await Promise.race([initial, new Promise((r) => setTimeout(r, 50))]);
  }

  /** Called when the watch fails (not when it is stopped). */
  onWatchError: ((err: Error) => void) | undefined;

  private async follow(
    iter: AsyncIterable<{
      key: string;
      operation: string;
      value: Uint8Array;
      revision: number;
      delta?: number;
    }>,
    onChange: (sid: string, owned: Owned | undefined, previous: Owned | undefined) => void,
    ready: () => void,
  ): Promise<void> {
    for await (const e of iter) {
      const previous = this.view.get(e.key);
      if (e.operation === 'PUT') {
        const owned = { record: this.codec.decode(e.value) as OwnerRecord, revision: e.revision };
        const known = this.view.get(e.key);
        // The watch and our own writes race: keep the newest revision.
        if (!known || known.revision < owned.revision) this.view.set(e.key, owned);
      } else this.view.delete(e.key);
      onChange(e.key, this.view.get(e.key), previous);
      if (e.delta === 0) ready();
    }
  }

  /** Creates the record of a new session. @throws SessionExistsError when it exists. */
  async create(sid: string, record: OwnerRecord): Promise<number> {
    try {
      const revision = await this.kv.create(sid, this.codec.encode(record));
      this.remember(sid, { record, revision });
      return revision;
    } catch (err) {
      if (isCasConflict(err) || /exists/i.test(String((err as Error).message)))
        throw new SessionExistsError(
          `session ${sid} exists (owned in epoch ${this.view.get(sid)?.record.epoch ?? '?'}): open it under another id, or restore it`,
          { cause: err },
        );
      throw err;
    }
  }

  /** Reads the record from the bucket (not the view). */
  async get(sid: string): Promise<Owned | undefined> {
    const e = await this.kv.get(sid);
    if (!e || e.operation !== 'PUT') return undefined;
    return { record: this.codec.decode(e.value) as OwnerRecord, revision: e.revision };
  }

  /**
   * Replaces the record if it is still at `revision`. Resolves with the new
   * revision, or undefined when someone else changed it first (the CAS lost).
   */
  async swap(sid: string, record: OwnerRecord, revision: number): Promise<number | undefined> {
    try {
      const next = await this.kv.update(sid, this.codec.encode(record), revision, 2_000);
      this.remember(sid, { record, revision: next });
      return next;
    } catch (err) {
      if (isCasConflict(err)) return undefined;
      throw err;
    }
  }

  async delete(sid: string): Promise<void> {
    await this.kv.delete(sid);
  }

  private remember(sid: string, owned: Owned): void {
    const known = this.view.get(sid);
    if (!known || known.revision < owned.revision) this.view.set(sid, owned);
  }

  close(): void {
    this.stopWatch?.();
  }
}
