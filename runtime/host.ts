import { randomBytes } from 'node:crypto';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { ActorDefinition } from './actor.ts';
import { systemClock, type Clock } from './clock.ts';
import { createValueCodec } from './codec.ts';
import {
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
import { decodeFrame, FrameKind } from './wire.ts';
import { SessionMeta, decodeChanges, emptyMeta, type MetaSnapshot } from './session-meta.ts';
import { WorkerPool } from './worker-pool.ts';
import { SessionClient } from './session-client.ts';
import { stateHash } from './state-hash.ts';
import { assertId, subjects } from './subjects.ts';

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
  /** How often pending log frames of async/standby sessions are flushed (default 10 ms). */
  logFlushIntervalMs?: number;
  /** Unacknowledged commits go out again after this long without a commit (default 20 ms). */
  retransmitAfterMs?: number;
  /** Fault injection for tests: drop output frames at this host's standbys. */
  dropAtStandby?: (sid: string, seq: number) => boolean;
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
   * Opens a new session with this host as primary and `standby` as its hot
   * standby; resolves once the standby holds the initial state and the
   * primary takes inputs.
   */
  openSession(
    actor: string,
    sid: string,
    options: { standby: string; init?: unknown },
  ): Promise<SessionInfo>;
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

type ControlRequest = { op: 'attach'; sid: string } & SessionSnapshot;

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
      ? await connectNats(options.nats, { name: `ftm-host-${hostId}` })
      : options.nats;
  const codec = createValueCodec();
  const clock = options.clock ?? systemClock;
  const onError =
    options.onError ??
    ((err: FtmError) =>
      console.error(`[ftmesh ${hostId}] ${err.name}: ${err.message}`, err.cause ?? ''));
  const actors = new Map(options.actors.map((a) => [a.name, a]));
  const sessions = new Map<string, PrimarySession | ReplicaSession>();
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
  const saveSnapshot = async (sid: string, snap: SessionSnapshot) => {
    await snapshots.put(sid, codec.encode(snap));
  };
  const flusher = setInterval(() => {
    const now = clock.now();
    for (const s of sessions.values()) {
      if (s.role === 'primary') s.retransmit(now);
      if (s.role === 'primary' && s.log.hasPending) {
        s.log
          .flush()
          .catch((err: unknown) => onError(new FtmError(`log flush of ${s.sid}`, { cause: err })));
      }
    }
  }, options.logFlushIntervalMs ?? 10);

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
    snapshot: () => control(sid, { op: 'snapshot' }),
    ...(options.dropAtStandby ? { drop: (seq: number) => options.dropAtStandby!(sid, seq) } : {}),
  });
  const startPrimary = (actor: ActorDefinition, sid: string, init: SessionSnapshot) => {
    // The log calls back into the primary it belongs to, created right after it.
    const ref: { primary?: PrimarySession } = {};
    const sessionLog = new SessionLog(
      log,
      sid,
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
        ...(options.retransmitAfterMs ? { retransmitAfterMs: options.retransmitAfterMs } : {}),
      },
    );
    ref.primary = primary;
    primary.listen();
    sessions.set(sid, primary);
    return primary;
  };
  const attachStandby = async (
    standby: string,
    actor: ActorDefinition,
    sid: string,
    init: SessionSnapshot,
  ) => {
    const reply = await nc.request(
      subjects.hostControl(standby),
      codec.encode({ op: 'attach', sid, ...init } satisfies ControlRequest),
      { timeout: 5_000 },
    );
    const answer = codec.decode(reply.data) as { ok?: true; error?: WireError };
    if (answer.error) throw errorFromWire(answer.error);
  };
  const primaryOf = (sid: string): PrimarySession => {
    const s = sessions.get(sid);
    if (s?.role !== 'primary')
      throw new SessionNotFoundError(`host ${hostId} is not the primary of ${sid}`);
    return s;
  };
  const readDurable = async (actorName: string, sid: string) => {
    const actor = actorNamed(actorName);
    const stored = await snapshots.get(sid);
    let snap: SessionSnapshot = stored
      ? (codec.decode(stored) as SessionSnapshot)
      : {
          actor: actorName,
          state: actor.initialState(undefined),
          seq: 0,
          epoch: 1,
          meta: emptyMeta(),
        };
    const runner = new TransitionRunner(actor, sid, () => clock.now());
    const meta = new SessionMeta(snap.meta);
    let state = freeze(snap.state, true);
    let logged = 0;
    for (const bytes of await log.read(sid, snap.seq)) {
      const f = decodeFrame(bytes);
      if (f.kind !== FrameKind.commit || f.seq !== snap.seq + 1) continue;
      const changes = decodeChanges(codec, f.flags, f.patches);
      if (changes.patches.length) state = runner.apply(state, changes.patches);
      meta.recordFrame(f, changes.effects);
      snap = { ...snap, seq: f.seq, epoch: Math.max(snap.epoch, f.epoch) };
      logged++;
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

  const hostControl: Subscription = nc.subscribe(subjects.hostControl(hostId), {
    callback: (_err, msg) => {
      void (async () => {
        try {
          const req = codec.decode(msg.data) as ControlRequest;
          if (req.op !== 'attach')
            throw new InvalidArgumentError(`unknown control op ${JSON.stringify(req.op)}`);
          if (sessions.has(req.sid))
            throw new SessionExistsError(`session ${req.sid} already on host ${hostId}`);
          const replica = new ReplicaSession(
            nc,
            codec,
            actorNamed(req.actor),
            req.sid,
            { ...req, state: freeze(req.state, true) },
            onError,
            replicaSource(req.sid),
          );
          sessions.set(req.sid, replica);
          await replica.start();
          msg.respond(codec.encode({ ok: true }));
        } catch (err) {
          msg.respond(codec.encode({ error: errorToWire(err) }));
        }
      })();
    },
  });
  await nc.flush();

  const serveWithStandby = async (
    actor: ActorDefinition,
    sid: string,
    init: SessionSnapshot,
    standby: string,
  ) => {
    if (standby === hostId)
      throw new InvalidArgumentError(`standby: pick another host than the primary (${hostId})`);
    const primary = startPrimary(actor, sid, init);
    try {
      await attachStandby(standby, actor, sid, init);
    } catch (err) {
      primary.close();
      sessions.delete(sid);
      throw err;
    }
    primary.serve();
    await nc.flush();
    return host.info(sid)!;
  };

  const host: Host = {
    id: hostId,
    async openSession(actorName, sid, opts) {
      if (closed) throw new ClosedError(`host ${hostId} is closed`);
      assertId('sid', sid);
      assertId('hostId', opts?.standby);
      if (opts.standby === hostId)
        throw new InvalidArgumentError(`standby: pick another host than the primary (${hostId})`);
      if (sessions.has(sid))
        throw new SessionExistsError(`session ${sid} is already open on host ${hostId}`);
      const actor = actorNamed(actorName);
      const init = {
        actor: actorName,
        state: freeze(actor.initialState(opts.init), true),
        seq: 0,
        epoch: 1,
        meta: emptyMeta(),
      };
      return serveWithStandby(actor, sid, init, opts.standby);
    },
    async restoreSession(actorName, sid, opts) {
      if (closed) throw new ClosedError(`host ${hostId} is closed`);
      assertId('sid', sid);
      assertId('hostId', opts?.standby);
      if (sessions.has(sid))
        throw new SessionExistsError(`session ${sid} is already open on host ${hostId}`);
      const durable = await readDurable(actorName, sid);
      const init = {
        actor: actorName,
        state: durable.state,
        seq: durable.seq,
        epoch: durable.epoch + 1,
        meta: durable.meta,
      };
      return serveWithStandby(actorNamed(actorName), sid, init, opts.standby);
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
      clearInterval(flusher);
      hostControl.unsubscribe();
      // Let snapshots finish and pending log frames reach JetStream before the sessions stop.
      await Promise.all(
        [...sessions.values()].map((s) =>
          s.role === 'primary'
            ? s.idle().then(() => s.log.flush().catch(() => 0))
            : Promise.resolve(0),
        ),
      );
      for (const s of sessions.values()) s.close();
      for (const c of clients.values()) c.close();
      await Promise.all([...pools.values()].map((p) => p.close()));
      pools.clear();
      sessions.clear();
      clients.clear();
      if (owned) await nc.close();
      else await nc.flush().catch(() => undefined);
    },
    [Symbol.asyncDispose]: () => host.close(),
  };
  return host;
}
