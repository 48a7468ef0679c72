import { HostState } from './host-state.ts';
import { createValueCodec } from './codec.ts';
import { ControlChannel } from './control-channel.ts';
import { isPrimary } from './copy-status.ts';
import { Drain } from './drain.ts';
import { readDurable } from './durable-state.ts';
import { FtmError } from './errors.ts';
import type { FailoverRecord } from './failover.ts';
import { FailoverCoordinator } from './failover-coordinator.ts';
import { FailoverTelemetry } from './failover-telemetry.ts';
import { defaultOnError, type Host, type HostOptions, type HostPorts } from './host-api.ts';
import type { HostContext, HostTuning } from './host-context.ts';
import { controlHandler } from './host-control.ts';
import { LogFlusher } from './log-flusher.ts';
import { observeHost } from './host-metrics.ts';
import { Membership } from './membership.ts';
import { meshClient, type HostStatus } from './mesh-client.ts';
import { Ownership } from './ownership.ts';
import { PauseGuard } from './pause-guard.ts';
import { Placement } from './placement.ts';
import { Promotion } from './promotion.ts';
import { Protection } from './protection.ts';
import { Rejoin } from './rejoin.ts';
import { ReplicaManager } from './replica-manager.ts';
import { Restore } from './restore.ts';
import { within } from './retry.ts';
import { SerialQueues } from './serial-queue.ts';
import { SessionCopies } from './session-copies.ts';
import { SessionLifecycle } from './session-lifecycle.ts';
import { stateHash } from './state-hash.ts';
import { Tracing, type SessionTelemetry } from './telemetry.ts';
import { assertId, storeNames } from './subjects.ts';
import { WorkerPool } from './worker-pool.ts';

export type { Host, HostOptions, HostPorts } from './host-api.ts';
export type { DrainReport } from './drain.ts';
export type { HostStatus, Inspection, SessionInfo } from './mesh-client.ts';

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
  const state = new HostState();
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
  // host re-read its own record (rejoin.ts): declared dead meanwhile, it serves nothing more.
  const rejoinRef: { r?: Rejoin } = {};
  const pauseGuard = new PauseGuard(clock, () => void rejoinRef.r?.afterPause());
  // OpenTelemetry through its API: no-op until the process sets up an SDK (telemetry.ts).
  const tracing = new Tracing(onError, () => clock.now());
  const failoverTelemetry = new FailoverTelemetry(tracing, clock, hostId);
  const telemetry: SessionTelemetry = {
    tracing,
    counters: { commits: 0, patchBytes: 0 },
    failoverLink: (sid) => failoverTelemetry.link(sid),
  };
  membership.onFalseSuspicion = (host, cause, at, probedAt, answeredAt) =>
    failoverTelemetry.falseSuspicion(host, cause, at, probedAt, answeredAt);
  const sessionDeps = {
    transport: ports.transport,
    codec,
    clock,
    onError,
    dropped: (subject: string, err: unknown) => dropped.drop(subject, err),
    suspended: () => pauseGuard.suspended(),
    telemetry,
  };
  const coordinatorRef: { c?: FailoverCoordinator } = {};
  const lifecycleRef: { l?: SessionLifecycle } = {};
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
    failoverTelemetry,
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
    requestClose: (sid) =>
      void lifecycleRef.l?.close(sid, 'requested').catch((err: unknown) => {
        // Another close won, or the copy moved on: its successor re-arms the request.
        if (copies.get(sid)?.status.type === 'primary')
          onError(new FtmError(`close of ${sid} failed`, { cause: err }));
      }),
  };
  const replicas = new ReplicaManager(ctx);
  const protection = new Protection(ctx);
  const promotion = new Promotion(ctx, replicas);
  const restorer = new Restore(ctx, replicas);
  const coordinator = new FailoverCoordinator(ctx, replicas, protection, promotion, restorer);
  coordinatorRef.c = coordinator;
  const drainer = new Drain(ctx, protection);
  const lifecycle = new SessionLifecycle(ctx, replicas, protection, restorer);
  lifecycleRef.l = lifecycle;
  const rejoin = new Rejoin(ctx, replicas, ports.liveness, coordinator, pauseGuard);
  rejoinRef.r = rejoin;

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
  membership.onProbeTimeout = (ms) => ports.liveness.setProbeTimeout(ms);
  ports.liveness.onSuspect = (host, at, confirmed, why) => {
    trace(`host ${host} suspected: ${why}`);
    membership
      .confirm(host, 'heartbeat', at, undefined, confirmed)
      .catch((err: unknown) =>
        onError(new FtmError(`confirming that ${host} is gone`, { cause: err })),
      );
  };

  // ---- this host declared dead: stop serving at once, join again as new ----------------
  membership.onSelfDead = () => rejoin.declaredDead();

  const status = (): HostStatus => ({
    id: hostId,
    incarnation: membership.incarnation,
    sessions: [...copies.values()].map((c) => lifecycle.info(c.sid)!),
    dropped: dropped.snapshot(),
    falseSuspicions: membership.falseSuspicions,
    failovers: history.length,
  });
  const serveControl = controlHandler({
    ctx,
    replicas,
    protection,
    promotion,
    lifecycle,
    drain: () => drainer.drain(),
    status,
    ...(ports.crash ? { crash: ports.crash } : {}),
  });

  // ---- start: watch, claim the id, join, serve -------------------------------------------
  const sessionListeners = new Set<(sid: string) => void>();
  await ownership.watch(
    (sid) => {
      for (const fn of sessionListeners) fn(sid);
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
  ports.liveness.setProbeTimeout(membership.probeTimeoutMs());
  ctx.control.serve(hostId, serveControl, (err) => dropped.drop(`ftm.h.${hostId}.ctl`, err));
  await ports.transport.flush();
  await membership.start(
    () => copies.load(capacity, false),
    // An earlier process of this id may still be named in records: wait until they moved on.
    () => rejoin.namedNoMore(2_000),
  );
  state.dead = false;
  const stopMetrics = observeHost({
    hostId,
    clock,
    copies,
    telemetry,
    tracing,
    falseSuspicions: () => membership.falseSuspicions,
  });
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
    sessionListeners,
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
    openHere: (actorName, sid, opts) => lifecycle.open(actorName, sid, opts),
    onDropped: (subject, err) => dropped.drop(subject, err),
    tracing,
  });

  const host: Host = {
    ...client,
    id: hostId,
    async openSession(actorName, sid, opts = {}) {
      await lifecycle.open(actorName, sid, opts);
      return lifecycle.info(sid)!;
    },
    drain: (deadlineMs) => drainer.drain(deadlineMs),
    failovers: () => history,
    async restoreSession(actorName, sid, opts = {}) {
      await lifecycle.restoreHere(actorName, sid, opts);
      return lifecycle.info(sid)!;
    },
    snapshotNow: (sid) => lifecycle.primaryCopy(sid).primary!.snapshotNow(),
    flushLog: (sid) => lifecycle.primaryCopy(sid).primary!.log.flush(),
    readDurable: (actorName, sid) =>
      readDurable(ports.log, ports.snapshots, codec, replicas.actorNamed(actorName), sid, clock),
    state: (sid) => lifecycle.copy(sid).state,
    hash: (sid) => stateHash(lifecycle.copy(sid).state),
    meta: (sid) => lifecycle.copy(sid).meta!.snapshot(),
    info: (sid) => lifecycle.info(sid),
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
      stopMetrics();
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
      await within(clock, settled, 2_000);
      flusher.stop();
      for (const p of primaries) p.log.discard();
      await within(
        clock,
        membership.leave().catch(() => false),
        1_000,
      );
      await ports.liveness.stop();
      // Open failover traces are recorded as they stand (after the last commits, before letting go).
      failoverTelemetry.close();
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
