import { Immer, freeze } from 'immer';
import { reservedTypes } from './actor.ts';
import type { ValueCodec } from './codec.ts';
import { FtmError, RequestTimeoutError, NoResponderError, ClosedError } from './errors.ts';
import type { Clock } from './ports.ts';
import type { ReleasedCommit, SessionClient } from './session-client.ts';
import { decodeChanges } from './session-meta.ts';

const immer = new Immer({ autoFreeze: true });

/** How long a failed `$state` request waits before the next try. */
const RESYNC_RETRY_MS = 100;

/**
 * A read-only copy of a session's state outside the mesh, as its clients
 * may see it: only released commits, in seq order, so nothing a failover
 * rolls back ever shows, and nothing is skipped or shown twice across one.
 * It starts from the session's `$state` answer (the state at a seq, released
 * like any reply) and applies every later released commit's patches; a gap
 * in seqs (a lost frame, a new epoch whose history it cannot prove) starts
 * it again from `$state`. The gateway keeps one per session whose actor has
 * a `view`, and derives each client's view from it.
 */
export class SessionMirror {
  /** The state at {@link seq}; undefined until the first `$state` answer. */
  state: object | undefined;
  /** The seq the state is at (-1 before the first answer). */
  seq = -1;
  /** How many times it started again from `$state` (the first time included). */
  resyncs = 0;
  private buffered: ReleasedCommit[] = [];
  private syncing = false;
  private notifyQueued = false;
  private closed = false;
  private retry: unknown;
  private readonly unwatch: () => void;

  private readonly codec: ValueCodec;
  private readonly clock: Clock;

  constructor(
    private readonly client: SessionClient,
    /** Called after the state changed (coalesced: once for the commits of one tick). */
    private readonly onChange: (state: object, seq: number) => void,
    private readonly onError: (err: FtmError) => void,
  ) {
    this.codec = client.codec;
    this.clock = client.clock;
    this.unwatch = client.watchCommits({
      commit: (c) => this.onCommit(c),
      newEpoch: () => this.resync(),
    });
    this.resync();
  }

  private onCommit(c: ReleasedCommit): void {
    if (this.closed) return;
    if (this.syncing) return void this.buffered.push(c);
    if (c.seq <= this.seq) return;
    if (c.seq !== this.seq + 1) {
      this.buffered.push(c);
      return this.resync();
    }
    this.apply(c);
    this.notify();
  }

  private apply(c: ReleasedCommit): void {
    const { patches } = decodeChanges(this.codec, c.flags, c.changes);
    if (patches.length) this.state = immer.applyPatches(this.state!, patches);
    this.seq = c.seq;
  }

  private resync(): void {
    if (this.syncing || this.closed) return;
    this.syncing = true;
    this.resyncs++;
    this.client.request(reservedTypes.state).then(
      (answer) => {
        this.syncing = false;
        if (this.closed) return;
        const a = answer as { seq?: unknown; state?: unknown };
        if (typeof a?.seq !== 'number' || typeof a.state !== 'object' || a.state === null) {
          return this.onError(new FtmError(`${this.client.sid}: $state answered no state`));
        }
        const at = a.seq;
        this.state = freeze(a.state, true);
        this.seq = at;
        const later = this.buffered.filter((c) => c.seq > at).sort((x, y) => x.seq - y.seq);
        this.buffered = [];
        for (const c of later) {
          if (c.seq !== this.seq + 1) {
            this.buffered = later.filter((x) => x.seq > this.seq);
            this.notify();
            return this.resync();
          }
          this.apply(c);
        }
        this.notify();
      },
      (err: unknown) => {
        this.syncing = false;
        if (this.closed || err instanceof ClosedError) return;
        if (!(err instanceof RequestTimeoutError || err instanceof NoResponderError))
          return this.onError(
            new FtmError(`${this.client.sid}: state sync failed: ${(err as Error).message}`, {
              cause: err,
            }),
          );
        this.retry = this.clock.setTimeout(() => this.resync(), RESYNC_RETRY_MS);
      },
    );
  }

  private notify(): void {
    if (this.notifyQueued || this.state === undefined) return;
    this.notifyQueued = true;
    queueMicrotask(() => {
      this.notifyQueued = false;
      if (!this.closed && this.state !== undefined) this.onChange(this.state, this.seq);
    });
  }

  close(): void {
    this.closed = true;
    this.unwatch();
    if (this.retry !== undefined) this.clock.clearTimeout(this.retry);
  }
}
