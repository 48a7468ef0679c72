import type { ValueCodec } from './codec.ts';
import { compareAndSwap } from './compare-and-swap.ts';
import type { KvPort } from './ports.ts';
import { apply, parseOwnerRecord, type OwnerChange, type OwnerRecord } from './ownership-record.ts';

export type { OwnerRecord, OwnerChange };

/** A record with the KV revision a compare-and-swap must name. */
export type Owned = { record: OwnerRecord; revision: number };

/** What {@link Ownership.change} did. */
export type ChangeResult =
  { ok: true; owned: Owned } | { ok: false; reason: string; owned: Owned | undefined };

/**
 * The ownership records (KV `ftm-owners`), with a local view kept current
 * by a watch, and an index of the sessions each host is named in. Every
 * write goes through the pure {@link apply} and a compare-and-swap on the
 * revision it was computed from.
 */
export class Ownership {
  /** The latest record of every session, as the watch (or our own writes) delivered it. */
  readonly view = new Map<string, Owned>();
  /** host id → the sessions whose record names it (primary or standby). */
  private readonly byHost = new Map<string, Set<string>>();
  private stopWatch: (() => void) | undefined;

  constructor(
    private readonly kv: KvPort,
    private readonly codec: ValueCodec,
    /** Records that do not decode: dropped and counted, never in the view. */
    private readonly onMalformed: (key: string, err: unknown) => void,
  ) {}

  /**
   * Starts the watch; `onChange` sees every later change of a session's
   * record. Resolves once the records that existed when it started are in
   * the view (the watch's own signal, not a delay).
   */
  async watch(onChange: (sid: string) => void, onError: (err: Error) => void): Promise<void> {
    const w = await this.kv.watch((e) => {
      let owned: Owned | undefined;
      if (e.value) {
        try {
          owned = { record: parseOwnerRecord(this.codec.decode(e.value)), revision: e.revision };
        } catch (err) {
          return this.onMalformed(e.key, err);
        }
      }
      const known = this.view.get(e.key);
      // The watch and our own writes race: keep the newest revision.
      if (known && known.revision >= e.revision) return;
      this.set(e.key, owned);
      onChange(e.key);
    }, onError);
    this.stopWatch = () => w.stop();
  }

  /** Sessions whose record names `host`, as primary or standby. */
  namedIn(host: string): ReadonlySet<string> {
    return this.byHost.get(host) ?? new Set();
  }

  /** Reads the record from the store (not the view); refreshes the view with it. */
  async get(sid: string): Promise<Owned | undefined> {
    const e = await this.kv.get(sid);
    if (!e?.value) return undefined;
    const owned = { record: parseOwnerRecord(this.codec.decode(e.value)), revision: e.revision };
    this.remember(sid, owned);
    return owned;
  }

  /**
   * Applies `change` to the record and writes it by compare-and-swap. A lost
   * swap reads the record again and applies the change to it: the change
   * either still holds (it lands) or is refused with the reason. A refusal
   * is only ever decided on a record read from the store: one the view
   * refuses is read again first (the view may lag). `fresh` reads the store
   * before the first try too.
   */
  async change(
    sid: string,
    change: OwnerChange,
    opts: { fresh?: boolean } = {},
  ): Promise<ChangeResult> {
    const r = await compareAndSwap(
      this.kv,
      sid,
      opts.fresh ? undefined : this.view.get(sid),
      () => this.get(sid),
      (record) => apply(record, change),
      (record) => this.codec.encode(record),
    );
    if (!r.ok) return { ok: false, reason: r.reason, owned: r.stored };
    this.remember(sid, r.stored);
    return { ok: true, owned: r.stored };
  }

  /** Removes a session's record and its history (tests and tools only: a close keeps a tombstone). */
  async purge(sid: string): Promise<void> {
    await this.kv.purge(sid);
    this.set(sid, undefined);
  }

  private remember(sid: string, owned: Owned): void {
    const known = this.view.get(sid);
    if (!known || known.revision < owned.revision) this.set(sid, owned);
  }

  private set(sid: string, owned: Owned | undefined): void {
    const before = this.view.get(sid)?.record;
    for (const h of [before?.primary, before?.standby]) if (h) this.byHost.get(h)?.delete(sid);
    if (owned) this.view.set(sid, owned);
    else this.view.delete(sid);
    for (const h of [owned?.record.primary, owned?.record.standby]) {
      if (!h) continue;
      let set = this.byHost.get(h);
      if (!set) this.byHost.set(h, (set = new Set()));
      set.add(sid);
    }
  }

  close(): void {
    this.stopWatch?.();
  }
}
