import { randomBytes } from 'node:crypto';
import { createSocket, type Socket } from 'node:dgram';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { WebSocketServer } from 'ws';
import {
  FtmError,
  SessionExistsError,
  createClient,
  systemClock,
  type ActorDefinition,
  type Clock,
  type DrainReport,
  type MeshClient,
  type OwnerRecord,
} from '../runtime/index.ts';
import {
  ClientConnection,
  type ClientBuckets,
  type ConnectionContext,
  type ConnectionCounters,
} from './client-connection.ts';
import { GatewayError, InvalidOptionError } from './errors.ts';
import {
  CloseCode,
  DATAGRAM_VERSION,
  ErrorCode,
  SUBPROTOCOL,
  UDP_HEADER_BYTES,
  UDP_KEY_BYTES,
  clientIdPattern,
  defaultLimits,
  type Limits,
} from './protocol.ts';
import { TokenBucket } from './rate-limit.ts';
import { observeGateway } from './gateway-telemetry.ts';
import { OperatorView } from './operator-view.ts';
import { SessionRoute } from './session-route.ts';
import { staticPages } from './static-pages.ts';
import type { TokenSecret } from './token.ts';

/** Options of {@link createGateway}. */
export interface GatewayOptions {
  /** NATS URL (or comma-separated URLs) of the mesh. */
  nats: string;
  /** The actor types of the sessions this gateway serves: their handlers and checks gate every request. */
  actors: readonly ActorDefinition<any>[];
  /** Token keys: `secret` signs tokens; several during a key rotation (any one verifies). */
  auth: { secret: TokenSecret | readonly TokenSecret[] };
  /** WebSocket port (default 0: a free port; read `gateway.port`). */
  port?: number;
  /** Address to bind the WebSocket and UDP ports to (default 127.0.0.1). */
  bind?: string;
  /** UDP port for datagrams (default 0: a free port); `false` for none. */
  udpPort?: number | false;
  /** The gateway's id, also its host id on the mesh (default `gw-` and random hex). */
  id?: string;
  /** Limits announced to clients and enforced (defaults in `defaultLimits`). */
  limits?: Partial<Limits>;
  /** Connections at once; more are closed with 1013 (default 10,000). */
  maxConnections?: number;
  /**
   * How long a hello naming a session this gateway has not seen waits for its
   * ownership record to arrive before the connection closes with 4404 (default 250 ms).
   */
  unknownSessionGraceMs?: number;
  clock?: Clock;
  /**
   * Serve the dashboard (`/dashboard/`), the demo page (`/demo/`) and the
   * SDK's browser bundle (`/ftmesh-client.js`) on the WebSocket port
   * (PROTOCOL.md, "Pages"; default false). The pages act only with a token.
   */
  dashboard?: boolean;
  /** Errors handled without throwing (a failed UDP send, a host error). Default: logged. */
  onError?: (err: Error) => void;
}

/** Counters of a gateway since it started; `connections` and `inFlight` are current. */
export interface GatewayStats {
  connections: number;
  connectionsOpened: number;
  sessions: number;
  inFlight: number;
  /** Requests forwarded to sessions. */
  requests: number;
  /** Replies released to clients. */
  replies: number;
  events: number;
  datagramsIn: number;
  datagramsOut: number;
  datagramsDropped: number;
  /** Error frames sent, by code. */
  errors: Record<string, number>;
  /** Connections closed, by close code. */
  closes: Record<string, number>;
}

/** A running gateway. */
export interface Gateway {
  readonly id: string;
  /** `ws://<bind>:<port>`: what clients connect to. */
  readonly url: string;
  readonly port: number;
  /** The UDP port for datagrams; undefined without UDP. */
  readonly udpPort: number | undefined;
  stats(): GatewayStats;
  /**
   * Graceful stop: takes no new connection (a handshake gets HTTP 503, and
   * /healthz answers 503 `draining` until the listener closes) and forwards
   * nothing new, lets each connection's in-flight requests be answered
   * (bounded by the request timeout), then closes it with 1001 so that its
   * client moves to another gateway.
   */
  drain(): Promise<void>;
  /** Stops now: every connection closes with 1001. Safe twice. */
  close(): Promise<void>;
  /** Resolves once stopped, with the cause when it stopped on an error. */
  closed(): Promise<Error | undefined>;
  [Symbol.asyncDispose](): Promise<void>;
}

const CLOSE_WAIT_MS = 2_000;
/** A client silent (no frame, no pong) for two rounds of this is cut: half-open TCP connections go. */
const HEARTBEAT_MS = 15_000;

/**
 * Starts a gateway: a WebSocket server for clients, a UDP port for their
 * datagrams, and a mesh client (`createClient`: no heartbeat, no log, serves
 * nothing) through which it talks to sessions (one runtime `SessionClient` per session). Resolves once both
 * ports listen.
 * @example
 * const gw = await createGateway({ nats: url, actors: [room], auth: { secret } });
 * const session = await connect(gw.url, { token: mintToken({ secret, sub: 'ann', sid: 'r1' }) });
 */
export async function createGateway(options: GatewayOptions): Promise<Gateway> {
  const id = options.id ?? `gw-${randomBytes(4).toString('hex')}`;
  if (!clientIdPattern.test(id))
    throw new InvalidOptionError(`id ${JSON.stringify(id)}: use 1-64 of A-Z a-z 0-9 _ -`);
  const secrets = ([] as TokenSecret[]).concat(options.auth?.secret as TokenSecret);
  if (!secrets.length || secrets.some((s) => s === undefined))
    throw new InvalidOptionError('auth.secret: pass the HMAC secret tokens are signed with');
  if (!options.actors?.length)
    throw new InvalidOptionError('actors: pass the actor definitions of the sessions to serve');
  const limits: Limits = Object.freeze({ ...defaultLimits, ...options.limits });
  for (const [k, v] of Object.entries(limits))
    if (!(typeof v === 'number' && v > 0))
      throw new InvalidOptionError(`limits.${k}: a positive number`);
  const clock = options.clock ?? systemClock;
  const onError =
    options.onError ??
    ((err: Error) => console.error(`[ftmesh gateway ${id}] ${err.name}: ${err.message}`));
  const actors = new Map(options.actors.map((a) => [a.name, a]));
  const grace = options.unknownSessionGraceMs ?? 250;
  const maxConnections = options.maxConnections ?? 10_000;

  // A light client of the mesh: it serves nothing, beats nothing, logs nothing.
  const host: MeshClient = await createClient({ nats: options.nats, onError });

  const counters = {
    connectionsOpened: 0,
    requests: 0,
    replies: 0,
    events: 0,
    datagramsIn: 0,
    datagramsOut: 0,
    datagramsDropped: 0,
    errors: {} as Record<string, number>,
    closes: {} as Record<string, number>,
  } satisfies ConnectionCounters & Record<string, unknown>;
  const routes = new Map<string, SessionRoute>();
  const connections = new Set<ClientConnection>();
  const buckets = new Map<string, { b: ClientBuckets; refs: number }>();
  const udpKeys = new Map<string, ClientConnection>();
  let draining = false;

  /** Sessions this gateway is opening for a token's `actor` claim: one placement per sid. */
  const opening = new Map<string, Promise<OwnerRecord | undefined>>();
  const open = (sid: string, actor: string): Promise<OwnerRecord | undefined> => {
    let p = opening.get(sid);
    if (!p) {
      p = host
        .placeSession(actor, sid)
        .catch(async (err: unknown) => {
          // Another gateway (or client) opened it first: join it.
          if (err instanceof SessionExistsError) return host.fetchOwner(sid);
          onError(new FtmError(`opening ${sid} (${actor}) failed`, { cause: err }));
          return undefined;
        })
        .finally(() => opening.delete(sid));
      opening.set(sid, p);
    }
    return p;
  };

  const route = async (sid: string, create?: string): Promise<SessionRoute | undefined> => {
    let owner = host.owner(sid);
    if (create !== undefined && actors.has(create)) {
      // Join-or-create: the store says whether it exists, no grace needed.
      if (!owner || owner.closed) owner = await host.fetchOwner(sid);
      if (!owner || owner.closed) owner = await open(sid, create);
    }
    const deadline = clock.now() + grace;
    // The ownership watch may not have delivered a session opened a moment ago.
    while (!owner && clock.now() < deadline) {
      await sleep(10);
      owner = host.owner(sid);
    }
    const known = routes.get(sid);
    if (known) return known;
    const actor = owner && !owner.closed ? actors.get(owner.actor) : undefined;
    if (!actor) return undefined;
    const r = new SessionRoute(
      sid,
      actor,
      host.client(sid),
      counters,
      limits.requestTimeoutMs,
      onError,
    );
    routes.set(sid, r);
    return r;
  };
  // A closed session's clients are told (4410) and its route goes.
  const stopWatching = host.onSessionChange((sid) => {
    const r = routes.get(sid);
    if (!r || !host.owner(sid)?.closed) return;
    routes.delete(sid);
    r.ended();
  });

  // ---- UDP -------------------------------------------------------------------------------
  let udp: Socket | undefined;
  if (options.udpPort !== false) {
    const socket = createSocket((options.bind ?? '').includes(':') ? 'udp6' : 'udp4');
    udp = socket;
    socket.on('message', (msg, rinfo) => {
      if (msg.length < UDP_HEADER_BYTES || msg[0] !== DATAGRAM_VERSION) {
        counters.datagramsDropped++;
        return;
      }
      const conn = udpKeys.get(msg.toString('latin1', 1, 1 + UDP_KEY_BYTES));
      if (!conn) {
        counters.datagramsDropped++;
        return;
      }
      conn.onDatagram(msg.subarray(UDP_HEADER_BYTES), rinfo);
    });
    socket.on('error', (err) =>
      onError(new GatewayError(`UDP: ${err.message}`, { code: 'udp', cause: err })),
    );
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(options.udpPort || 0, options.bind ?? '127.0.0.1', () => {
        socket.off('error', reject);
        resolve();
      });
    });
  }
  const udpPort = udp ? udp.address().port : undefined;

  const operator = new OperatorView(host);
  const ctx: ConnectionContext = {
    gatewayId: id,
    limits,
    secrets,
    counters,
    get draining() {
      return draining;
    },
    now: () => clock.now(),
    route,
    acquireBuckets(clientId) {
      let e = buckets.get(clientId);
      if (!e) {
        const now = clock.now();
        e = {
          b: {
            requests: new TokenBucket(limits.requestsPerSecond, limits.requestBurst, now),
            datagrams: new TokenBucket(limits.datagramsPerSecond, limits.datagramBurst, now),
          },
          refs: 0,
        };
        buckets.set(clientId, e);
      }
      e.refs++;
      return e.b;
    },
    releaseBuckets(clientId) {
      const e = buckets.get(clientId);
      if (e && --e.refs <= 0) buckets.delete(clientId);
    },
    registerUdp(conn) {
      if (!udp || udpPort === undefined) return undefined;
      let key: Buffer;
      do key = randomBytes(UDP_KEY_BYTES);
      while (udpKeys.has(key.toString('latin1')));
      conn.udpKey = key.toString('latin1');
      udpKeys.set(conn.udpKey, conn);
      return { port: udpPort, key };
    },
    unregisterUdp(conn) {
      if (conn.udpKey !== undefined && udpKeys.get(conn.udpKey) === conn)
        udpKeys.delete(conn.udpKey);
      conn.udpKey = undefined;
    },
    sendUdp(frame, to) {
      udp?.send(frame, to.port, to.address, (err) => {
        if (err) counters.datagramsDropped++;
      });
    },
    status(sid) {
      return {
        gateway: { id, ...stats() },
        hosts: host.liveHosts(),
        ...(sid === undefined ? {} : { session: sessionStatus(host.owner(sid)) }),
      };
    },
    mesh: () => operator.snapshot(clock.now()),
    crash: (sid, epoch) => operator.crash(sid, epoch),
    async drainHost(hostId): Promise<DrainReport> {
      if (!host.liveHosts().includes(hostId) || hostId === id)
        throw new GatewayError(`host ${hostId} is not a live host of the mesh`, {
          code: ErrorCode.unknownHost,
        });
      return host.drainHost(hostId);
    },
    closed(conn) {
      connections.delete(conn);
    },
  };

  // ---- WebSocket ---------------------------------------------------------------------------
  const pages = options.dashboard ? staticPages(onError) : undefined;
  const server: Server = createServer((req, res) => {
    if (pages?.handle(req, res)) return;
    if (req.url === '/healthz') {
      res
        .writeHead(draining ? 503 : 200, { 'content-type': 'text/plain' })
        .end(draining ? 'draining' : 'ok');
      return;
    }
    res
      .writeHead(426, { 'content-type': 'text/plain' })
      .end(`use a WebSocket (subprotocol ${SUBPROTOCOL})`);
  });
  const wss = new WebSocketServer({
    server,
    maxPayload: limits.maxFrameBytes,
    perMessageDeflate: false,
    // Refused before the upgrade, with an HTTP status: `false` from
    // handleProtocols refuses nothing (ws completes the handshake without the header).
    verifyClient: (info, done) => {
      if (draining) return done(false, 503, 'gateway draining');
      // ws checked the header's syntax already: a comma-separated list of tokens.
      const offered = info.req.headers['sec-websocket-protocol'];
      if (offered !== undefined && !offered.split(',').some((p) => p.trim() === SUBPROTOCOL))
        return done(false, 400, `subprotocol ${SUBPROTOCOL} not offered`);
      done(true);
    },
    // A client offering subprotocols offers ours (verifyClient); one offering none speaks v1 by its hello.
    handleProtocols: (offered) => (offered.has(SUBPROTOCOL) ? SUBPROTOCOL : false),
  });
  wss.on('connection', (ws) => {
    if (draining) return ws.close(CloseCode.goingAway, 'gateway draining');
    if (connections.size >= maxConnections)
      return ws.close(CloseCode.tryAgainLater, 'gateway full');
    counters.connectionsOpened++;
    connections.add(new ClientConnection(ws, ctx));
  });
  wss.on('error', (err) => onError(err));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, options.bind ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => onError(err));
  const port = (server.address() as AddressInfo).port;
  const heartbeat = setInterval(() => {
    for (const c of connections) c.heartbeat();
  }, HEARTBEAT_MS);
  heartbeat.unref();
  // Metrics through @opentelemetry/api: read from the counters when an SDK collects.
  const stopMetrics = observeGateway(id, () => stats());
  const bind = options.bind ?? '127.0.0.1';

  function stats(): GatewayStats {
    let inFlight = 0;
    for (const r of routes.values()) inFlight += r.inFlightCount;
    return {
      ...counters,
      errors: { ...counters.errors },
      closes: { ...counters.closes },
      connections: connections.size,
      sessions: routes.size,
      inFlight,
    };
  }

  let resolveClosed: (cause: Error | undefined) => void = () => undefined;
  const closedPromise = new Promise<Error | undefined>((r) => (resolveClosed = r));
  let stopping: Promise<void> | undefined;

  /**
   * Shutdown order: stop accepting (`draining`: a handshake gets 503, nothing
   * new is forwarded, /healthz answers 503 so that a balancer takes the
   * gateway out); when graceful, wait for each connection's requests in
   * flight; close every connection with 1001; then the listener (/healthz
   * answers until here); then the UDP port; the host (and its NATS
   * connection) last, since in-flight replies arrive through it.
   */
  const stop = (graceful: boolean): Promise<void> =>
    (stopping ??= (async () => {
      clearInterval(heartbeat);
      stopMetrics();
      draining = true;
      if (graceful) {
        const deadline = clock.now() + limits.requestTimeoutMs;
        while (clock.now() < deadline) {
          for (const c of connections)
            if (c.inFlight === 0) c.close(CloseCode.goingAway, 'gateway draining');
          if (!connections.size) break;
          await sleep(10);
        }
      }
      for (const c of connections) c.close(CloseCode.goingAway, 'gateway going away');
      const deadline = clock.now() + CLOSE_WAIT_MS;
      while (connections.size && clock.now() < deadline) await sleep(10);
      for (const ws of wss.clients) ws.terminate();
      connections.clear();
      wss.close();
      server.close();
      server.closeAllConnections();
      udp?.close();
      udpKeys.clear();
      stopWatching();
      for (const r of routes.values()) r.close();
      await host.close();
      resolveClosed(undefined);
    })());

  const gateway: Gateway = {
    id,
    url: `ws://${bind.includes(':') ? `[${bind}]` : bind}:${port}`,
    port,
    udpPort,
    stats,
    drain: () => stop(true),
    close: () => stop(false),
    closed: () => closedPromise,
    [Symbol.asyncDispose]: () => stop(false),
  };
  return gateway;
}

/**
 * A session as the `status` frame shows it (PROTOCOL.md, "status"): named
 * fields, so that a change of the runtime's record does not change the wire.
 */
function sessionStatus(owner: OwnerRecord | undefined) {
  if (!owner) return null;
  const { actor, primary, standby, epoch, term } = owner;
  return { actor, primary, standby, epoch, term, closed: owner.closed === true };
}
