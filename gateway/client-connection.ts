import type { RawData, WebSocket } from 'ws';
import type { LeaveReason } from '../runtime/index.ts';
import { TokenError } from './errors.ts';
import {
  CloseCode,
  ErrorCode,
  PROTOCOL_VERSION,
  clientIdPattern,
  connectionIdPattern,
  jsonReplacer,
  requestIdPattern,
  sessionIdPattern,
  toBase64Url,
  type Limits,
  type Welcome,
} from './protocol.ts';
import type { TokenBucket } from './rate-limit.ts';
import type { RouteMember, SessionRoute } from './session-route.ts';
import { verifyToken, type TokenClaims, type TokenSecret } from './token.ts';

/** The rate buckets of one client id, shared by its connections on one gateway. */
export type ClientBuckets = { requests: TokenBucket; datagrams: TokenBucket };

/** Counters a connection updates; the gateway owns them. */
export interface ConnectionCounters {
  requests: number;
  datagramsIn: number;
  datagramsDropped: number;
  errors: Record<string, number>;
  closes: Record<string, number>;
}

/** What a connection needs from its gateway. */
export interface ConnectionContext {
  readonly gatewayId: string;
  readonly limits: Limits;
  readonly secrets: readonly TokenSecret[];
  readonly counters: ConnectionCounters;
  /** True once the gateway drains: nothing new is forwarded. */
  readonly draining: boolean;
  now(): number;
  /**
   * The session's route, or undefined when no such session exists (after a
   * short grace). With `actor` (the token's claim) a missing session is
   * opened with that actor: join-or-create.
   */
  route(sid: string, actor?: string): Promise<SessionRoute | undefined>;
  acquireBuckets(clientId: string): ClientBuckets;
  releaseBuckets(clientId: string): void;
  /** A fresh UDP key for this connection (undefined when the gateway has no UDP port). */
  registerUdp(conn: ClientConnection): { port: number; key: Uint8Array } | undefined;
  unregisterUdp(conn: ClientConnection): void;
  sendUdp(frame: Uint8Array, address: { address: string; port: number }): void;
  status(sid: string | undefined): unknown;
  drainHost(hostId: string): Promise<unknown>;
  /** The operator's view of the mesh (the `mesh` frame). */
  mesh(): Promise<unknown>;
  /** SIGKILL of the process serving `sid`'s primary (the `crash` frame), while in `epoch` when given. */
  crash(sid: string, epoch: number | undefined): Promise<unknown>;
  closed(conn: ClientConnection): void;
}

/** The answer to an empty (registration) datagram: `[version][fromLength=0]`. */
const registered = new Uint8Array([1, 0]);
/** A closing slow consumer gets this long to read its close frame before the socket is cut. */
const CLOSE_GRACE_MS = 5_000;
/** Frames a client may pipeline behind its hello before the welcome. */
const MAX_EARLY_FRAMES = 64;

/**
 * One client's WebSocket: the hello and its token, then every frame checked
 * (shape, rate, handler, payload) before anything reaches NATS. See PROTOCOL.md.
 */
/** Numbers the connections of this gateway process (their ids: `<gateway>.<n>`). */
let connections = 0;

export class ClientConnection implements RouteMember {
  clientId = '';
  readonly connectionId: string;
  claims: TokenClaims | undefined;
  route: SessionRoute | undefined;
  readonly waiting = new Set<string>();
  /** The UDP key as a map key (8 bytes as latin1), while registered. */
  udpKey: string | undefined;
  /** Where this client's datagrams came from last: datagrams to it go there. */
  udpAddress: { address: string; port: number } | undefined;
  /** Heard from since the last heartbeat round. */
  private alive = true;
  private phase: 'hello' | 'welcoming' | 'open' | 'closing' = 'hello';
  private buckets: ClientBuckets | undefined;
  private early: { data: RawData; isBinary: boolean }[] = [];
  /** Rate-limited frames since `rejectedSince` (a one-second window). */
  private rejected = 0;
  private rejectedSince = 0;
  private readonly timers: NodeJS.Timeout[] = [];

  constructor(
    private readonly ws: WebSocket,
    private readonly ctx: ConnectionContext,
  ) {
    this.connectionId = `${ctx.gatewayId}.${(++connections).toString(36)}`;
    this.timers.push(
      setTimeout(() => this.close(CloseCode.helloTimeout, 'no hello'), ctx.limits.helloTimeoutMs),
    );
    ws.on('message', (data, isBinary) => this.onMessage(data, isBinary));
    ws.on('close', (code) => this.onClose(code));
    ws.on('error', () => undefined); // 'close' follows; ws reports protocol errors by close codes
    ws.on('pong', () => (this.alive = true));
  }

  /**
   * The gateway's heartbeat: a client that answered nothing (no frame, no
   * pong) since the last round is cut; otherwise it gets a WebSocket ping.
   */
  heartbeat(): void {
    if (!this.alive) return void this.ws.terminate();
    this.alive = false;
    if (this.ws.readyState === this.ws.OPEN) this.ws.ping();
  }

  get isOpen(): boolean {
    return this.phase === 'open';
  }

  /** Closes with `code` (once); the socket is cut if the client does not answer the close. */
  close(code: number, reason: string): void {
    if (this.phase === 'closing') return;
    this.phase = 'closing';
    this.ctx.counters.closes[code] = (this.ctx.counters.closes[code] ?? 0) + 1;
    this.detach(closedByGateway(code));
    this.ws.close(code, reason);
    const cut = setTimeout(() => this.ws.terminate(), CLOSE_GRACE_MS);
    cut.unref();
    this.timers.push(cut);
  }

  /** Requests this connection waits on. */
  get inFlight(): number {
    return this.waiting.size;
  }

  sendText(frame: Buffer | string): boolean {
    if (this.phase === 'closing' || this.ws.readyState !== this.ws.OPEN) return false;
    if (this.ws.bufferedAmount > this.ctx.limits.maxBufferedBytes) {
      this.close(CloseCode.slowConsumer, 'slow consumer');
      return false;
    }
    this.ws.send(frame, { binary: false });
    return true;
  }

  sendDatagram(frame: Uint8Array): void {
    if (this.phase !== 'open') return;
    if (this.udpAddress) return this.ctx.sendUdp(frame, this.udpAddress);
    // Datagrams may drop: never let them grow the buffer of a client that reads slowly.
    if (this.ws.bufferedAmount > this.ctx.limits.maxBufferedBytes / 2) {
      this.ctx.counters.datagramsDropped++;
      return;
    }
    this.ws.send(frame, { binary: true });
  }

  /** A datagram from this client, by UDP (`from` its address) or in a binary frame. */
  onDatagram(payload: Uint8Array, from?: { address: string; port: number }): void {
    if (this.phase !== 'open' || !this.route) return;
    // Registrations count against the datagram rate too.
    if (!this.buckets!.datagrams.take(this.ctx.now())) {
      this.ctx.counters.datagramsDropped++;
      return;
    }
    if (from) {
      if (this.udpAddress?.address !== from.address || this.udpAddress.port !== from.port)
        this.udpAddress = { address: from.address, port: from.port };
      // An empty datagram registers the address; it is answered, not forwarded.
      if (payload.length === 0) return this.ctx.sendUdp(registered, from);
    }
    if (payload.length === 0 || payload.length > this.ctx.limits.maxDatagramBytes) {
      this.ctx.counters.datagramsDropped++;
      return;
    }
    this.ctx.counters.datagramsIn++;
    this.route.sendDatagram(payload, this.clientId);
  }

  private onMessage(data: RawData, isBinary: boolean): void {
    this.alive = true;
    if (this.phase === 'closing') return;
    if (this.phase === 'welcoming') {
      if (this.early.length >= MAX_EARLY_FRAMES)
        return this.close(CloseCode.protocol, 'too many frames before the welcome');
      this.early.push({ data, isBinary });
      return;
    }
    if (isBinary) {
      if (this.phase === 'hello') return this.close(CloseCode.protocol, 'hello first');
      return this.onDatagram(asBytes(data));
    }
    let frame: unknown;
    try {
      frame = JSON.parse(asText(data));
    } catch {
      frame = undefined;
    }
    if (this.phase === 'hello')
      return void this.hello(frame).catch(() => this.close(CloseCode.internal, 'gateway error'));
    this.onFrame(frame);
  }

  private async hello(frame: unknown): Promise<void> {
    const f = frame as
      | { type?: unknown; v?: unknown; token?: unknown; sid?: unknown; previous?: unknown }
      | undefined;
    if (typeof f !== 'object' || f === null || f.type !== 'hello')
      return this.close(CloseCode.protocol, 'the first frame must be a hello');
    if (f.v !== PROTOCOL_VERSION)
      return this.close(CloseCode.protocol, `unsupported version; this gateway speaks v1`);
    let claims: TokenClaims;
    try {
      claims = verifyToken(f.token, this.ctx.secrets, this.ctx.now());
    } catch (err) {
      const expired = err instanceof TokenError && err.problem === 'expired';
      return this.close(
        expired ? CloseCode.tokenExpired : CloseCode.tokenInvalid,
        expired ? 'token expired' : `token refused: ${(err as TokenError).problem ?? 'invalid'}`,
      );
    }
    if (f.sid !== undefined && f.sid !== claims.sid)
      return this.close(CloseCode.forbidden, 'the token does not grant this session');
    this.phase = 'welcoming';
    const route =
      claims.sid === undefined ? undefined : await this.ctx.route(claims.sid, claims.actor);
    if (this.phase !== 'welcoming') return; // closed meanwhile
    if (claims.sid !== undefined && !route)
      return this.close(CloseCode.unknownSession, 'no such session');
    this.claims = claims;
    this.clientId = claims.sub;
    this.route = route;
    this.buckets = this.ctx.acquireBuckets(claims.sub);
    const udp = route ? this.ctx.registerUdp(this) : undefined;
    clearTimeout(this.timers[0]);
    // The connection ends with the token's validity.
    const left = claims.exp * 1000 - this.ctx.now();
    const expiry = setTimeout(
      () => this.close(CloseCode.tokenExpired, 'token expired'),
      Math.min(left, 0x7fffffff),
    );
    expiry.unref();
    this.timers.push(expiry);
    this.phase = 'open';
    const welcome: Welcome = {
      type: 'welcome',
      v: PROTOCOL_VERSION,
      gateway: this.ctx.gatewayId,
      connection: this.connectionId,
      client: claims.sub,
      ...(claims.sid === undefined ? {} : { sid: claims.sid }),
      role: claims.role,
      exp: claims.exp,
      ...(udp ? { udp: { port: udp.port, key: toBase64Url(udp.key) } } : {}),
      limits: this.ctx.limits,
    };
    this.sendText(JSON.stringify(welcome));
    // A client back after a lost connection names it: the session learns it left.
    const previous =
      typeof f.previous === 'string' && connectionIdPattern.test(f.previous)
        ? f.previous
        : undefined;
    route?.join(this, previous);
    const early = this.early;
    this.early = [];
    for (const e of early) this.onMessage(e.data, e.isBinary);
  }

  private error(
    id: string | undefined,
    code: string,
    message: string,
    retryAfterMs?: number,
  ): void {
    this.ctx.counters.errors[code] = (this.ctx.counters.errors[code] ?? 0) + 1;
    this.sendText(
      JSON.stringify({
        type: 'error',
        ...(id === undefined ? {} : { id }),
        code,
        message,
        retryable: retryAfterMs !== undefined || code === ErrorCode.tooManyInFlight,
        ...(retryAfterMs === undefined ? {} : { retryAfterMs }),
      }),
    );
  }

  private onFrame(frame: unknown): void {
    const f = (
      typeof frame === 'object' && frame !== null && !Array.isArray(frame) ? frame : undefined
    ) as Record<string, unknown> | undefined;
    const id = typeof f?.id === 'string' && requestIdPattern.test(f.id) ? f.id : undefined;
    // Every frame counts against the rate, valid or not: a flood of garbage is a flood.
    const now = this.ctx.now();
    if (!this.buckets!.requests.take(now)) {
      if (now - this.rejectedSince >= 1_000) {
        this.rejectedSince = now;
        this.rejected = 0;
      }
      if (++this.rejected >= this.ctx.limits.maxRejectedPerSecond)
        return this.close(CloseCode.flood, 'over the rate limit');
      return this.error(
        id,
        ErrorCode.rateLimited,
        'over the request rate',
        this.buckets!.requests.waitMs(),
      );
    }
    if (!f) return this.error(undefined, ErrorCode.malformedFrame, 'a frame is one JSON object');
    switch (f.type) {
      case 'request':
        return this.request(f, id);
      case 'ping':
        return void this.sendText(JSON.stringify({ type: 'pong', ...(id ? { id } : {}) }));
      case 'status':
      case 'drain':
      case 'mesh':
      case 'crash':
        return this.operator(f, id);
      case 'hello':
        return this.error(id, ErrorCode.malformedFrame, 'hello was already sent');
      default:
        return this.error(
          id,
          typeof f.type === 'string' ? ErrorCode.unknownFrameType : ErrorCode.malformedFrame,
          typeof f.type === 'string'
            ? `unknown frame type ${JSON.stringify(f.type).slice(0, 80)}`
            : 'a frame needs a string "type"',
        );
    }
  }

  private request(f: Record<string, unknown>, id: string | undefined): void {
    if (id === undefined)
      return this.error(
        undefined,
        ErrorCode.malformedFrame,
        'a request needs an "id": 1-64 of A-Z a-z 0-9 _ - . :',
      );
    if (typeof f.name !== 'string')
      return this.error(id, ErrorCode.malformedFrame, 'a request needs a string "name"');
    const route = this.route;
    if (!route)
      return this.error(id, ErrorCode.forbidden, 'this token names no session to send requests to');
    const actor = route.actor;
    if (!Object.hasOwn(actor.handlers, f.name))
      return this.error(
        id,
        ErrorCode.unknownMessageType,
        `actor ${actor.name} has no handler ${JSON.stringify(f.name).slice(0, 80)}`,
      );
    if (!actor.clientHandlers.has(f.name))
      return this.error(
        id,
        ErrorCode.notCallable,
        `${actor.name}.${f.name} is internal; clients may call: ${[...actor.clientHandlers].join(', ') || 'nothing'}`,
      );
    const check =
      actor.messages && Object.hasOwn(actor.messages, f.name) ? actor.messages[f.name] : undefined;
    if (check) {
      let verdict: true | string;
      try {
        verdict = check(f.payload);
      } catch (err) {
        verdict = String((err as Error)?.message ?? err);
      }
      if (verdict !== true)
        return this.error(id, ErrorCode.invalidMessage, `${actor.name}.${f.name}: ${verdict}`);
    }
    if (this.ctx.draining) return; // not forwarded: the client resends it to another gateway
    if (
      !this.waiting.has(`${this.clientId}.${id}`) &&
      this.waiting.size >= this.ctx.limits.maxInFlight
    )
      return this.error(
        id,
        ErrorCode.tooManyInFlight,
        `at most ${this.ctx.limits.maxInFlight} requests unanswered`,
      );
    this.ctx.counters.requests++;
    // A W3C trace context from the client (optional; an invalid one is ignored, PROTOCOL.md).
    const traceparent = typeof f.traceparent === 'string' ? f.traceparent : undefined;
    route.forward(this, id, f.name, f.payload, traceparent);
  }

  private operator(f: Record<string, unknown>, id: string | undefined): void {
    if (id === undefined)
      return this.error(
        undefined,
        ErrorCode.malformedFrame,
        `a ${String(f.type)} frame needs an "id"`,
      );
    if (this.claims?.role !== 'operator')
      return this.error(id, ErrorCode.forbidden, `${String(f.type)} needs an operator token`);
    if (f.type === 'status') {
      if (f.sid !== undefined && (typeof f.sid !== 'string' || !sessionIdPattern.test(f.sid)))
        return this.error(id, ErrorCode.malformedFrame, 'status "sid" must be a session id');
      return void this.reply(id, this.ctx.status(f.sid));
    }
    if (f.type === 'mesh')
      return void this.ctx.mesh().then(
        (answer) => this.reply(id, answer),
        (err: unknown) => this.error(id, ErrorCode.internal, String((err as Error).message ?? err)),
      );
    if (f.type === 'crash') {
      if (typeof f.sid !== 'string' || !sessionIdPattern.test(f.sid))
        return this.error(id, ErrorCode.malformedFrame, 'crash needs a "sid"');
      if (f.epoch !== undefined && !(Number.isSafeInteger(f.epoch) && (f.epoch as number) >= 0))
        return this.error(id, ErrorCode.malformedFrame, 'crash "epoch" must be an integer');
      return void this.ctx.crash(f.sid, f.epoch as number | undefined).then(
        (answer) => this.reply(id, answer),
        (err: unknown) => {
          // The gateway's and the host's codes say what went wrong (crash_not_allowed, ...).
          const e = err as { code?: unknown; message?: unknown };
          const code = typeof e.code === 'string' ? e.code : ErrorCode.internal;
          this.error(id, code, String(e.message ?? err));
        },
      );
    }
    if (typeof f.host !== 'string' || !clientIdPattern.test(f.host))
      return this.error(id, ErrorCode.malformedFrame, 'drain needs a "host" id');
    this.ctx.drainHost(f.host).then(
      (report) => this.reply(id, report),
      (err: unknown) => {
        const e = err as { code?: unknown; message?: unknown };
        this.error(
          id,
          e.code === ErrorCode.unknownHost ? ErrorCode.unknownHost : ErrorCode.internal,
          String(e.message ?? err),
        );
      },
    );
  }

  private reply(id: string, result: unknown): void {
    this.sendText(JSON.stringify({ type: 'reply', id, result }, jsonReplacer));
  }

  private detach(reason: LeaveReason | undefined): void {
    for (const t of this.timers) clearTimeout(t);
    this.timers.length = 0;
    this.early = [];
    if (this.route) this.route.leave(this, reason);
    if (this.udpKey !== undefined) this.ctx.unregisterUdp(this);
    if (this.buckets) {
      this.buckets = undefined;
      this.ctx.releaseBuckets(this.clientId);
    }
  }

  private onClose(code: number): void {
    if (this.phase !== 'closing') {
      this.phase = 'closing';
      this.ctx.counters.closes[code] = (this.ctx.counters.closes[code] ?? 0) + 1;
      this.detach(code === 1000 || code === 1001 || code === 1005 ? 'closed' : 'lost');
    }
    for (const t of this.timers) clearTimeout(t);
    this.ctx.closed(this);
  }
}

/** Why a client left, when its gateway closed the connection with `code` (none: the session ended). */
function closedByGateway(code: number): LeaveReason | undefined {
  if (code === CloseCode.sessionClosed) return undefined;
  if (code === CloseCode.goingAway) return 'gateway';
  if (code === CloseCode.tokenExpired) return 'expired';
  return 'kicked';
}

function asText(data: RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.isBuffer(data) ? data.toString('utf8') : Buffer.from(data).toString('utf8');
}

function asBytes(data: RawData): Uint8Array {
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.isBuffer(data) ? data : new Uint8Array(data);
}
