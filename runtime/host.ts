import { randomBytes } from 'node:crypto';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { ActorDefinition } from './actor.ts';
import { systemClock, type Clock } from './clock.ts';
import { createValueCodec } from './codec.ts';
import {
  CapacityError,
  ClosedError,
  FtmError,
  InvalidArgumentError,
  SessionExistsError,
  SessionNotFoundError,
  UnknownActorError,
  errorFromWire,
  errorToWire,
  type WireError,
} from './errors.ts';
import { freeze } from 'immer';
import { DurableLog, SessionLog } from './durable-log.ts';
import { SnapshotStore } from './snapshot-store.ts';
import { connectNats } from './nats-connect.ts';
import { PrimarySession, type SessionControl, type SessionSnapshot } from './primary-session.ts';
import { ReplicaSession, type ReplicaSource } from './replica-session.ts';
import { TransitionRunner } from './transition.ts';
import { decodeFrame, FrameKind, type CommitFrame } from './wire.ts';
import { SessionMeta, decodeChanges, emptyMeta, type MetaSnapshot } from './session-meta.ts';
import { WorkerPool } from './worker-pool.ts';
import { SessionClient } from './session-client.ts';
import { stateHash } from './state-hash.ts';
import { assertId, subjects } from './subjects.ts';
import { Membership, connectionName, type DownCause, type HostLoad } from './membership.ts';
import { Ownership, type Owned, type OwnerRecord } from './ownership.ts';
import { preciseNow, rendezvous, type FailoverCause, type FailoverRecord } from './failover.ts';

/** Options of {@link createHost}. */
export interface HostOptions {
  /** A NATS URL (or comma-separated URLs), or a connection the caller owns. */
  nats: string | NatsConnection;
  /** The actor types this host can run, as primary or standby. */
  actors: readonly ActorDefinition<any>[];
  /** Default: a random id. Letters, digits, `_` and `-`. */
  hostId?: string;
  clock?: Clock;
  /** Called with every error the host handled without throwing (refused frames, handler errors). */
  onError?: (err: FtmError) => void;
  /** JetStream replicas of the log stream and snapshot bucket: 1 for one server, 3 for a cluster. */
  jetstreamReplicas?: number;
  /** A snapshot every this many commits of a session (default 1000); the log is purged up to it. */
  snapshotEvery?: number;
  /** Or once a session's commits since its last snapshot reach this many bytes (default 4 MiB). */
  snapshotEveryBytes?: number;
  /** How often pending log frames of async/standby sessions are flushed (default 10 ms). */
  logFlushIntervalMs?: number;
  /** Unacknowledged commits go out again after this long without a commit (default 20 ms). */
  retransmitAfterMs?: number;
  /** Fault injection for tests: drop output frames at this host's standbys. */
  dropAtStandby?: (sid: string, seq: number) => boolean;
  /**
   * Most sessions (primaries + standbys) this host takes when sessions are
   * placed (default 10,000); 0 makes it a client that serves nothing.
   */
  capacity?: number;
  /** Heartbeat period (default 5 ms). */
  heartbeatIntervalMs?: number;
  /** A host silent this long is down (default 25 ms). */
  heartbeatTimeoutMs?: number;
  /** Watch the server's disconnect advisories (default true; needs the $SYS import, see infra/). */
  advisories?: boolean;
  /**
   * Take over, restore and re-protect the sessions of hosts found down
   * (default true). False leaves that to other hosts: tests of a manual
   * restore use it.
   */
  failover?: boolean;
  /**
   * Called with one line per ownership decision this host makes (promoted,
   * restored and from what, standby recorded or dropped, fenced): what
   * happened to a session, in order, when a failover went wrong. Off by default.
   */
  trace?: (line: string) => void;
}

/** What {@link Host.drain} moved. */
export interface DrainReport {
  primaries: number;
  standbys: number;
  /** Per moved primary: from inputs stopped to the new primary serving, in ms. */
  handoffMs: number[];
}

/** Another host's copy of a session, from {@link Host.inspect}. */
export interface Inspection {
  info: SessionInfo;
  hash: string;
  meta: MetaSnapshot;
  /** The failovers of this session that host took part in as the new primary. */
  failovers: FailoverRecord[];
}

/** What a host knows of one of its sessions. */
export interface SessionInfo {
  sid: string;
  actor: string;
  role: 'primary' | 'standby';
  epoch: number;
  seq: number;
}

/** A process's share of the mesh: many sessions, each as primary or standby. */
export interface Host {
  readonly id: string;
  /**
   * Opens a new session with this host as primary and `standby` (default:
   * the live host with the most room) as its hot standby; resolves once the
   * standby holds the initial state and the primary takes inputs.
   * @throws SessionExistsError when the session exists anywhere on the mesh
   */
  openSession(
    actor: string,
    sid: string,
    options?: { standby?: string; init?: unknown },
  ): Promise<SessionInfo>;
  /**
   * Opens a new session on the live host with the most room (maybe this
   * one), its standby on another; resolves with the ownership record.
   */
  placeSession(
    actor: string,
    sid: string,
    options?: { init?: unknown; primary?: string; standby?: string },
  ): Promise<OwnerRecord>;
  /**
   * Planned handoff (a deploy, a scale-down): moves every primary of this
   * host to its standby and every standby to another host, then takes no new
   * sessions. Resolves with what moved and how long each handoff took.
   */
  drain(): Promise<DrainReport>;
  /** The failovers this host took part in as the new primary, oldest first. */
  failovers(): readonly FailoverRecord[];
  /** The ownership record of a session as this host last saw it. */
  owner(sid: string): OwnerRecord | undefined;
  /** Live hosts this host hears, itself included. */
  liveHosts(): string[];
  /** Asks another host for its copy of a session: info, hash and meta. */
  inspect(hostId: string, sid: string): Promise<Inspection>;
  /** Asks another host for the failovers it took part in as the new primary. */
  failoversOf(hostId: string): Promise<FailoverRecord[]>;
  /** Asks another host (or this one) to drain: an operator's action before a deploy. */
  drainHost(hostId: string): Promise<DrainReport>;
  /** Sends a request to a session (anywhere on the mesh); resolves with the released reply. */
  request(
    sid: string,
    type: string,
    payload?: unknown,
    options?: { requestId?: string; timeoutMs?: number },
  ): Promise<unknown>;
  /** The client this host uses for `sid` (one per session, created on first use). */
  client(sid: string): SessionClient;
  /** This host's copy of the session's state (primary or standby). */
  state(sid: string): unknown;
  /**
   * Restores a session from its snapshot and log (cold restore, when its
   * primary and standby are gone) and serves it here in the next epoch.
   */
  restoreSession(actor: string, sid: string, options: { standby: string }): Promise<SessionInfo>;
  /** Writes a snapshot of a session this host is primary of, purging the log up to it; resolves with its seq. */
  snapshotNow(sid: string): Promise<number>;
  /** Flushes a primary session's pending log frames; resolves with the highest logged seq. */
  flushLog(sid: string): Promise<number>;
  /** Reads a session's durable state (snapshot + log) without serving it. */
  readDurable(actor: string, sid: string): Promise<SessionSnapshot & { logged: number }>;
  /** Canonical hash of this host's copy of the state. */
  hash(sid: string): string;
  /** This host's copy of the session's runtime meta: dedup table, armed timers, pending jobs. */
  meta(sid: string): MetaSnapshot;
  info(sid: string): SessionInfo | undefined;
  /** Stops every session and subscription; closes the connection if the host opened it. Safe twice. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * `after`: the ownership record's revision as the primary saw it when it
 * asked. A change at or before it is older than the attach: it must not
 * detach the new standby (see the ownership watch).
 */
type ControlRequest =
  | ({ op: 'attach'; sid: string; after: number } & SessionSnapshot)
  | { op: 'sync'; sid: string; actor: string; after: number }
  /** Like attach, for a state above max_payload: it waits in the snapshot store at `seq`. */
  | { op: 'attach-stored'; sid: string; actor: string; seq: number; after: number }
  | {
      op: 'open';
      actor: string;
      sid: string;
      standby?: string;
      standbyHint?: string;
      init?: unknown;
    }
  | { op: 'promote'; sid: string; from: string }
  | { op: 'reprotect'; sid: string; exclude: string[] }
  | { op: 'detach'; sid: string }
  /** The record names the receiver the standby of `sid`, at `revision`. */
  | { op: 'named'; sid: string; revision: number }
  | { op: 'inspect'; sid: string }
  | { op: 'failovers' }
  | { op: 'drain' };

/** The sessions of a host; tells the others at once when the load changes, for placement. */
class SessionMap extends Map<string, PrimarySession | ReplicaSession> {
  onChange: (() => void) | undefined;
  override set(sid: string, s: PrimarySession | ReplicaSession): this {
    super.set(sid, s);
    this.onChange?.();
    return this;
  }
  override delete(sid: string): boolean {
    const had = super.delete(sid);
    if (had) this.onChange?.();
    return had;
  }
}

/**
 * Creates a host on a NATS connection.
 * @example
 * const host = await createHost({ nats: 'nats://127.0.0.1:4222', actors: [counter] });
 */
export async function createHost(options: HostOptions): Promise<Host> {
  const hostId = options.hostId ?? `h-${randomBytes(5).toString('hex')}`;
  assertId('hostId', hostId);
  if (!options.actors?.length)
    throw new InvalidArgumentError('actors: pass at least one actor definition');
  const owned = typeof options.nats === 'string';
  const nc =
    typeof options.nats === 'string'
      ? await connectNats(options.nats, { name: connectionName(hostId) })
      : options.nats;
  const codec = createValueCodec();
  const clock = options.clock ?? systemClock;
  const onError =
    options.onError ??
    ((err: FtmError) =>
      console.error(`[ftmesh ${hostId}] ${err.name}: ${err.message}`, err.cause ?? ''));
  const trace = options.trace ?? (() => undefined);
  const actors = new Map(options.actors.map((a) => [a.name, a]));
  const sessions = new SessionMap();
  const clients = new Map<string, SessionClient>();
  const pools = new Map<string, WorkerPool>();
  const poolFor = (actor: ActorDefinition): WorkerPool | undefined => {
    if (!actor.workers) return undefined;
    let pool = pools.get(actor.name);
    if (!pool)
      pools.set(actor.name, (pool = new WorkerPool(actor.workers.module, actor.workers.size ?? 2)));
    return pool;
  };
  let closed = false;
  const log = await DurableLog.open(nc, options.jetstreamReplicas ?? 1);
  const snapshots = await SnapshotStore.open(nc, {
    replicas: options.jetstreamReplicas ?? 1,
    clock,
    onError,
  });
  /**
   * Stores a snapshot unless one at the same or a later seq is stored (a
   * lagging writer never puts an older state back). Resolves true when the
   * log up to it may be purged: stored, and this host still owns the
   * session in the snapshot's epoch. The purge takes every batch stored
   * before ours, and a successor's first batches may be among them; the
   * compare-and-swap on the record proves there is no successor yet, and any
   * later one writes after our batches.
   */
  const saveSnapshot = async (sid: string, snap: SessionSnapshot): Promise<boolean> => {
    if (!(await snapshots.put(sid, codec.encode(snap), { order: snap.seq }))) return false;
    const owned = await ownership.get(sid);
    if (owned?.record.primary !== hostId || owned.record.epoch !== snap.epoch) return false;
    return (await ownership.swap(sid, owned.record, owned.revision)) !== undefined;
  };
  /** The stored snapshot of `sid`, decoded; undefined when there is none. */
  const storedSnapshot = async (sid: string): Promise<SessionSnapshot | undefined> => {
    const bytes = await snapshots.get(sid);
    return bytes && (codec.decode(bytes) as SessionSnapshot);
  };
  /** Set once the failover machinery below exists; a timer calls it twice a second. */
  const sweep: { heal?: (now: number) => void } = {};
  // Log flushes and retransmissions run on a timer armed only while some
  // primary has frames to log or unacknowledged: an idle host does not wake.
  const flushInterval = options.logFlushIntervalMs ?? 10;
  let flusher: NodeJS.Timeout | undefined;
  const wake = () => {
    if (!flusher && !closed) flusher = setTimeout(flushNow, flushInterval);
  };
  const flushNow = () => {
    flusher = undefined;
    const now = clock.now();
    let busyPrimaries = false;
    for (const s of sessions.values()) {
      if (s.role !== 'primary') continue;
      s.retransmit(now);
      if (s.log.hasPending) {
        s.log
          .flush()
          .catch((err: unknown) => onError(new FtmError(`log flush of ${s.sid}`, { cause: err })));
      }
      if (s.hasUnacked) busyPrimaries = true;
    }
    if (busyPrimaries) wake();
  };

  const control = async (sid: string, req: SessionControl): Promise<any> => {
    const reply = await nc.request(subjects.control(sid), codec.encode(req), { timeout: 2_000 });
    const answer = codec.decode(reply.data) as { error?: WireError };
    if (answer.error) throw errorFromWire(answer.error);
    return answer;
  };
  const replicaSource = (sid: string): ReplicaSource => ({
    async logAfter(seq) {
      await control(sid, { op: 'flush' });
      return log.read(sid, seq);
    },
    async snapshot() {
      const answer = await control(sid, { op: 'snapshot' });
      if (answer.stored === undefined) return answer;
      // Above max_payload: the primary wrote it to the snapshot store instead.
      const stored = await storedSnapshot(sid);
      if (!stored) throw new FtmError(`${sid}: the primary's stored snapshot is gone`);
      return { ...stored, logged: answer.logged };
    },
    ...(options.dropAtStandby ? { drop: (seq: number) => options.dropAtStandby!(sid, seq) } : {}),
  });
  const startPrimary = (
    actor: ActorDefinition,
    sid: string,
    init: SessionSnapshot | (Omit<SessionSnapshot, 'meta'> & { meta: SessionMeta }),
  ) => {
    // The log calls back into the primary it belongs to, created right after it.
    const ref: { primary?: PrimarySession } = {};
    const sessionLog = new SessionLog(
      log,
      sid,
      init.epoch,
      (seq) => ref.primary?.onLogged(seq),
      (err) => onError(new FtmError(`log write of ${sid} failed`, { cause: err })),
    );
    // A new session starts empty and a restored one from the log: either way
    // the log holds everything up to init.seq.
    sessionLog.loggedSeq = init.seq;
    const primary = new PrimarySession(
      nc,
      codec,
      actor,
      sid,
      init,
      () => clock.now(),
      onError,
      sessionLog,
      (snap) => saveSnapshot(sid, snap),
      poolFor(actor),
      {
        ...(options.snapshotEvery ? { snapshotEvery: options.snapshotEvery } : {}),
        ...(options.snapshotEveryBytes ? { snapshotEveryBytes: options.snapshotEveryBytes } : {}),
        ...(options.retransmitAfterMs ? { retransmitAfterMs: options.retransmitAfterMs } : {}),
      },
    );
    ref.primary = primary;
    primary.onWork = wake;
    primary.onFenced = (epoch) => fenced(sid, primary, epoch);
    primary.listen();
    sessions.set(sid, primary);
    return primary;
  };
  const request = async (to: string, req: ControlRequest, timeoutMs = 5_000): Promise<any> => {
    const reply = await nc.request(subjects.hostControl(to), codec.encode(req), {
      timeout: timeoutMs,
    });
    const answer = codec.decode(reply.data) as { error?: WireError };
    if (answer.error) throw errorFromWire(answer.error);
    return answer;
  };
  /**
   * Makes `standby` a hot standby of `sid`. With `init` (a new or restored
   * session, not serving yet) the state travels in the request, or through
   * the snapshot store when it is too big for one NATS message; without it
   * the standby subscribes first and then fetches the primary's snapshot, so
   * a session that keeps serving loses no commit to it.
   */
  const attachStandby = async (
    standby: string,
    actor: ActorDefinition,
    sid: string,
    init: SessionSnapshot | undefined,
  ) => {
    const after = ownership.view.get(sid)?.revision ?? 0;
    const sync: ControlRequest = { op: 'sync', sid, actor: actor.name, after };
    if (!init) return void (await request(standby, sync));
    const attach: ControlRequest = { op: 'attach', sid, ...init, after };
    const fits = codec.encode(attach).length <= (nc.info?.max_payload ?? 1024 * 1024) - 1024;
    if (fits) return void (await request(standby, attach));
    // Stored at its seq (already there when a restore read exactly this snapshot).
    await snapshots.put(sid, codec.encode(init), { order: init.seq });
    const stored: ControlRequest = {
      op: 'attach-stored',
      sid,
      actor: actor.name,
      seq: init.seq,
      after,
    };
    await request(standby, stored);
  };

  const primaryOf = (sid: string): PrimarySession => {
    const s = sessions.get(sid);
    if (s?.role !== 'primary')
      throw new SessionNotFoundError(`host ${hostId} is not the primary of ${sid}`);
    return s;
  };
  /**
   * Reads a session's durable state: the latest snapshot plus the log after
   * it. Frames a fenced primary logged after its successor took over are
   * void: a frame does not count when a later epoch starts at or before its seq.
   */
  const readDurable = async (actorName: string, sid: string) => {
    const actor = actorNamed(actorName);
    let snap: SessionSnapshot;
    let frames: CommitFrame[];
    for (let attempt = 0; ; attempt++) {
      snap = (await storedSnapshot(sid)) ?? {
        actor: actorName,
        state: actor.initialState(undefined),
        seq: 0,
        epoch: 1,
        meta: emptyMeta(),
      };
      frames = [];
      for (const bytes of await log.read(sid, snap.seq)) {
        const f = decodeFrame(bytes);
        if (f.kind === FrameKind.commit) frames.push(f);
      }
      // A newer snapshot was written and the log purged up to it between our two reads: again.
      const first = Math.min(...frames.map((f) => f.seq));
      if (!(frames.length && first > snap.seq + 1 && attempt < 3)) break;
    }
    const epochStarts = new Map<number, number>();
    for (const f of frames)
      if (!(f.seq >= (epochStarts.get(f.epoch) ?? Infinity))) epochStarts.set(f.epoch, f.seq);
    const voided = (f: CommitFrame) => {
      for (const [e, start] of epochStarts) if (e > f.epoch && start <= f.seq) return true;
      return false;
    };
    // One valid frame per seq; an old epoch's last batch may have been logged after the new one's first.
    const bySeq = new Map<number, CommitFrame>();
    for (const f of frames) if (!voided(f)) bySeq.set(f.seq, f);
    const runner = new TransitionRunner(actor, sid, () => clock.now());
    const meta = new SessionMeta(snap.meta);
    let state = freeze(snap.state, true);
    let logged = 0;
    for (let f = bySeq.get(snap.seq + 1); f; f = bySeq.get(snap.seq + 1)) {
      const changes = decodeChanges(codec, f.flags, f.patches);
      if (changes.patches.length) state = runner.apply(state, changes.patches);
      meta.recordFrame(f, changes.effects);
      snap = { ...snap, seq: f.seq, epoch: Math.max(snap.epoch, f.epoch) };
      logged++;
    }
    if (options.trace) {
      const valid = [...bySeq.keys()];
      trace(
        `${sid}: durable read: snapshot seq ${snap.seq - logged} epoch ${snap.epoch}, ` +
          `${frames.length} frames (${frames.length - valid.length} void or repeated), ` +
          `seqs ${Math.min(...valid)}..${Math.max(...valid)}, contiguous to ${snap.seq}`,
      );
    }
    return { ...snap, state, meta: meta.snapshot(), logged };
  };

  const actorNamed = (name: string): ActorDefinition => {
    const a = actors.get(name);
    if (!a)
      throw new UnknownActorError(
        `actor ${JSON.stringify(name)} is not registered on host ${hostId}`,
      );
    return a;
  };
  const session = (sid: string) => {
    const s = sessions.get(sid);
    if (!s) throw new SessionNotFoundError(`session ${sid} is not on host ${hostId}`);
    return s;
  };

  // ---- membership, ownership, failover --------------------------------------------------

  const capacity = options.capacity ?? 10_000;
  let draining = false;
  const history: FailoverRecord[] = [];
  /** Sessions being promoted, restored or re-protected here: one change at a time per session. */
  const busy = new Map<string, object>();
  /** Marks `sid` busy with a change concerning `by` (the session object it works on). */
  const claim = (sid: string, by: object) => busy.set(sid, by);
  /** Ends the change `by` made; a later change of the same session keeps its mark. */
  const release = (sid: string, by: object) => {
    if (busy.get(sid) === by) busy.delete(sid);
  };
  /** A change of a primary copy fenced since (its re-protection, say) no longer counts. */
  const isBusy = (sid: string) => {
    const by = busy.get(sid);
    return by !== undefined && !(by instanceof PrimarySession && by.isFenced);
  };
  const load = (): HostLoad => {
    let primaries = 0;
    for (const s of sessions.values()) if (s.role === 'primary') primaries++;
    return { primaries, standbys: sessions.size - primaries, capacity, draining };
  };

  /**
   * Changes a session's record by compare-and-swap; gives up when `change`
   * returns undefined. Resolves with the record written and its revision.
   */
  const updateRecord = async (
    sid: string,
    change: (r: OwnerRecord) => OwnerRecord | undefined,
  ): Promise<Owned | undefined> => {
    let owned = ownership.view.get(sid) ?? (await ownership.get(sid));
    for (let attempt = 0; owned && attempt < 5; attempt++) {
      const next = change(owned.record);
      if (!next) return undefined;
      const revision = await ownership.swap(sid, next, owned.revision);
      if (revision !== undefined) return { record: next, revision };
      owned = await ownership.get(sid);
    }
    return undefined;
  };

  /**
   * Tells a standby that the record now names it (at `revision`), over core
   * NATS: it acknowledges from then on. Its ownership watch would tell it
   * too, but that is a JetStream consumer, re-created for seconds when a
   * NATS node dies; the replies must not wait for it.
   */
  const tellNamed = (standby: string, sid: string, revision: number) => {
    if (standby && standby !== hostId)
      request(standby, { op: 'named', sid, revision }).catch(() => undefined);
  };

  /**
   * Drops this host's standby copy that the record no longer names. What it
   * acknowledged may have been released while the primary's log lagged: it
   * is logged first, or a crash of the primary now would leave a restore
   * without it.
   */
  const dropCopy = (sid: string, s: ReplicaSession) => {
    const kept = s.unlogged();
    s.close();
    if (sessions.get(sid) === s) sessions.delete(sid);
    trace(
      `${sid}: standby copy at seq ${s.seq} dropped, the record no longer names it; ${kept ? `${kept.frames.length} kept frames above ${kept.logged} logged` : 'kept frames incomplete'}`,
    );
    if (kept?.frames.length)
      log
        .writeKept(sid, kept.frames, hostId)
        .catch((err: unknown) =>
          onError(new FtmError(`${sid}: logging the dropped standby's frames`, { cause: err })),
        );
  };

  const fenced = (sid: string, primary: PrimarySession, epoch: number) => {
    if (sessions.get(sid) === primary) sessions.delete(sid);
    trace(
      `${sid}: epoch ${primary.epoch} fenced by epoch ${epoch} at seq ${primary.seq}, logged ${primary.log.loggedSeq}, released ${primary.standbyAcked}`,
    );
    if (!draining && !closed)
      onError(
        new FtmError(
          `${sid}: epoch ${epoch} exists, this host stopped serving epoch ${primary.epoch}`,
        ),
      );
  };

  const pickStandby = (exclude: Iterable<string>): string | undefined =>
    membership.pick(new Set([hostId, ...exclude]));

  /** Refuses a new session or standby beyond this host's capacity. */
  const assertRoom = () => {
    const l = load();
    if (closed || draining || l.primaries + l.standbys >= capacity)
      throw new CapacityError(
        `host ${hostId} takes no more sessions (${l.primaries + l.standbys} of ${capacity}${draining ? ', draining' : ''})`,
      );
  };

  /**
   * Attaches a standby on `wanted`, or on the live host with the most room;
   * a host that refuses (full, gone) is skipped for the next. Resolves with
   * the standby, or undefined when no host took it.
   */
  const attachSomewhere = async (
    actor: ActorDefinition,
    sid: string,
    init: SessionSnapshot | undefined,
    exclude: string[],
    wanted?: string,
    /** `wanted` is a hint: when it refuses, try the others instead of failing. */
    hint = false,
    /** Stop trying when this turns true (the primary was fenced meanwhile). */
    stop: () => boolean = () => false,
  ): Promise<string | undefined> => {
    const tried = new Set(exclude);
    for (let attempt = 0; attempt < 4 && !stop(); attempt++) {
      const standby = attempt === 0 && wanted ? wanted : pickStandby(tried);
      if (!standby) return undefined;
      try {
        await attachStandby(standby, actor, sid, init);
        return standby;
      } catch (err) {
        if (attempt === 0 && wanted && !hint) throw err;
        onError(new FtmError(`${sid}: standby ${standby} refused`, { cause: err }));
        tried.add(standby);
      }
    }
    return undefined;
  };

  /**
   * Gives a primary a (new) hot standby: attaches it with the current state
   * and records it. Without a live host with room the session goes on
   * unprotected: the log stands in for the standby.
   */
  const protect = async (
    primary: PrimarySession,
    exclude: Iterable<string>,
  ): Promise<string | undefined> => {
    const old = primary.standbyHost;
    const standby = await attachSomewhere(
      primary.actor,
      primary.sid,
      undefined,
      [...exclude],
      undefined,
      false,
      () => primary.isFenced,
    );
    // The record changes first: only a standby the record names may release replies.
    const recorded = await updateRecord(primary.sid, (r) =>
      r.primary === hostId && r.epoch === primary.epoch && r.standby === old
        ? { ...r, standby: standby ?? '' }
        : undefined,
    );
    // Not recorded: the copy we attached is nobody's standby. Recorded but
    // fenced since: it is the newer epoch's business (maybe that very standby
    // took over), so it stays.
    if (!recorded) {
      if (standby) request(standby, { op: 'detach', sid: primary.sid }).catch(() => undefined);
      return undefined;
    }
    if (primary.isFenced) return undefined;
    primary.standbyHost = standby ?? '';
    if (standby) tellNamed(standby, primary.sid, recorded.revision);
    trace(
      `${primary.sid}: epoch ${primary.epoch} standby ${standby || 'none'} recorded at seq ${primary.seq}`,
    );
    if (old && old !== standby && membership.isLive(old))
      request(old, { op: 'detach', sid: primary.sid }).catch(() => undefined);
    return standby;
  };

  // Self-healing, twice a second: a primary left without a standby (no host
  // had room, or its attach failed) tries again; a failover the event missed
  // (the record changed under it, an attempt gave up) is started again.
  let lastHeal = 0;
  sweep.heal = (now) => {
    if (now - lastHeal < 500 || closed || draining || options.failover === false) return;
    lastHeal = now;
    for (const [sid, { record }] of ownership.view) {
      if (!membership.down.has(record.primary) || isBusy(sid)) continue;
      const mine = sessions.get(sid);
      if (mine?.role === 'standby' && record.standby === hostId) {
        if (promoting.has(sid)) continue;
        onError(
          new FtmError(`${sid}: primary ${record.primary} is down and not replaced: promoting`),
        );
        promoteOnDown(sid, membership.down.get(record.primary)!, preciseNow(), record.primary);
      } else if (!mine) restoreIfChosen(sid, record, preciseNow());
    }
    for (const s of sessions.values()) {
      if (s.role !== 'primary' || s.standbyHost || s.isFenced || isBusy(s.sid)) continue;
      claim(s.sid, s);
      void protect(s, [])
        .catch((err: unknown) => onError(new FtmError(`${s.sid}: re-protection`, { cause: err })))
        .finally(() => release(s.sid, s));
    }
  };

  /**
   * The standby is gone: record that the session has none, and only then let
   * the log stand in for it. The order matters: were the standby only
   * thought gone (a false detection), it may be promoting itself right now;
   * the compare-and-swap lets exactly one of the two changes through, so a
   * primary never releases on its own log while another copy serves.
   */
  const unprotect = async (primary: PrimarySession): Promise<boolean> => {
    const standby = primary.standbyHost;
    // A standby the record stops naming drops its copy: what it acknowledged
    // (released to clients) must be in the log first, or a crash of this
    // host right after would lose it.
    await primary.log.flush();
    const done = await updateRecord(primary.sid, (r) =>
      r.primary === hostId && r.epoch === primary.epoch && r.standby === standby
        ? { ...r, standby: '' }
        : undefined,
    );
    if (!done || primary.isFenced) return false;
    primary.standbyHost = '';
    trace(
      `${primary.sid}: epoch ${primary.epoch} standby ${standby} dropped at seq ${primary.seq}, logged ${primary.log.loggedSeq}`,
    );
    return true;
  };

  /**
   * A promoted primary whose replica could not say what the old primary's
   * log lacks: its frames wait until a snapshot at its first seq covers the
   * gap, and only then does that seq count as logged. Slower than writing
   * the kept frames (a whole state instead of a few frames), and rare.
   */
  const coverWithSnapshot = (primary: PrimarySession, cover: SessionSnapshot) => {
    primary.log.loggedSeq = 0;
    // Retried while JetStream elects a leader (a NATS node may have died too).
    const covered = (async () => {
      for (let attempt = 0; ; attempt++) {
        try {
          return await saveSnapshot(primary.sid, cover);
        } catch (err) {
          if (closed || primary.isFenced || attempt >= 10) throw err;
          await new Promise((r) => setTimeout(r, Math.min(100 * 2 ** attempt, 5_000)).unref());
        }
      }
    })();
    primary.log.hold(covered);
    covered.then(
      () => {
        primary.log.loggedSeq = Math.max(primary.log.loggedSeq, cover.seq);
        primary.onLogged(cover.seq);
      },
      (err: unknown) =>
        onError(new FtmError(`${primary.sid}: snapshot after promotion`, { cause: err })),
    );
  };

  /**
   * Takes over a session this host is the standby of, in epoch + 1. Only the
   * compare-and-swap on the ownership record decides: exactly one winner.
   */
  const promote = async (
    sid: string,
    cause: FailoverCause,
    detectedAt: number,
    from: string,
  ): Promise<FailoverRecord | undefined> => {
    const replica = sessions.get(sid);
    if (replica?.role !== 'standby' || isBusy(sid)) return undefined;
    claim(sid, replica);
    let owned: Owned | undefined;
    try {
      owned = await updateRecord(sid, (r) =>
        r.primary === from && r.standby === hostId
          ? { ...r, primary: hostId, standby: '', epoch: Math.max(r.epoch, replica.epoch) + 1 }
          : undefined,
      );
    } finally {
      if (!owned) release(sid, replica);
    }
    // Lost: a copy the record stopped naming while we tried (the watch left
    // it alone, busy as it was) goes now.
    const now = ownership.view.get(sid);
    if (
      !owned &&
      sessions.get(sid) === replica &&
      now &&
      now.record.standby !== hostId &&
      now.revision > replica.attachedAfter
    )
      dropCopy(sid, replica);
    if (!owned || sessions.get(sid) !== replica) {
      release(sid, replica);
      if (owned)
        onError(
          new FtmError(
            `${sid}: epoch ${owned.record.epoch} recorded for this host, but its copy went meanwhile`,
          ),
        );
      return undefined;
    }
    const epoch = owned.record.epoch;
    // From here on, in one synchronous block: the state we start from (the
    // replica's own objects, handed over without a copy), the frames the old
    // primary's log may lack, and the inputs no commit covered, queued until
    // the primary serves.
    const init = {
      actor: replica.actor.name,
      state: replica.state,
      seq: replica.seq,
      epoch,
      meta: replica.meta,
    };
    const unlogged = replica.unlogged();
    // Without those frames only a snapshot at init.seq can cover the gap: taken now, before serving.
    const cover = unlogged ? undefined : { ...init, meta: init.meta.snapshot() };
    const rec: FailoverRecord = {
      sid,
      cause,
      from,
      to: hostId,
      epoch,
      seq: init.seq,
      detectedAt,
      promotedAt: preciseNow(),
      replayed: 0,
    };
    const queued: Uint8Array[] = [];
    const handover: { to?: PrimarySession } = {};
    const inputs = replica.takeOver((bytes) =>
      handover.to ? handover.to.onInput(bytes) : queued.push(bytes),
    );
    const primary = startPrimary(replica.actor, sid, init);
    // From here the change concerns the new primary: fenced, it no longer holds the session up.
    claim(sid, primary);
    // No standby yet: the log stands in for it (replies wait for the log's
    // ack), and the log must have no hole. The old primary may not have
    // logged its last frames: the replica kept them, and they go first.
    if (unlogged) {
      primary.log.resumeAfter(unlogged.logged, unlogged.frames);
      wake();
    } else coverWithSnapshot(primary, cover!);
    primary.onNextReply = (at) => (rec.firstReplyAt = at);
    primary.serve();
    handover.to = primary;
    for (const bytes of inputs) primary.onInput(bytes);
    for (const bytes of queued) primary.onInput(bytes);
    rec.replayed = inputs.length + queued.length;
    rec.replayedAt = preciseNow();
    history.push(rec);
    trace(
      `${sid}: promoted to epoch ${epoch} at seq ${init.seq} (${cause}, from ${from}); ` +
        (unlogged
          ? `log complete to ${unlogged.logged}, ${unlogged.frames.length} kept frames first`
          : 'log covered by a snapshot') +
        `; ${rec.replayed} inputs replayed`,
    );
    // The replica's input subscription goes once ours is on the server (after
    // this flush); then two copies again: a new standby subscribes, then
    // fetches the state while we serve.
    void nc
      .flush()
      .then(() => replica.close())
      .then(() => protect(primary, [from]))
      .then((standby) => {
        rec.standby = standby ?? '';
        if (standby) rec.reprotectedAt = preciseNow();
      })
      .catch((err: unknown) => onError(new FtmError(`${sid}: re-protection`, { cause: err })))
      .finally(() => release(sid, primary));
    return rec;
  };

  /** Sessions this host is restoring: one attempt loop each. */
  const restoring = new Set<string>();
  /**
   * Primary and standby are both gone: restore from snapshot + log, if this
   * host is the one chosen. Only on the server's word (the disconnect
   * advisory), never on missed heartbeats alone: a restore from the log
   * would drop what a live standby acknowledged, so a slow host must not
   * trigger one.
   */
  const restoreIfChosen = (sid: string, record: OwnerRecord, detectedAt: number) => {
    if (!actors.has(record.actor) || capacity === 0 || draining || isBusy(sid)) return;
    const gone = (id: string) => {
      const how = membership.down.get(id);
      return how === 'advisory' || how === 'leave';
    };
    if (!gone(record.primary) || (record.standby && !gone(record.standby))) return;
    const candidates = [hostId];
    for (const [id, peer] of membership.peers)
      if (peer.load.capacity > 0 && !peer.load.draining) candidates.push(id);
    if (rendezvous(sid, candidates) !== hostId || restoring.has(sid)) return;
    restoring.add(sid);
    // JetStream may be electing a leader (a NATS node died too): try again
    // while the record still names the dead copies.
    void (async () => {
      for (let attempt = 0; attempt < 8 && !closed; attempt++) {
        try {
          await restore(record.actor, sid, 'restore', detectedAt);
          return;
        } catch (err) {
          onError(
            new FtmError(`${sid}: cold restore failed, attempt ${attempt + 1}`, { cause: err }),
          );
        }
        await new Promise((r) => setTimeout(r, 500 * 2 ** Math.min(attempt, 4)).unref());
        const now = ownership.view.get(sid)?.record;
        if (!now || now.epoch !== record.epoch || now.primary !== record.primary) return;
      }
    })().finally(() => restoring.delete(sid));
  };

  const restore = async (
    actorName: string,
    sid: string,
    cause: FailoverCause,
    detectedAt: number,
    standbyWanted?: string,
  ): Promise<FailoverRecord | undefined> => {
    if (isBusy(sid)) return undefined;
    const mark = {};
    claim(sid, mark);
    try {
      const before = ownership.view.get(sid)?.record ?? (await ownership.get(sid))?.record;
      const durable = await readDurable(actorName, sid);
      const epoch = Math.max(durable.epoch, before?.epoch ?? 0) + 1;
      const next = { actor: actorName, primary: hostId, standby: '', epoch };
      // The whole record must be as we judged it: a standby recorded since
      // (our view lagged) may have acknowledged commits the log lacks, and
      // it is the one to take over.
      const claimed = before
        ? await updateRecord(sid, (r) =>
            r.epoch === before.epoch && r.primary === before.primary && r.standby === before.standby
              ? next
              : undefined,
          )
        : await ownership.create(sid, next).then(() => next);
      if (!claimed) return undefined;
      // A copy of ours the record never named (an attach cut short) goes: we serve now.
      const stale = sessions.get(sid);
      if (stale?.role === 'standby') {
        stale.close();
        sessions.delete(sid);
      }
      const rec: FailoverRecord = {
        sid,
        cause,
        from: before?.primary ?? '',
        to: hostId,
        epoch,
        seq: durable.seq,
        detectedAt,
        promotedAt: preciseNow(),
        replayed: 0,
      };
      trace(
        `${sid}: restored to epoch ${epoch} at seq ${durable.seq} (${cause}, record was ${JSON.stringify(before)})`,
      );
      const primary = startPrimary(actorNamed(actorName), sid, {
        actor: actorName,
        state: durable.state,
        seq: durable.seq,
        epoch,
        meta: durable.meta,
      });
      primary.onNextReply = (at) => (rec.firstReplyAt = at);
      const exclude = [before?.primary ?? '', before?.standby ?? ''];
      const wanted = standbyWanted && standbyWanted !== hostId ? standbyWanted : undefined;
      const standby = await attachSomewhere(
        primary.actor,
        sid,
        primary.snapshot(),
        exclude,
        wanted,
      );
      if (standby) primary.standbyHost = standby;
      primary.serve();
      rec.replayedAt = preciseNow();
      const named = await updateRecord(sid, (r) =>
        r.primary === hostId && r.epoch === epoch
          ? { ...r, standby: primary.standbyHost }
          : undefined,
      );
      if (named) tellNamed(primary.standbyHost, sid, named.revision);
      rec.standby = primary.standbyHost;
      if (standby) rec.reprotectedAt = preciseNow();
      history.push(rec);
      await nc.flush();
      return rec;
    } finally {
      release(sid, mark);
    }
  };

  /** Sessions this host is trying to promote itself for: one attempt loop each. */
  const promoting = new Set<string>();
  /**
   * Promotes this host's standby copy of `sid` now that `dead` is gone. A
   * CAS that times out (JetStream electing) is tried again; a lost one is
   * final. So is a session still busy here with an earlier change (this
   * host's re-protection of it, from when it was primary): once that ends,
   * promote.
   */
  const promoteOnDown = (sid: string, cause: DownCause, at: number, dead: string) => {
    if (promoting.has(sid)) return;
    promoting.add(sid);
    void (async () => {
      for (let attempt = 0, waits = 0; attempt < 8 && !closed;) {
        try {
          if (await promote(sid, cause, at, dead)) return;
          const now = ownership.view.get(sid)?.record;
          if (!isBusy(sid) || now?.primary !== dead || now.standby !== hostId) return;
          if (++waits > 300) return; // 30 s
          await new Promise((r) => setTimeout(r, 100).unref());
          continue;
        } catch (err) {
          onError(new FtmError(`${sid}: promotion failed, attempt ${attempt + 1}`, { cause: err }));
        }
        await new Promise((r) => setTimeout(r, Math.min(50 * 2 ** attempt, 2_000)).unref());
        attempt++;
      }
    })().finally(() => promoting.delete(sid));
  };

  /** A host is gone: take over what it served, restore what has no copy left, re-protect. */
  const onHostDown = (dead: string, cause: DownCause, at: number) => {
    if (closed || options.failover === false) return;
    trace(`host ${dead} down (${cause})`);
    for (const [sid, { record }] of ownership.view) {
      const mine = sessions.get(sid);
      if (record.primary === dead) {
        if (record.standby === hostId && mine?.role === 'standby') {
          promoteOnDown(sid, cause, at, dead);
        } else {
          if (record.standby === hostId)
            onError(
              new FtmError(
                `${sid}: primary ${dead} is down and the record names this host its standby, ` +
                  `but this host holds ${mine ? `a ${mine.role} copy` : 'no copy'}`,
              ),
            );
          restoreIfChosen(sid, record, at);
        }
      } else if (record.standby === dead) {
        if (record.primary === hostId && mine?.role === 'primary' && !isBusy(sid)) {
          claim(sid, mine);
          void unprotect(mine)
            .then((ok) => (ok ? protect(mine, [dead]) : undefined))
            .catch((err: unknown) =>
              onError(new FtmError(`${sid}: re-protection failed`, { cause: err })),
            )
            .finally(() => release(sid, mine));
        } else {
          restoreIfChosen(sid, record, at);
        }
      }
    }
  };

  const ownership = await Ownership.open(nc, codec, options.jetstreamReplicas ?? 1);
  ownership.onWatchError = (err) => {
    if (!closed) onError(new FtmError(`ownership watch ended: ${err.message}`, { cause: err }));
  };
  /** The record, newer than the attach of `replica`, names this host its standby. */
  const namesStandby = (owned: Owned, replica: ReplicaSession) =>
    owned.record.standby === hostId &&
    owned.record.primary !== hostId &&
    owned.revision > replica.attachedAfter;
  await ownership.watch((sid, owned, previous) => {
    const s = sessions.get(sid);
    // A newer epoch elsewhere: this copy is no longer the primary.
    if (s?.role === 'primary' && owned && owned.record.epoch > s.epoch) s.fence(owned.record.epoch);
    if (s?.role === 'standby' && owned && namesStandby(owned, s)) s.confirm();
    // Replaced as the standby (the primary took us for gone): stop acknowledging at
    // once, so that only the standby the record names releases replies. Unless
    // the change is older than our attach: the primary may have attached us
    // again before this watch delivered its earlier removal of us.
    const r = owned?.record;
    if (
      s?.role === 'standby' &&
      previous?.record.standby === hostId &&
      r?.standby !== hostId &&
      r?.primary !== hostId &&
      !isBusy(sid) &&
      (owned?.revision ?? Infinity) > s.attachedAfter
    ) {
      dropCopy(sid, s);
    }
  });
  const servers = typeof options.nats === 'string' ? options.nats : nc.getServer();
  const membership = new Membership(nc, servers.split(','), codec, hostId, load, onHostDown, {
    ...(options.heartbeatIntervalMs ? { heartbeatIntervalMs: options.heartbeatIntervalMs } : {}),
    ...(options.heartbeatTimeoutMs ? { heartbeatTimeoutMs: options.heartbeatTimeoutMs } : {}),
    ...(options.advisories === undefined ? {} : { advisories: options.advisories }),
  });

  // ---- control requests from other hosts --------------------------------------------------

  const serveControl = async (req: ControlRequest): Promise<object> => {
    switch (req.op) {
      case 'attach':
      case 'attach-stored':
      case 'sync': {
        let init: SessionSnapshot | undefined = req.op === 'attach' ? req : undefined;
        if (req.op === 'attach-stored') {
          init = await storedSnapshot(req.sid);
          if (init?.seq !== req.seq)
            throw new FtmError(
              `${req.sid}: the stored snapshot is at seq ${init?.seq ?? 'none'}, not ${req.seq}`,
            );
        }
        if (sessions.has(req.sid))
          throw new SessionExistsError(`session ${req.sid} already on host ${hostId}`);
        assertRoom();
        const replica = new ReplicaSession(
          nc,
          codec,
          actorNamed(req.actor),
          req.sid,
          init && { ...init, state: freeze(init.state, true) },
          onError,
          replicaSource(req.sid),
        );
        replica.attachedAfter = req.after ?? 0;
        sessions.set(req.sid, replica);
        const owned = ownership.view.get(req.sid);
        if (owned && namesStandby(owned, replica)) replica.confirm();
        try {
          await replica.start();
        } catch (err) {
          replica.close();
          if (sessions.get(req.sid) === replica) sessions.delete(req.sid);
          throw err;
        }
        return { ok: true };
      }
      case 'open':
        return {
          info: await openHere(req.actor, req.sid, {
            ...(req.standby ? { standby: req.standby } : {}),
            ...(req.standbyHint ? { standbyHint: req.standbyHint } : {}),
            init: req.init,
          }),
        };
      case 'promote': {
        const rec = await promote(req.sid, 'drain', preciseNow(), req.from);
        if (!rec) throw new FtmError(`${req.sid}: not promoted on ${hostId}`);
        return { record: rec };
      }
      case 'reprotect': {
        const primary = primaryOf(req.sid);
        return { standby: (await protect(primary, req.exclude)) ?? '' };
      }
      case 'named': {
        const s = sessions.get(req.sid);
        if (s?.role === 'standby' && req.revision > s.attachedAfter) s.confirm();
        return { ok: true };
      }
      case 'detach': {
        const s = sessions.get(req.sid);
        // A copy being promoted stays: its compare-and-swap decides, not the request.
        if (s?.role === 'standby' && !isBusy(req.sid)) {
          s.close();
          sessions.delete(req.sid);
        }
        return { ok: true };
      }
      case 'inspect':
        return {
          info: host.info(req.sid) ?? session(req.sid),
          hash: host.hash(req.sid),
          meta: host.meta(req.sid),
          failovers: history.filter((f) => f.sid === req.sid),
        };
      case 'failovers':
        return { failovers: history };
      case 'drain':
        return { report: await host.drain() };
      default:
        throw new InvalidArgumentError(
          `unknown control op ${JSON.stringify((req as { op: unknown }).op)}`,
        );
    }
  };
  const hostControl: Subscription = nc.subscribe(subjects.hostControl(hostId), {
    callback: (_err, msg) => {
      void (async () => {
        try {
          msg.respond(codec.encode(await serveControl(codec.decode(msg.data) as ControlRequest)));
        } catch (err) {
          try {
            msg.respond(codec.encode({ error: errorToWire(err) }));
          } catch {
            // The connection is closing: nobody is left to answer.
          }
        }
      })();
    },
  });
  await nc.flush();
  await membership.start();
  sessions.onChange = () => membership.beatNow();
  // The sweep starts once the host is up (ownership and membership exist).
  const healer = setInterval(() => sweep.heal?.(clock.now()), 500);

  const serveWithStandby = async (
    actor: ActorDefinition,
    sid: string,
    init: SessionSnapshot,
    standby: string | undefined,
  ) => {
    const primary = startPrimary(actor, sid, init);
    primary.standbyHost = standby ?? '';
    primary.serve();
    await nc.flush();
    return host.info(sid)!;
  };

  const openHere = async (
    actorName: string,
    sid: string,
    opts: { standby?: string; standbyHint?: string; init?: unknown },
  ): Promise<SessionInfo> => {
    if (closed) throw new ClosedError(`host ${hostId} is closed`);
    assertId('sid', sid);
    if (opts.standby !== undefined) assertId('hostId', opts.standby);
    if (opts.standby === hostId)
      throw new InvalidArgumentError(`standby: pick another host than the primary (${hostId})`);
    if (sessions.has(sid) || (await ownership.get(sid)))
      throw new SessionExistsError(
        `session ${sid} exists: open it under another id, or restore it`,
      );
    const actor = actorNamed(actorName);
    assertRoom();
    const init = {
      actor: actorName,
      state: freeze(actor.initialState(opts.init), true),
      seq: 0,
      epoch: 1,
      meta: emptyMeta(),
    };
    const standby = await attachSomewhere(
      actor,
      sid,
      init,
      [],
      opts.standby ?? opts.standbyHint,
      opts.standby === undefined,
    );
    try {
      const revision = await ownership.create(sid, {
        actor: actorName,
        primary: hostId,
        standby: standby ?? '',
        epoch: 1,
      });
      if (standby) tellNamed(standby, sid, revision);
    } catch (err) {
      if (standby) request(standby, { op: 'detach', sid }).catch(() => undefined);
      throw err;
    }
    return serveWithStandby(actor, sid, init, standby);
  };

  const host: Host = {
    id: hostId,
    openSession: (actorName, sid, opts = {}) => openHere(actorName, sid, opts),
    async placeSession(actorName, sid, opts = {}) {
      assertId('sid', sid);
      const open = {
        init: opts.init,
        ...(opts.standby ? { standby: opts.standby } : {}),
      };
      const tried = new Set<string>();
      for (let attempt = 0; ; attempt++) {
        const self =
          capacity > 0 && actors.has(actorName) && !tried.has(hostId) ? load() : undefined;
        const primary = attempt === 0 && opts.primary ? opts.primary : membership.pick(tried, self);
        if (!primary)
          throw new CapacityError(
            `no live host has room for ${sid}: start a host or raise its capacity`,
          );
        // The pair is chosen from one view, so that the last free slots pair up.
        const standby =
          opts.standby ??
          membership.pick(
            new Set([primary]),
            capacity > 0 && primary !== hostId ? load() : undefined,
          );
        const here = {
          ...open,
          ...(standby && !opts.standby ? { standbyHint: standby } : {}),
        };
        try {
          if (primary === hostId) await openHere(actorName, sid, here);
          else await request(primary, { op: 'open', actor: actorName, sid, ...here });
          return ownership.view.get(sid)?.record ?? (await ownership.get(sid))!.record;
        } catch (err) {
          // A full host: try the next one. Anything else is the caller's to see.
          if ((err as FtmError).code !== 'capacity' || opts.primary || attempt >= 4) throw err;
          tried.add(primary);
        }
      }
    },
    async restoreSession(actorName, sid, opts) {
      if (closed) throw new ClosedError(`host ${hostId} is closed`);
      assertId('sid', sid);
      assertId('hostId', opts?.standby);
      if (sessions.has(sid))
        throw new SessionExistsError(`session ${sid} is already open on host ${hostId}`);
      actorNamed(actorName);
      const rec = await restore(actorName, sid, 'restore', preciseNow(), opts.standby);
      if (!rec) throw new FtmError(`${sid}: another host restored or took it over first`);
      return host.info(sid)!;
    },
    async drain() {
      draining = true;
      membership.beatNow();
      const report: DrainReport = { primaries: 0, standbys: 0, handoffMs: [] };
      for (const s of [...sessions.values()]) {
        if (s.role !== 'primary') continue;
        const started = preciseNow();
        if (!s.standbyHost) await protect(s, []);
        const to = s.standbyHost;
        if (!to) {
          onError(new FtmError(`${s.sid}: no host to hand over to; it stays here`));
          continue;
        }
        s.stopInputs();
        await s.standbyCaughtUp();
        try {
          const { record } = (await request(to, { op: 'promote', sid: s.sid, from: hostId })) as {
            record: FailoverRecord;
          };
          s.fence(record.epoch);
          report.primaries++;
          report.handoffMs.push(preciseNow() - started);
        } catch (err) {
          onError(
            new FtmError(`${s.sid}: handoff to ${to} failed; serving it here again`, {
              cause: err,
            }),
          );
          s.resumeInputs();
        }
      }
      for (const s of [...sessions.values()]) {
        if (s.role !== 'standby') continue;
        const primary = ownership.view.get(s.sid)?.record.primary;
        if (!primary) continue;
        try {
          await request(primary, { op: 'reprotect', sid: s.sid, exclude: [hostId] });
          report.standbys++;
        } catch (err) {
          onError(new FtmError(`${s.sid}: moving its standby away failed`, { cause: err }));
        }
      }
      return report;
    },
    failovers: () => history,
    owner: (sid) => ownership.view.get(sid)?.record,
    liveHosts: () => [hostId, ...membership.peers.keys()].sort(),
    async drainHost(other) {
      if (other === hostId) return host.drain();
      return ((await request(other, { op: 'drain' }, 60_000)) as { report: DrainReport }).report;
    },
    async failoversOf(other) {
      return ((await request(other, { op: 'failovers' })) as { failovers: FailoverRecord[] })
        .failovers;
    },
    async inspect(other, sid) {
      return (await request(other, { op: 'inspect', sid })) as Inspection;
    },
    snapshotNow: (sid) => primaryOf(sid).snapshotNow(),
    flushLog: (sid) => primaryOf(sid).log.flush(),
    readDurable,
    client(sid) {
      assertId('sid', sid);
      let c = clients.get(sid);
      if (!c) clients.set(sid, (c = new SessionClient(nc, codec, sid)));
      return c;
    },
    async request(sid, type, payload, opts) {
      const c = host.client(sid);
      return c.request(type, payload, opts);
    },
    state: (sid) => session(sid).state,
    hash: (sid) => stateHash(session(sid).state),
    meta: (sid) => session(sid).meta.snapshot(),
    info(sid) {
      const s = sessions.get(sid);
      return s && { sid, actor: s.actor.name, role: s.role, epoch: s.epoch, seq: s.seq };
    },
    // Shutdown order: stop taking control requests and inputs, then let go of the connection.
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(healer);
      clearTimeout(flusher);
      // Not a drain, but no request is lost: primaries stop taking inputs (their
      // standbys keep them), let the standby and the log catch up, then say
      // goodbye so that the standbys take over at once instead of after a timeout.
      const primaries = [...sessions.values()].filter((s) => s.role === 'primary');
      for (const s of primaries) s.stopInputs();
      const settled = Promise.all(
        primaries.map((s) =>
          Promise.all([s.standbyHost ? s.standbyCaughtUp() : 0, s.idle()]).then(() =>
            s.log.flush().catch(() => 0),
          ),
        ),
      );
      // Bounded: a standby or a JetStream that does not answer must not hold the shutdown.
      await Promise.race([settled, new Promise((r) => setTimeout(r, 2_000).unref())]);
      for (const s of primaries) s.log.discard();
      await membership.stop();
      ownership.close();
      hostControl.unsubscribe();
      for (const s of sessions.values()) s.close();
      for (const c of clients.values()) c.close();
      await Promise.all([...pools.values()].map((p) => p.close()));
      pools.clear();
      sessions.clear();
      clients.clear();
      // close() alone drops publishes not yet written (the last acks): flush first.
      await Promise.race([
        nc.flush().catch(() => undefined),
        new Promise((r) => setTimeout(r, 1_000).unref()),
      ]);
      if (owned) await nc.close();
      else await nc.flush().catch(() => undefined);
    },
    [Symbol.asyncDispose]: () => host.close(),
  };
  return host;
}
