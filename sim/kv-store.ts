import { KvConflictError } from '../runtime/errors.ts';
import type { KvEntry, KvPort } from '../runtime/ports.ts';
import type { SimProcess } from './process.ts';
import type { StoreServer } from './store-server.ts';
import type { World } from './world.ts';

/** One write to a bucket, kept for the invariants (the whole history of every key). */
export type KvWrite = {
  readonly key: string;
  /** Undefined for a purge. */
  readonly value: Uint8Array | undefined;
  readonly revision: number;
  readonly at: number;
  readonly by: SimProcess;
};

/** A watch of one process: delivered up to `cursor`; `stale` once it missed changes (cut off, outage). */
type Watcher = {
  readonly proc: SimProcess;
  readonly onEntry: (e: KvEntry) => void;
  cursor: number;
  stale: boolean;
  stopped: boolean;
  lastDown: number;
};

/**
 * A JetStream KV bucket: one revision sequence for the bucket, create that
 * fails on a key holding a value, update by expected revision, purge, and
 * watches that deliver every key's latest entry and then every change, in
 * order, through each watcher's link. A watcher cut off (or a bucket in an
 * outage) misses changes; once it can be reached again it gets the latest
 * entry of each key it missed, as an ordered consumer resuming does.
 */
export class KvBucket {
  /** Every write, by revision (revision = index + 1). */
  readonly writes: KvWrite[] = [];
  private readonly latest = new Map<string, KvWrite>();
  private readonly watchers: Watcher[] = [];
  /** Called at the server after each write (the invariants and the incarnation tracker). */
  onWrite: ((w: KvWrite, prev: KvWrite | undefined) => void) | undefined;
  /** Called when a watch callback throws: the runtime let an exception escape. */
  onThrow: ((err: unknown) => void) | undefined;

  constructor(
    readonly name: string,
    private readonly world: World,
    readonly server: StoreServer,
  ) {
    server.onOutageEnd = () => this.resync();
  }

  /** The latest write of `key` (value undefined once purged). */
  get(key: string): KvWrite | undefined {
    return this.latest.get(key);
  }

  keys(): string[] {
    return [...this.latest.keys()];
  }

  private write(key: string, value: Uint8Array | undefined, by: SimProcess): number {
    const prev = this.latest.get(key);
    const w: KvWrite = { key, value, revision: this.writes.length + 1, at: this.world.now, by };
    this.writes.push(w);
    this.latest.set(key, w);
    this.onWrite?.(w, prev);
    for (let i = this.watchers.length - 1; i >= 0; i--) {
      const watcher = this.watchers[i]!;
      if (watcher.stopped || watcher.proc.crashed) this.watchers.splice(i, 1);
    }
    for (const watcher of this.watchers) this.notify(watcher, w.revision);
    return w.revision;
  }

  private notify(w: Watcher, upTo: number): void {
    if (w.proc.partitioned || this.server.outage) {
      w.stale = true;
      return;
    }
    w.lastDown = Math.max(this.server.down(w.proc), w.lastDown);
    this.world.at(w.lastDown, () => this.pump(w, upTo), w.proc);
  }

  /** Delivers to `w` what it has not seen up to revision `upTo`. */
  private pump(w: Watcher, upTo: number): void {
    if (w.stopped) return;
    if (w.proc.partitioned || this.server.outage) {
      w.stale = true;
      return;
    }
    const deliver: KvWrite[] = [];
    if (w.stale) {
      for (const e of this.latest.values()) if (e.revision > w.cursor) deliver.push(e);
      deliver.sort((a, b) => a.revision - b.revision);
      w.cursor = this.writes.length;
      w.stale = false;
    } else {
      for (let r = w.cursor + 1; r <= upTo; r++) deliver.push(this.writes[r - 1]!);
      w.cursor = Math.max(w.cursor, upTo);
    }
    for (const e of deliver) {
      if (w.stopped) return;
      try {
        w.onEntry({ key: e.key, value: e.value, revision: e.revision });
      } catch (err) {
        this.onThrow?.(err);
      }
    }
  }

  /** Watchers that missed changes catch up (a partition healed, an outage ended). */
  resync(): void {
    for (const w of this.watchers)
      if (w.stale && !w.stopped && !w.proc.crashed) this.notify(w, this.writes.length);
  }

  /** The KvPort of this bucket as process `proc` reaches it. */
  port(proc: SimProcess): KvPort {
    const server = this.server;
    const entry = (w: KvWrite | undefined): KvEntry | undefined =>
      w && { key: w.key, value: w.value, revision: w.revision };
    return {
      get: (key) => server.op(proc, `get ${key}`, () => entry(this.latest.get(key))),
      create: (key, value) =>
        server.op(proc, `create ${key}`, () => {
          if (this.latest.get(key)?.value) throw new KvConflictError(`${this.name}/${key} exists`);
          return this.write(key, value.slice(), proc);
        }),
      update: (key, value, revision) =>
        server.op(proc, `update ${key}`, () => {
          const cur = this.latest.get(key);
          if (!cur || cur.revision !== revision)
            throw new KvConflictError(`${this.name}/${key} is not at revision ${revision}`);
          return this.write(key, value.slice(), proc);
        }),
      purge: (key) =>
        server.op(proc, `purge ${key}`, () => {
          this.write(key, undefined, proc);
        }),
      watch: (onEntry) =>
        new Promise((resolve, reject) => {
          const issuedAt = this.world.now;
          if (proc.partitioned) return server.timeout(proc, issuedAt, 'watch', reject);
          this.world.atServer(server.up(proc), () => {
            if (server.outage) return server.timeout(proc, issuedAt, 'watch', reject);
            const w: Watcher = {
              proc,
              onEntry,
              cursor: this.writes.length,
              stale: false,
              stopped: false,
              lastDown: server.down(proc),
            };
            const initial = [...this.latest.values()].sort((a, b) => a.revision - b.revision);
            this.watchers.push(w);
            this.world.at(
              w.lastDown,
              () => {
                if (proc.partitioned) {
                  w.stopped = true;
                  return server.timeout(proc, issuedAt, 'watch', reject);
                }
                for (const e of initial) {
                  try {
                    onEntry({ key: e.key, value: e.value, revision: e.revision });
                  } catch (err) {
                    this.onThrow?.(err);
                  }
                }
                resolve({ stop: () => void (w.stopped = true) });
              },
              proc,
            );
          });
        }),
    };
  }
}
