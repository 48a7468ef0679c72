import { randomBytes } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import { createValueCodec, type ValueCodec } from './codec.ts';
import { systemClock } from './clock.ts';
import { ControlChannel } from './control-channel.ts';
import { DroppedMessages } from './dropped-messages.ts';
import type { DrainReport } from './drain.ts';
import { CapacityError, ClosedError, FtmError, SessionNotFoundError } from './errors.ts';
import type { FailoverRecord } from './failover.ts';
import { Membership, type HostView } from './membership.ts';
import { connectNats } from './nats-connect.ts';
import { natsKv } from './nats-stores.ts';
import { natsTransport } from './nats-transport.ts';
import { Ownership, type OwnerRecord } from './ownership.ts';
import { Placement } from './placement.ts';
import type { Clock, Random, Transport } from './ports.ts';
import type { MetaSnapshot } from './session-meta.ts';
import { SessionClient } from './session-client.ts';
import { assertId, storeNames } from './subjects.ts';
import { Tracing } from './telemetry.ts';

/** What a host knows of one of its sessions. */
export interface SessionInfo {
  sid: string;
  actor: string;
  role: 'primary' | 'standby';
  /** The copy's status (PROTOCOL.md): attaching, standby, promoting, primary, handing-off. */
  status: string;
  epoch: number;
  seq: number;
}

/** Another host's copy of a session, from {@link MeshClient.inspect}. */
export interface Inspection {
  info: SessionInfo;
  hash: string;
  /** The copy's state at `info.seq`. */
  state: unknown;
  meta: MetaSnapshot;
  /** The failovers of this session that host took part in as the new primary. */
  failovers: FailoverRecord[];
}

/** A host's own account of itself, from {@link MeshClient.hostStatus}. */
export interface HostStatus {
  id: string;
  incarnation: string;
  sessions: SessionInfo[];
  /** Malformed messages dropped, by subject family. */
  dropped: Record<string, number>;
  /** Suspicions a probe answered (a live host taken for silent). */
  falseSuspicions: number;
  failovers: number;
}

/** A host's answer to {@link MeshClient.crashHost}, sent just before it kills itself. */
export interface CrashReport {
  host: string;
  pid: number;
  /** When it answered, on its clock (ms since the epoch, as failover records). */
  at: number;
}

/**
 * A light handle on the mesh for those who do not serve sessions: the
 * gateway, the CLI, tests, benchmarks. Requests, owner look-up, placement
 * and host status; no log, no heartbeat, no capacity.
 */
export interface MeshClient {
  /**
   * Sends a request to a session (wherever it is served); resolves with the
   * released reply. A sampled `traceparent` (W3C) makes the request part of
   * that trace across the primary and the standby (see SessionClient.request).
   */
  request(
    sid: string,
    type: string,
    payload?: unknown,
    options?: { requestId?: string; timeoutMs?: number; traceparent?: string },
  ): Promise<unknown>;
  /** The session client for `sid` (one per session, created on first use). */
  client(sid: string): SessionClient;
  /** The ownership record of a session as the watch last delivered it. */
  owner(sid: string): OwnerRecord | undefined;
  /** The ownership record read from the store now. */
  fetchOwner(sid: string): Promise<OwnerRecord | undefined>;
  /**
   * Calls `fn` with the sid of every ownership record the watch delivers
   * (opened, moved, closed); read it with {@link owner}. Returns a function
   * that stops the calls.
   */
  onSessionChange(fn: (sid: string) => void): () => void;
  /** Every session's record, as watched. */
  sessions(): { sid: string; record: OwnerRecord }[];
  /** Live hosts, by their membership records. */
  liveHosts(): string[];
  /** Every host's membership record, as watched. */
  hosts(): { id: string; view: HostView }[];
  /**
   * Opens a session on the live host with the most room, its standby on
   * another; resolves with the ownership record.
   * @throws CapacityError when no live host has room
   */
  placeSession(
    actor: string,
    sid: string,
    options?: { init?: unknown; primary?: string; standby?: string },
  ): Promise<OwnerRecord>;
  /** Ends a session: its primary stops it, the record is closed, snapshot and log are deleted. */
  closeSession(sid: string): Promise<void>;
  /** Asks a host for its copy of a session: info, hash and meta. */
  inspect(hostId: string, sid: string): Promise<Inspection>;
  /** Asks a host for the failovers it took part in as the new primary. */
  failoversOf(hostId: string): Promise<FailoverRecord[]>;
  /** Asks a host to drain: an operator's action before a deploy. */
  drainHost(hostId: string): Promise<DrainReport>;
  /** Asks a host for its status: sessions, dropped messages, false suspicions. */
  hostStatus(hostId: string): Promise<HostStatus>;
  /**
   * Asks a host started with `allowCrash` to SIGKILL its own process (a real
   * crash, to watch a failover); resolves with its answer, sent just before
   * it dies: its pid and its clock's time then.
   * @throws CrashNotAllowedError when the host was started without `allowCrash`
   */
  crashHost(hostId: string): Promise<CrashReport>;
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Options of {@link createClient}. */
export interface ClientOptions {
  /** A NATS URL (or comma-separated URLs), or a connection the caller owns. */
  nats: string | NatsConnection;
  /** Called with errors handled without throwing (a malformed message dropped, a watch ended). */
  onError?: (err: FtmError) => void;
  /** Default timeout of requests, ms (default 5,000). */
  requestTimeoutMs?: number;
  /**
   * JetStream replicas of the ownership and membership buckets, used only
   * when they do not exist yet (a client started before any host): 1 for one
   * server, 3 for a cluster (default 1).
   */
  jetstreamReplicas?: number;
}

/** What a mesh client is built on: shared with a host, which is a client too. */
export type MeshClientDeps = {
  transport: Transport;
  codec: ValueCodec;
  clock: Clock;
  random: Random;
  ownership: Ownership;
  membership: Membership;
  control: ControlChannel;
  placement: Placement;
  requestTimeoutMs: number;
  /** Opens a session on this process's own host, when it is one (placement may pick it). */
  openHere?: (
    actor: string,
    sid: string,
    opts: { standby?: string; standbyHint?: string; init?: unknown },
  ) => Promise<OwnerRecord>;
  selfId?: string;
  /** Told of every ownership record the watch delivers (the owner of the watch calls them). */
  sessionListeners: Set<(sid: string) => void>;
  onClose?: () => Promise<void>;
  /** Counts frames dropped after they waited for their epoch. */
  onDropped?: (subject: string, err: unknown) => void;
  /** Told of every reply released (see SessionClientDeps). */
  onReleased?: (requestId: string, at: { epoch: number; term: number; seq: number }) => void;
  /** Where the session clients' release spans go (telemetry.ts). */
  tracing?: Tracing;
};

/** Node's crypto as the {@link Random} port. */
export const systemRandom: Random = Object.freeze({
  next: () => randomBytes(4).readUInt32BE() / 2 ** 32,
  hex: (bytes: number) => randomBytes(bytes).toString('hex'),
});

/**
 * Connects a light client to the mesh: it watches the ownership and
 * membership records (read-only) and talks to sessions and hosts.
 * @example
 * const mesh = await createClient({ nats: 'nats://127.0.0.1:4222' });
 * await mesh.placeSession('counter', 'room-1');
 * await mesh.request('room-1', 'add', 1);
 */
export async function createClient(options: ClientOptions): Promise<MeshClient> {
  const owned = typeof options.nats === 'string';
  const nc =
    typeof options.nats === 'string'
      ? await connectNats(options.nats, { name: `ftm-client-${randomBytes(3).toString('hex')}` })
      : options.nats;
  const codec = createValueCodec();
  const clock = systemClock;
  const onError =
    options.onError ??
    ((err: FtmError) => console.error(`[ftmesh client] ${err.name}: ${err.message}`));
  const dropped = new DroppedMessages(clock, onError);
  const transport = natsTransport(nc, dropped);
  const replicas = options.jetstreamReplicas ?? 1;
  const [ownersKv, hostsKv] = await Promise.all([
    natsKv(nc, storeNames.owners, replicas),
    natsKv(nc, storeNames.hosts, replicas),
  ]);
  const ownership = new Ownership(ownersKv, codec, (key, err) =>
    dropped.drop(`$KV.${storeNames.owners}.${key}`, err),
  );
  const sessionListeners = new Set<(sid: string) => void>();
  await ownership.watch(
    (sid) => {
      for (const fn of sessionListeners) fn(sid);
    },
    (err) => onError(new FtmError(`ownership watch ended: ${err.message}`, { cause: err })),
  );
  const membership = new Membership(
    {
      kv: hostsKv,
      transport,
      codec,
      clock,
      random: systemRandom,
      dropped,
      onError,
      trace: () => undefined,
    },
    `client-${randomBytes(3).toString('hex')}`,
    { advisories: false },
  );
  await membership.watchOnly();
  return meshClient({
    transport,
    codec,
    clock,
    random: systemRandom,
    ownership,
    membership,
    control: new ControlChannel(transport, codec),
    placement: new Placement(() => clock.now()),
    sessionListeners,
    requestTimeoutMs: options.requestTimeoutMs ?? 5_000,
    onDropped: (subject, err) => dropped.drop(subject, err),
    tracing: new Tracing(onError),
    onClose: async () => {
      ownership.close();
      membership.stop();
      if (owned) await nc.close();
    },
  });
}

/** The client behaviour on given parts (a host passes its own). */
export function meshClient(deps: MeshClientDeps): MeshClient {
  const clients = new Map<string, SessionClient>();
  // A client believes an epoch once the ownership record has it.
  const epochs = {
    known: (sid: string) => deps.ownership.view.get(sid)?.record.epoch ?? 0,
    confirm: async (sid: string, epoch: number) =>
      ((await deps.ownership.get(sid))?.record.epoch ?? 0) >= epoch,
  };
  let closed = false;
  const timeout = deps.requestTimeoutMs;
  const candidates = () => {
    const out = [];
    for (const [id, v] of deps.membership.hosts)
      if (v.record.state === 'alive' && v.record.load.capacity > 0)
        out.push({ id, load: v.record.load });
    return out;
  };
  const mesh: MeshClient = {
    client(sid) {
      if (closed) throw new ClosedError('the mesh client is closed');
      assertId('sid', sid);
      let c = clients.get(sid);
      if (!c) clients.set(sid, (c = new SessionClient({ ...deps, epochs }, sid, timeout)));
      return c;
    },
    request: (sid, type, payload, opts) => mesh.client(sid).request(type, payload, opts),
    owner: (sid) => deps.ownership.view.get(sid)?.record,
    fetchOwner: async (sid) => (await deps.ownership.get(sid))?.record,
    onSessionChange(fn) {
      deps.sessionListeners.add(fn);
      return () => void deps.sessionListeners.delete(fn);
    },
    sessions: () => [...deps.ownership.view].map(([sid, o]) => ({ sid, record: o.record })),
    liveHosts: () => deps.membership.liveHosts(),
    hosts: () => [...deps.membership.hosts].map(([id, view]) => ({ id, view })),
    async placeSession(actor, sid, opts = {}) {
      assertId('sid', sid);
      const tried = new Set<string>();
      for (let attempt = 0; ; attempt++) {
        const all = candidates();
        const primary =
          attempt === 0 && opts.primary ? opts.primary : deps.placement.pick(all, tried);
        if (!primary)
          throw new CapacityError(
            `no live host has room for ${sid}: start a host or raise its capacity`,
          );
        // The pair is chosen from one view, so that the last free slots pair up.
        const standby =
          opts.standby ?? deps.placement.pickStandby(primary, all, new Set([primary]));
        const open = {
          init: opts.init,
          ...(opts.standby ? { standby: opts.standby } : standby ? { standbyHint: standby } : {}),
        };
        try {
          if (primary === deps.selfId && deps.openHere)
            return await deps.openHere(actor, sid, open);
          const answer = await deps.control.request<{ record: OwnerRecord }>(
            primary,
            { op: 'open', actor, sid, ...open },
            timeout,
          );
          return answer.record;
        } catch (err) {
          // A full host: try the next one. Anything else is the caller's to see.
          if ((err as FtmError).code !== 'capacity' || opts.primary || attempt >= 4) throw err;
          tried.add(primary);
        }
      }
    },
    async closeSession(sid) {
      const record = (await deps.ownership.get(sid))?.record;
      if (!record || record.closed) throw new SessionNotFoundError(`session ${sid} is not open`);
      await deps.control.request(record.primary, { op: 'close', sid }, timeout);
      clients.get(sid)?.close();
      clients.delete(sid);
    },
    inspect: (hostId, sid) =>
      deps.control.request<Inspection>(hostId, { op: 'inspect', sid }, timeout),
    async failoversOf(hostId) {
      return (
        await deps.control.request<{ failovers: FailoverRecord[] }>(
          hostId,
          { op: 'failovers' },
          timeout,
        )
      ).failovers;
    },
    async drainHost(hostId) {
      return (await deps.control.request<{ report: DrainReport }>(hostId, { op: 'drain' }, 60_000))
        .report;
    },
    hostStatus: (hostId) => deps.control.request<HostStatus>(hostId, { op: 'status' }, timeout),
    crashHost: (hostId) => deps.control.request<CrashReport>(hostId, { op: 'crash' }, timeout),
    async close() {
      if (closed) return;
      closed = true;
      for (const c of clients.values()) c.close();
      clients.clear();
      await deps.onClose?.();
    },
    [Symbol.asyncDispose]: () => mesh.close(),
  };
  return mesh;
}
