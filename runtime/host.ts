import { freeze } from 'immer';
import type { NatsConnection } from '@nats-io/transport-node';
import type { ActorDefinition } from './actor.ts';
import { systemClock, type Clock } from './clock.ts';
import { createValueCodec } from './codec.ts';
import { ControlChannel, type ControlRequest } from './control-channel.ts';
import { isPrimary } from './copy-status.ts';
import { Drain, type DrainReport } from './drain.ts';
import { DroppedMessages } from './dropped-messages.ts';
import { readDurable, type DurableState } from './durable-state.ts';
import {
  ClosedError,
  FtmError,
  InvalidArgumentError,
  SessionExistsError,
  SessionNotFoundError,
} from './errors.ts';
import type { FailoverRecord } from './failover.ts';
import { FailoverCoordinator } from './failover-coordinator.ts';
import type { HostContext, HostTuning } from './host-context.ts';
import { workerLiveness, type Liveness } from './liveness.ts';
import { LogFlusher } from './log-flusher.ts';
import { Membership, connectionName, livenessConnectionName } from './membership.ts';
import {
  meshClient,
  systemRandom,
  type HostStatus,
  type Inspection,
  type MeshClient,
  type SessionInfo,
} from './mesh-client.ts';
import { connectNats } from './nats-connect.ts';
import { natsKv, natsLog } from './nats-stores.ts';
import { natsTransport } from './nats-transport.ts';
import { Ownership, type OwnerRecord } from './ownership.ts';
import type { PhiAccrualOptions } from './phi-accrual.mjs';
import { PauseGuard } from './pause-guard.ts';
import { Placement } from './placement.ts';
import type { KvPort, LogPort, Random, SnapshotPort, Transport } from './ports.ts';
import { fenceCopy, startPrimary } from './primaries.ts';
import type { SessionSnapshot } from './primary-session.ts';
import { Promotion } from './promotion.ts';
import { Protection } from './protection.ts';
import { ReplicaManager } from './replica-manager.ts';
import { Restore } from './restore.ts';
import { backoffMs, retryPolicies, sleep } from './retry.ts';
import { SerialQueues } from './serial-queue.ts';
import { SessionCopies } from './session-copies.ts';
import { emptyMeta, type MetaSnapshot } from './session-meta.ts';
import { SnapshotStore } from './snapshot-store.ts';
import { stateHash } from './state-hash.ts';
import { assertId, storeNames } from './subjects.ts';
import { WorkerPool } from './worker-pool.ts';

export type { DrainReport, Inspection, SessionInfo, HostStatus };

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
  /** JetStream replicas of the log stream and the buckets: 1 for one server, 3 for a cluster. */
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
   * placed (default 10,000).
   */
  capacity?: number;
  /** Heartbeat period (default 5 ms). */
  heartbeatIntervalMs?: number;
  /**
   * The shortest silence of a host that raises a suspicion (default 15 ms);
   * the phi-accrual detector waits longer when the host's beats are irregular,
   * and a probe (5 ms) confirms it before the host is declared dead.
   */
  heartbeatTimeoutMs?: number;
  /** The detector's other settings (see phi-accrual.mjs). */
  detector?: PhiAccrualOptions;
  /** A probe unanswered this long confirms a suspicion (default 5 ms). */
  probeTimeoutMs?: number;
  /** Watch the server's disconnect advisories (default true; needs the $SYS import, see infra/). */
  advisories?: boolean;
  /**
   * Take over, restore and re-protect the sessions of hosts found dead
   * (default true). False leaves that to other hosts: tests of a manual
   * restore use it.
   */
  failover?: boolean;
  /** Primary and standby must be dead by verdict this long before a restore (default 1,000 ms). */
  restoreGraceMs?: number;
  /**
   * A drain's hand-off of one primary waits this long for its standby to
   * catch up and take over, then serves here again (default 5,000 ms).
   */
  handOffTimeoutMs?: number;
  /** A copy attached but not named by the record this long is dropped (default 10,000 ms). */
  unnamedCopyMs?: number;
  /**
   * Called with one line per ownership decision this host makes (promoted,
   * restored and from what, standby named or dropped, fenced, verdicts).
   * Off by default.
   */
  trace?: (line: string) => void;
}

/** A process's share of the mesh: many sessions, each as primary or standby. It is a mesh client too. */
export interface Host extends MeshClient {
  readonly id: string;
  /**
   * Opens a new session with this host as primary and `standby` (default:
   * a live partner host with room) as its hot standby; resolves once the
   * standby holds the initial state and the primary takes inputs.
   * @throws SessionExistsError when the session exists anywhere on the mesh
   */
  openSession(
    actor: string,
    sid: string,
    options?: { standby?: string; init?: unknown },
  ): Promise<SessionInfo>;
  /**
   * Planned hand-off (a deploy, a scale-down): moves every primary of this
   * host to its standby and every standby to another host, then takes no new
   * sessions. Bounded by `deadlineMs` (default 30 s).
   */
  drain(deadlineMs?: number): Promise<DrainReport>;
  /** The failovers this host took part in as the new primary, oldest first. */
  failovers(): readonly FailoverRecord[];
  /**
   * Restores a session from its snapshot and log (cold restore, when its
   * primary and standby are gone) and serves it here in the next epoch.
   */
  restoreSession(actor: string, sid: string, options?: { standby?: string }): Promise<SessionInfo>;
  /** Writes a snapshot of a session this host is primary of, purging the log up to it; resolves with its seq. */
  snapshotNow(sid: string): Promise<number>;
  /** Flushes a primary session's pending log frames; resolves with the highest logged seq. */
  flushLog(sid: string): Promise<number>;
  /** Reads a session's durable state (snapshot + log) without serving it. */
  readDurable(actor: string, sid: string): Promise<DurableState>;
  /** This host's copy of the session's state (primary or standby). */
  state(sid: string): unknown;
  /** Canonical hash of this host's copy of the state. */
  hash(sid: string): string;
  /** This host's copy of the session's runtime meta: dedup table, armed timers, pending jobs. */
  meta(sid: string): MetaSnapshot;
  info(sid: string): SessionInfo | undefined;
  /** This host's own status (what `hostStatus` asks another host for). */
  status(): HostStatus;
  /** Stops every session and subscription; closes the connection if the host opened it. Safe twice. */
  close(): Promise<void>;
}

/** The ports a host runs on: NATS in production ({@link createHost}), fakes in the simulator. */
export type HostPorts = {
  transport: Transport;
  ownersKv: KvPort;
  hostsKv: KvPort;
  log: LogPort;
  snapshots: SnapshotPort;
  liveness: Liveness;
  clock: Clock;
  random: Random;
  dropped: DroppedMessages;
  /** Called last by close(): the binding lets go of its connection. */
  release?: () => Promise<void>;
};

/**
 * Creates a host on a NATS connection.
 * @example
 * const host = await createHost({ nats: 'nats://127.0.0.1:4222', actors: [counter] });
 */
export async function createHost(options: HostOptions): Promise<Host> {
  const hostId = options.hostId ?? `h-${systemRandom.hex(5)}`;
  assertId('hostId', hostId);
  if (!options.actors?.length)
    throw new InvalidArgumentError('actors: pass at least one actor definition');
  const owned = typeof options.nats === 'string';
  const nc =
    typeof options.nats === 'string'
      ? await connectNats(options.nats, { name: connectionName(hostId) })
      : options.nats;
  const clock = options.clock ?? systemClock;
  const onError = options.onError ?? defaultOnError(hostId);
  const dropped = new DroppedMessages(clock, onError);
  const replicas = options.jetstreamReplicas ?? 1;
  const [ownersKv, hostsKv, log, snapshots] = await Promise.all([
    natsKv(nc, storeNames.owners, replicas),
    natsKv(nc, storeNames.hosts, replicas),
    natsLog(nc, replicas),
    SnapshotStore.open(nc, { replicas, clock, onError }),
  ]);
  const servers = typeof options.nats === 'string' ? options.nats : nc.getServer();
  const liveness = workerLiveness(servers.split(','), hostId, livenessConnectionName(hostId), {
    ...(options.heartbeatIntervalMs ? { heartbeatIntervalMs: options.heartbeatIntervalMs } : {}),
    ...(options.heartbeatTimeoutMs ? { minSilenceMs: options.heartbeatTimeoutMs } : {}),
    ...(options.detector ? { detector: options.detector } : {}),
  });
  // The main connection's state reaches the liveness worker: a host cut off
  // from its sessions' subjects must not answer probes for them.
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'disconnect') liveness.setConnected(false);
      else if (s.type === 'reconnect') liveness.setConnected(true);
    }
  })().catch(() => undefined);
  void nc.closed().then(() => liveness.setConnected(false));
  const host = await startHost(
    {
      transport: natsTransport(nc, dropped),
      ownersKv,
      hostsKv,
      log,
      snapshots,
      liveness,
      clock,
      random: systemRandom,
      dropped,
      release: async () => {
        // close() alone drops publishes not yet written (the last acks): flush first.
        await Promise.race([
          nc.flush().catch(() => undefined),
          new Promise((r) => setTimeout(r, 1_000).unref()),
        ]);
        if (owned) await nc.close();
      },
    },
    { ...options, hostId, onError },
  );
  // A connection closed under the host (by its owner, or for good) leaves it
  // nothing to do: it stops instead of retrying into a closed connection.
  void nc.closed().then(() => host.close());
  return host;
}

const defaultOnError = (hostId: string) => (err: FtmError) =>
  console.error(
    `[ftmesh ${hostId}] ${err.name}: ${err.message}${err.cause instanceof Error ? ` (${err.cause.message})` : ''}`,
  );

/**
 * Starts a host on the given ports: joins the membership, watches the
 * records, serves control requests, and from then on reconciles its sessions
 * with the records (PROTOCOL.md).
 */
export async function startHost(
  ports: HostPorts,
  options: Omit<HostOptions, 'nats'> & { hostId: string },
): Promise<Host> {
  const { hostId, clock, random } = { ...options, ...ports };
  assertId('hostId', hostId);
  const onError = options.onError ?? defaultOnError(hostId);
  const trace = options.trace ?? (() => undefined);
  const codec = createValueCodec();
  const dropped = ports.dropped;
  // Not a member until it joined: it acts on no record before (PROTOCOL.md, verdicts).
  const state = { closed: false, draining: false, dead: true };
  const copies = new SessionCopies(() => clock.now());
  const queues = new SerialQueues();
  const pools = new Map<string, WorkerPool>();
  const history: FailoverRecord[] = [];
  const capacity = options.capacity ?? 10_000;
  const tuning: HostTuning = {
    restoreGraceMs: options.restoreGraceMs ?? 1_000,
    unnamedCopyMs: options.unnamedCopyMs ?? 10_000,
    requestTimeoutMs: 5_000,
    handOffTimeoutMs: options.handOffTimeoutMs ?? 5_000,
    failover: options.failover ?? true,
  };
  const ownership = new Ownership(ports.ownersKv, codec, (key, err) =>
    dropped.drop(`$KV.${storeNames.owners}.${key}`, err),
  );
  const watched = new Set<string>();
  const membership = new Membership(
    {
      kv: ports.hostsKv,
      transport: ports.transport,
      codec,
      clock,
      random,
      dropped,
      onError,
      trace,
    },
    hostId,
    {
      ...(options.advisories === undefined ? {} : { advisories: options.advisories }),
      ...(options.probeTimeoutMs ? { probeTimeoutMs: options.probeTimeoutMs } : {}),
    },
    (host) => watched.has(host),
    () => !state.dead && !state.closed,
  );
  const flusher = new LogFlusher(copies, clock, options.logFlushIntervalMs ?? 10, onError);
  // After a pause (SIGSTOP, a frozen VM), sessions hold everything until this
  // host re-read its own record: declared dead meanwhile, it serves nothing more.
  const pauseGuard: PauseGuard = new PauseGuard(clock, () => {
    trace('paused: holding sessions until the membership record is re-read');
    void (async () => {
      for (let attempt = 0; !state.closed; attempt++) {
        try {
          await membership.refreshSelf();
          // Declared dead: onSelfDead fenced everything; the rejoin releases the guard.
          if (state.dead) return;
          pauseGuard.release();
          trace('alive after the pause: sessions go on');
          for (const c of copies.values()) (c.primary ?? c.replica)?.goOn();
          return;
        } catch (err) {
          onError(new FtmError("re-reading this host's record after a pause", { cause: err }));
          await sleep(clock, backoffMs(retryPolicies.failover, Math.min(attempt, 6)));
        }
      }
    })();
  });
  const sessionDeps = {
    transport: ports.transport,
    codec,
    clock,
    onError,
    dropped: (subject: string, err: unknown) => dropped.drop(subject, err),
    suspended: () => pauseGuard.suspended(),
  };
  const coordinatorRef: { c?: FailoverCoordinator } = {};
  const ctx: HostContext = {
    hostId,
    transport: ports.transport,
    codec,
    clock,
    random,
    log: ports.log,
    snapshots: ports.snapshots,
    ownership,
    membership,
    placement: new Placement(() => clock.now()),
    copies,
    queues,
    control: new ControlChannel(ports.transport, codec),
    dropped,
    actors: new Map(options.actors.map((a) => [a.name, a])),
    capacity,
    primaryOptions: {
      ...(options.snapshotEvery ? { snapshotEvery: options.snapshotEvery } : {}),
      ...(options.snapshotEveryBytes ? { snapshotEveryBytes: options.snapshotEveryBytes } : {}),
      ...(options.retransmitAfterMs ? { retransmitAfterMs: options.retransmitAfterMs } : {}),
    },
    tuning,
    history,
    onError,
    trace,
    dropAtStandby: options.dropAtStandby,
    state,
    sessionDeps,
    poolFor(actor) {
      if (!actor.workers) return undefined;
      let pool = pools.get(actor.name);
      if (!pool)
        pools.set(
          actor.name,
          (pool = new WorkerPool(actor.workers.module, actor.workers.size ?? 2)),
        );
      return pool;
    },
    wake: () => flusher.wake(),
    reconcile: (sid) => coordinatorRef.c?.schedule(sid),
  };
  const replicas = new ReplicaManager(ctx);
  const protection = new Protection(ctx);
  const promotion = new Promotion(ctx, replicas);
  const restorer = new Restore(ctx, replicas);
  const coordinator = new FailoverCoordinator(ctx, replicas, protection, promotion, restorer);
  coordinatorRef.c = coordinator;
  const drainer = new Drain(ctx, protection);

  // ---- failure watching: only the hosts this one shares a session with ----------------
  let watchScheduled = false;
  const refreshWatch = () => {
    if (watchScheduled) return;
    watchScheduled = true;
    queueMicrotask(() => {
      watchScheduled = false;
      watched.clear();
      for (const copy of copies.values()) {
        const r = ownership.view.get(copy.sid)?.record;
        if (!r) continue;
        const other = isPrimary(copy.status)
          ? r.standby
          : copy.status.type === 'standby'
            ? r.primary
            : '';
        if (other && other !== hostId) watched.add(other);
      }
      ports.liveness.watch([...watched]);
      ports.liveness.setBeating(copies.size > 0);
      membership.reportLoad(copies.load(capacity, state.draining));
    });
  };
  membership.latestLoad = () => copies.load(capacity, state.draining);
  copies.onChange = refreshWatch;
  ports.liveness.onSuspect = (host, at) => {
    membership
      .confirm(host, 'heartbeat', at)
      .catch((err: unknown) =>
        onError(new FtmError(`confirming that ${host} is gone`, { cause: err })),
      );
  };

  // ---- this host declared dead: stop serving at once, join again as new ----------------
  membership.onSelfDead = () => {
    if (state.dead || state.closed) return;
    state.dead = true;
    for (const copy of [...copies.values()]) {
      if (copy.primary && isPrimary(copy.status))
        fenceCopy(ctx, copy, 'this host was declared dead');
      else if (copy.replica) replicas.drop(copy, 'this host was declared dead');
    }
    void rejoin().catch((err: unknown) =>
      onError(new FtmError('joining again failed', { cause: err })),
    );
  };
  /**
   * Waits until no record names this host (its sessions moved on), bounded,
   * then joins as a new incarnation: a copy of its old self can never serve.
   */
  /**
   * Waits (at most `boundMs`) while ownership records still name this host
   * and another live host could move them: its standbys promote, its
   * sessions are restored, on the verdict against its old incarnation. With
   * nobody else alive there is nothing to wait for; and what is still named
   * after the wait, this host settles itself (asks a live standby to take
   * over, or restores; see the coordinator).
   */
  const namedNoMore = async (boundMs: number) => {
    const end = clock.now() + boundMs;
    const named = () =>
      [...ownership.namedIn(hostId)].some((sid) => !ownership.view.get(sid)?.record.closed);
    const othersAlive = () => membership.liveHosts().some((h) => h !== hostId);
    while (!state.closed && clock.now() < end && named() && othersAlive()) await sleep(clock, 100);
  };
  const rejoin = async () => {
    await namedNoMore(2_000);
    // Joining again is retried (the store may be electing a leader) until it lands or the host closes.
    for (let attempt = 0; !state.closed; attempt++) {
      const incarnation = random.hex(6);
      try {
        ports.liveness.setIncarnation(incarnation);
        await membership.join(copies.load(capacity, state.draining), incarnation);
        state.dead = false;
        // A pause that led to the verdict held the sessions: the new incarnation holds none yet.
        pauseGuard.release();
        trace(`joined again as incarnation ${incarnation}`);
        for (const sid of ownership.namedIn(hostId)) coordinator.schedule(sid);
        return;
      } catch (err) {
        onError(new FtmError(`joining again failed (attempt ${attempt + 1})`, { cause: err }));
        await sleep(clock, backoffMs(retryPolicies.failover, Math.min(attempt, 6)));
      }
    }
  };

  // ---- control requests from other hosts ---------------------------------------------
  const session = (sid: string) => {
    const c = copies.get(sid);
    if (!c) throw new SessionNotFoundError(`session ${sid} is not on host ${hostId}`);
    return c;
  };
  const primaryCopy = (sid: string) => {
    const c = copies.get(sid);
    if (!c?.primary || c.status.type !== 'primary')
      throw new SessionNotFoundError(`host ${hostId} is not the primary of ${sid}`);
    return c;
  };
  const info = (sid: string): SessionInfo | undefined => {
    const c = copies.get(sid);
    return (
      c && {
        sid,
        actor: c.actor.name,
        role: c.role,
        status: c.status.type,
        epoch: c.epoch,
        seq: c.seq,
      }
    );
  };
  const status = (): HostStatus => ({
    id: hostId,
    incarnation: membership.incarnation,
    sessions: [...copies.values()].map((c) => info(c.sid)!),
    dropped: dropped.snapshot(),
    falseSuspicions: membership.falseSuspicions,
    failovers: history.length,
  });
  const serveControl = async (req: ControlRequest): Promise<object> => {
    if (state.dead && ['attach', 'attach-stored', 'sync', 'open', 'take-over'].includes(req.op))
      throw new ClosedError(`host ${hostId} was declared dead and is joining again`);
    switch (req.op) {
      case 'attach':
      case 'attach-stored':
      case 'sync':
        return queues.run(req.sid, () => replicas.attach(req));
      case 'named':
        return queues.run(req.sid, () => replicas.named(req));
      case 'detach':
        return queues.run(req.sid, () => replicas.detach(req));
      case 'open':
        return {
          record: await openHere(req.actor, req.sid, {
            ...(req.standby ? { standby: req.standby } : {}),
            ...(req.standbyHint ? { standbyHint: req.standbyHint } : {}),
            init: req.init,
          }),
        };
      case 'take-over':
        return queues.run(req.sid, async () => {
          const copy = copies.get(req.sid);
          if (!copy?.replica || copy.status.type !== 'standby')
            throw new SessionNotFoundError(`host ${hostId} holds no standby of ${req.sid}`);
          const record = await promotion.promote(
            copy,
            req.from,
            req.cause,
            clock.now(),
            req.expectLast,
          );
          if (!record) throw new FtmError(`${req.sid}: not taken over on ${hostId}`);
          return { record };
        });
      case 'reprotect':
        return queues.run(req.sid, async () => ({
          standby: (await protection.protect(primaryCopy(req.sid), { exclude: req.exclude })) ?? '',
        }));
      case 'close':
        await closeHere(req.sid);
        return { ok: true };
      case 'inspect': {
        const c = session(req.sid);
        return {
          info: info(req.sid),
          hash: stateHash(c.state),
          meta: c.meta!.snapshot(),
          failovers: history.filter((f) => f.sid === req.sid),
        };
      }
      case 'failovers':
        return { failovers: history };
      case 'drain':
        return { report: await drainer.drain() };
      case 'status':
        return status();
    }
  };

  // ---- opening and closing sessions ----------------------------------------------------
  const openHere = (
    actorName: string,
    sid: string,
    opts: { standby?: string; standbyHint?: string; init?: unknown },
  ) =>
    queues.run(sid, async (): Promise<OwnerRecord> => {
      if (state.closed) throw new ClosedError(`host ${hostId} is closed`);
      assertId('sid', sid);
      if (opts.standby !== undefined) assertId('hostId', opts.standby);
      if (opts.standby === hostId)
        throw new InvalidArgumentError(`standby: pick another host than the primary (${hostId})`);
      const existing = copies.has(sid) ? undefined : await ownership.get(sid);
      if (copies.has(sid) || (existing && !existing.record.closed))
        throw new SessionExistsError(
          `session ${sid} exists: open it under another id, or restore it`,
        );
      const actor = replicas.actorNamed(actorName);
      replicas.assertRoom();
      if (existing?.record.closed) await ports.snapshots.delete(sid);
      const epoch = existing ? existing.record.epoch + 1 : 1;
      const init: SessionSnapshot = {
        actor: actorName,
        state: freeze(actor.initialState(opts.init), true),
        seq: 0,
        epoch,
        meta: emptyMeta(),
      };
      const wanted = opts.standby ?? opts.standbyHint;
      const standby = await protection.attachSomewhere(
        actor,
        sid,
        init,
        [],
        wanted ? { host: wanted, hint: opts.standby === undefined } : undefined,
      );
      const r = await ownership.change(sid, {
        type: 'open',
        actor: actorName,
        primary: hostId,
        standby: standby ?? '',
      });
      if (!r.ok) {
        if (standby) protection.detach(standby, sid);
        throw new SessionExistsError(`session ${sid} exists: ${r.reason}`);
      }
      if (standby) protection.tellNamed(standby, sid, r.owned.revision, r.owned.record.term);
      const copy = copies.add(sid, actor, {
        type: 'primary',
        standby: standby ?? '',
        term: r.owned.record.term,
      });
      const primary = startPrimary(ctx, copy, actor, init, {
        type: 'new-epoch',
        from: 0,
        logged: 0,
        kept: [],
      });
      primary.setStandby(standby ?? '', r.owned.record.term);
      primary.serve();
      await ports.transport.flush();
      return r.owned.record;
    });

  const closeHere = (sid: string) =>
    queues.run(sid, async () => {
      const copy = primaryCopy(sid);
      const p = copy.primary!;
      p.pause();
      await p.idle();
      await p.log.flush();
      const r = await ownership.change(
        sid,
        { type: 'close', primary: hostId, epoch: p.epoch },
        { fresh: true },
      );
      if (!r.ok) {
        if (copy.status.type === 'primary') p.resume();
        throw new FtmError(`${sid}: not closed: ${r.reason}`);
      }
      copy.moveTo({ type: 'fenced', reason: 'the session was closed' });
      p.fence();
      copies.remove(copy);
      if (p.standbyHost) protection.detach(p.standbyHost, sid);
      await ports.snapshots.delete(sid);
      await ports.log.purgeAll(sid);
      trace(`${sid}: closed in epoch ${p.epoch} at seq ${p.seq}`);
    });

  // ---- start: watch, claim the id, join, serve -------------------------------------------
  await ownership.watch(
    (sid) => {
      coordinator.onRecord(sid);
      if (copies.has(sid)) refreshWatch();
    },
    (err) => {
      if (!state.closed)
        onError(new FtmError(`ownership watch ended: ${err.message}`, { cause: err }));
    },
  );
  membership.onChange = (host) => {
    if (!state.closed) coordinator.onHost(host);
  };
  await ports.liveness.start();
  ports.liveness.setIncarnation(membership.incarnation);
  ctx.control.serve(hostId, serveControl, (err) => dropped.drop(`ftm.h.${hostId}.ctl`, err));
  await ports.transport.flush();
  await membership.start(
    () => copies.load(capacity, false),
    // An earlier process of this id may still be named in records: wait until they moved on.
    () => namedNoMore(2_000),
  );
  state.dead = false;
  pauseGuard.start();
  for (const sid of ownership.namedIn(hostId)) coordinator.schedule(sid);
  let sweeper: unknown;
  const sweep = () => {
    sweeper = clock.setTimeout(() => {
      coordinator.sweep();
      if (!state.closed) sweep();
    }, 500);
  };
  sweep();

  const client = meshClient({
    transport: ports.transport,
    codec,
    clock,
    random,
    ownership,
    membership,
    control: ctx.control,
    placement: ctx.placement,
    requestTimeoutMs: tuning.requestTimeoutMs,
    selfId: capacity > 0 ? hostId : undefined,
    openHere,
    onDropped: (subject, err) => dropped.drop(subject, err),
  });

  const host: Host = {
    ...client,
    id: hostId,
    async openSession(actorName, sid, opts = {}) {
      await openHere(actorName, sid, opts);
      return info(sid)!;
    },
    drain: (deadlineMs) => drainer.drain(deadlineMs),
    failovers: () => history,
    async restoreSession(actorName, sid, opts = {}) {
      if (state.closed) throw new ClosedError(`host ${hostId} is closed`);
      assertId('sid', sid);
      if (opts.standby !== undefined) assertId('hostId', opts.standby);
      replicas.actorNamed(actorName);
      await queues.run(sid, async () => {
        const judged = (await ownership.get(sid))?.record;
        if (!judged || judged.closed)
          throw new SessionNotFoundError(`session ${sid} has no open record to restore`);
        const rec = await restorer.restore(sid, judged, 'restore', clock.now());
        if (!rec) throw new FtmError(`${sid}: another host restored or took it over first`);
        const copy = copies.get(sid);
        if (copy && opts.standby && opts.standby !== hostId)
          await protection.protect(copy, { wanted: opts.standby });
      });
      return info(sid)!;
    },
    snapshotNow: (sid) => primaryCopy(sid).primary!.snapshotNow(),
    flushLog: (sid) => primaryCopy(sid).primary!.log.flush(),
    readDurable: (actorName, sid) =>
      readDurable(ports.log, ports.snapshots, codec, replicas.actorNamed(actorName), sid, clock),
    state: (sid) => session(sid).state,
    hash: (sid) => stateHash(session(sid).state),
    meta: (sid) => session(sid).meta!.snapshot(),
    info,
    status,
    // Shutdown order: stop taking control requests and inputs, let the
    // standbys and the log catch up, say goodbye (the record), then let go.
    async close() {
      if (state.closed) return;
      state.closed = true;
      if (sweeper !== undefined) clock.clearTimeout(sweeper);
      pauseGuard.stop();
      coordinator.stop();
      membership.quiet();
      // Not a drain, but no request is lost: primaries stop taking inputs (their
      // standbys keep them), let the standby and the log catch up, then leave
      // so that the standbys take over at once instead of after a timeout.
      const primaries = [...copies.values()]
        .filter((c) => c.primary && c.status.type === 'primary')
        .map((c) => c.primary!);
      for (const p of primaries) p.pause();
      const settled = Promise.all(
        primaries.map((p) =>
          Promise.all([p.standbyHost ? p.standbyCaughtUp() : 0, p.idle()]).then(() =>
            p.log.flush().catch(() => 0),
          ),
        ),
      );
      // Bounded: a standby or a JetStream that does not answer must not hold the shutdown.
      await Promise.race([settled, sleep(clock, 2_000)]);
      flusher.stop();
      for (const p of primaries) p.log.discard();
      await Promise.race([membership.leave().catch(() => false), sleep(clock, 1_000)]);
      await ports.liveness.stop();
      ownership.close();
      membership.stop();
      ctx.control.close();
      for (const c of copies.values()) {
        c.primary?.close();
        c.replica?.close();
      }
      await client.close();
      await Promise.all([...pools.values()].map((p) => p.close()));
      pools.clear();
      await ports.release?.();
    },
    [Symbol.asyncDispose]: () => host.close(),
  };
  return host;
}
