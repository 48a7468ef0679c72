/**
 * The ftmesh client SDK: one session through one gateway at a time, moving to
 * another gateway when its gateway goes away, with every unanswered request
 * sent again under the same id (the session applies it once).
 *
 * The same code runs in browsers and in Node: it uses `globalThis.WebSocket`
 * when there is one, the `WebSocket` option when given, and else loads the
 * `ws` package. It imports nothing from Node; UDP (Node only) is loaded on
 * demand. See gateway/PROTOCOL.md for the wire protocol it speaks.
 */
import fastJsonPatch from 'fast-json-patch';
import {
  ConnectionClosedError,
  DeadlineError,
  FrameTooLargeError,
  GatewayUnreachableError,
  InvalidOptionError,
  QueueFullError,
  RequestError,
} from './errors.ts';
import {
  CloseCode,
  PROTOCOL_VERSION,
  SUBPROTOCOL,
  decodeClientDatagram,
  defaultLimits,
  encodeUdpDatagram,
  fromBase64Url,
  retryableErrorCodes,
  terminalCloseCodes,
  type ServerFrame,
  type Welcome,
} from './protocol.ts';
import { TokenBucket } from './rate-limit.ts';

/** The part of the WebSocket API the SDK uses: the browser's and the `ws` package's both fit. */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType: string;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (
  url: string,
  protocols?: string | string[],
) => WebSocketLike;

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** The signed token, or a function giving a fresh one (called before every connection). */
  token: string | (() => string | Promise<string>);
  /** The session expected; the gateway closes with 4403 when the token names another one. */
  sid?: string;
  /** A WebSocket constructor (default: `globalThis.WebSocket`, else the `ws` package). */
  WebSocket?: WebSocketConstructor;
  /** The SDK's own deadline for one request, across reconnects and retries (default 30,000 ms). */
  requestTimeoutMs?: number;
  /** Unanswered requests kept for re-sending (default 1,000); beyond it `request` rejects with QueueFullError. */
  maxPending?: number;
  /**
   * The first connection: `connect` rejects with GatewayUnreachableError when
   * no gateway of the list welcomed the session within this long (default
   * 5,000 ms). Once welcomed, losing a gateway is `reconnect`'s business.
   */
  connectTimeoutMs?: number;
  /** Reconnection to the next gateway of the list, once a gateway welcomed the session. */
  reconnect?: {
    /** Delay before the second attempt; the first is immediate (default 50 ms). */
    initialDelayMs?: number;
    maxDelayMs?: number;
    /** Give up (the session closes) after this long without a gateway (default 30,000 ms). */
    giveUpAfterMs?: number;
  };
  /** A ping every this long; a gateway silent for two of them is taken for dead (default 5,000 ms). */
  pingIntervalMs?: number;
  /** Node only: send and receive datagrams over UDP instead of the WebSocket (default false). */
  udp?: boolean;
  /** Called when the connection changes or the gateway reports an error not tied to a request. */
  onConnectionChange?: (event: ConnectionEvent) => void;
}

/** What {@link ConnectOptions.onConnectionChange} hears. */
export type ConnectionEvent =
  | { type: 'connected'; gateway: string; url: string; reconnects: number }
  | { type: 'disconnected'; code: number; reason: string }
  | { type: 'error'; code: string; message: string };

/** A client's handle on its session. */
export interface Session {
  /** The client id (the token's `sub`). */
  readonly clientId: string;
  /** The session (the token's `sid`); undefined for an operator token without one. */
  readonly sid: string | undefined;
  /** Id of the gateway currently connected (the last one, while reconnecting). */
  readonly gateway: string;
  readonly url: string;
  readonly connected: boolean;
  /** Connections made after the first. */
  readonly reconnects: number;
  /** Requests sent again after a reconnect. */
  readonly resent: number;
  /** Requests not answered yet. */
  readonly pending: number;
  /** The current connection's welcome (limits, UDP port and key); undefined while reconnecting. */
  readonly welcome: Welcome | undefined;
  /**
   * Sends a message to the session's actor; resolves with the handler's
   * reply once the gateway releases it (per the actor's consistency mode).
   * Rejects with RequestError (the gateway's or the actor's error),
   * DeadlineError, QueueFullError, FrameTooLargeError or ConnectionClosedError.
   * @example
   * const n = await session.request('add', 1);
   */
  request<T = unknown>(
    name: string,
    payload?: unknown,
    options?: {
      timeoutMs?: number;
      /**
       * A W3C trace context (`00-<trace id>-<span id>-<flags>`) the request
       * belongs to: the gateway's span and the session's become part of
       * that trace (PROTOCOL.md, "request"). Sent as it is; the SDK itself
       * traces nothing.
       */
      traceparent?: string;
    },
  ): Promise<T>;
  /**
   * This client's view of the session's state (the actor's `view`), kept
   * in sync by the gateway: the whole view on every (re)connection, then
   * JSON Patches as it changes. Undefined until the first arrives, and for
   * actors without a `view`.
   */
  readonly state: unknown;
  /** The session seq the {@link state} is at (-1 before the first). */
  readonly stateSeq: number;
  /**
   * Calls `fn` with every event of that name the actor emits (`'*'`: all);
   * returns an unsubscribe. `'state'` is the state sync: `fn(state, how)`
   * after every change of {@link state}, `how` being `'state'` for a whole
   * view (on every connection) or `'patch'` (so an actor should not name an
   * event `state`).
   */
  on(event: string, fn: (payload: unknown, event: string) => void): () => void;
  /** Calls `fn` with every datagram forwarded to this client; returns an unsubscribe. */
  onDatagram(fn: (data: Uint8Array, from: string) => void): () => void;
  /** Sends a datagram to the session (UDP when enabled, else the WebSocket); false when dropped. */
  sendDatagram(data: Uint8Array): boolean;
  /** Operator token: the gateway's view of the mesh (and of `sid`). */
  status(sid?: string): Promise<unknown>;
  /** Operator token: drains a host (its sessions move to their standbys); resolves with its report. */
  drainHost(hostId: string): Promise<unknown>;
  /** Operator token: hosts, open sessions with their standby's lag, recent failovers (the `mesh` frame). */
  mesh(): Promise<unknown>;
  /**
   * Operator token: SIGKILL of the process serving `sid`'s primary, which
   * must run with --allow-crash; with `epoch`, only while the session is in
   * it. Resolves with the host's answer, sent just before it dies.
   */
  crash(sid: string, epoch?: number): Promise<unknown>;
  /** Closes the connection; unanswered requests reject with ConnectionClosedError. Safe twice. */
  close(): Promise<void>;
  /** Resolves once closed, with the error that closed it (undefined after close()). */
  closed(): Promise<ConnectionClosedError | undefined>;
  [Symbol.asyncDispose](): Promise<void>;
}

type Pending = {
  frame: string;
  resolve: (value: any) => void;
  reject: (err: Error) => void;
  deadline: number;
  /** Sent on the current connection and not answered. */
  sent: boolean;
  attempts: number;
  /** A retryable refusal: send again at this time. */
  retryAt: number;
};

type UdpSocket = {
  send(msg: Uint8Array, port: number, address: string): void;
  on(
    event: 'message',
    fn: (msg: Uint8Array, rinfo: { address: string; port: number }) => void,
  ): void;
  close(): void;
};

const OPEN = 1;
const encoder = new TextEncoder();

function randomPrefix(): string {
  const bytes = new Uint8Array(6);
  globalThis.crypto.getRandomValues(bytes);
  let s = '';
  for (const b of bytes) s += b.toString(36).padStart(2, '0');
  return s;
}

async function loadWebSocket(
  given: WebSocketConstructor | undefined,
): Promise<WebSocketConstructor> {
  if (given) return given;
  const native = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (native) return native;
  // Not a literal: bundlers for browsers must not try to resolve it.
  const name = 'ws';
  try {
    const mod = (await import(name)) as {
      default?: WebSocketConstructor;
      WebSocket?: WebSocketConstructor;
    };
    const ctor = mod.WebSocket ?? mod.default;
    if (ctor) return ctor;
  } catch {
    // fall through
  }
  throw new InvalidOptionError(
    'WebSocket: no global WebSocket and no `ws` package; pass options.WebSocket',
  );
}

/**
 * Connects to the first gateway of `urls` that answers and resolves with the
 * session once the gateway welcomed the client; on a gateway's loss it moves
 * to the next URL. Rejects with ConnectionClosedError when the token is
 * refused or the session is unknown, with GatewayUnreachableError (a
 * ConnectionClosedError naming the URLs tried) when no gateway welcomed it
 * within `connectTimeoutMs`.
 * @example
 * const session = await connect(['ws://gw-a:7700', 'ws://gw-b:7700'], { token });
 * session.on('said', (p) => console.log(p));
 * await session.request('say', 'hello');
 */
export async function connect(
  urls: string | readonly string[],
  options: ConnectOptions,
): Promise<Session> {
  const list = typeof urls === 'string' ? [urls] : [...urls];
  if (!list.length) throw new InvalidOptionError('urls: pass at least one gateway URL');
  if (!options?.token)
    throw new InvalidOptionError('token: pass the signed token (or a function giving one)');
  const WebSocketCtor = await loadWebSocket(options.WebSocket);
  const client = new SessionConnection(list, options, WebSocketCtor);
  await client.start();
  return client;
}

class SessionConnection implements Session {
  clientId = '';
  sid: string | undefined;
  gateway = '';
  url: string;
  reconnects = 0;
  resent = 0;
  private ws: WebSocketLike | undefined;
  welcome: Welcome | undefined;
  private urlIndex = 0;
  private attempt = 0;
  private connectedOnce = false;
  private disconnectedAt = 0;
  private lastFrameAt = 0;
  private lastPingAt = 0;
  private reconnectAt = 0;
  private readonly pendingById = new Map<string, Pending>();
  /** Ids to send, in order: new requests while disconnected, all unanswered after a reconnect. */
  private queue: string[] = [];
  private inFlight = 0;
  /** Paces sends to the gateway's announced rate, so that a busy client is not refused. */
  private pace: TokenBucket | undefined;
  private readonly prefix = randomPrefix();
  private counter = 0;
  private readonly listeners = new Map<string, Set<(payload: unknown, event: string) => void>>();
  state: unknown = undefined;
  stateSeq = -1;
  /** The id of the last connection welcomed, named in the next hello. */
  private lastConnection: string | undefined;
  private readonly datagramListeners = new Set<(data: Uint8Array, from: string) => void>();
  private udp: { socket: UdpSocket; host: string; port: number; key: Uint8Array } | undefined;
  private udpSocket: Promise<UdpSocket> | undefined;
  private ticker: ReturnType<typeof setInterval> | undefined;
  private phase: 'connecting' | 'open' | 'closed' = 'connecting';
  private firstWelcome: { resolve: () => void; reject: (e: Error) => void } | undefined;
  private resolveClosed: (e: ConnectionClosedError | undefined) => void = () => undefined;
  private readonly closedPromise = new Promise<ConnectionClosedError | undefined>(
    (r) => (this.resolveClosed = r),
  );
  private readonly requestTimeoutMs: number;
  private readonly maxPending: number;
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly giveUpAfterMs: number;
  private readonly connectTimeoutMs: number;
  private readonly pingIntervalMs: number;
  /** Gateways tried before the first welcome, and how the last attempt ended: for GatewayUnreachableError. */
  private readonly tried = new Set<string>();
  private lastLoss = { code: 0, reason: '' };

  constructor(
    private readonly urls: string[],
    private readonly options: ConnectOptions,
    private readonly WebSocketCtor: WebSocketConstructor,
  ) {
    this.url = urls[0]!;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
    this.maxPending = options.maxPending ?? 1_000;
    this.initialDelayMs = options.reconnect?.initialDelayMs ?? 50;
    this.maxDelayMs = options.reconnect?.maxDelayMs ?? 2_000;
    this.giveUpAfterMs = options.reconnect?.giveUpAfterMs ?? 30_000;
    this.connectTimeoutMs = options.connectTimeoutMs ?? 5_000;
    this.pingIntervalMs = options.pingIntervalMs ?? 5_000;
  }

  get connected(): boolean {
    return this.phase === 'open' && this.welcome !== undefined;
  }

  private get isClosed(): boolean {
    return this.phase === 'closed';
  }

  get pending(): number {
    return this.pendingById.size;
  }

  start(): Promise<void> {
    this.disconnectedAt = Date.now();
    const welcomed = new Promise<void>(
      (resolve, reject) => (this.firstWelcome = { resolve, reject }),
    );
    // One timer per session: deadlines, retries, pings, reconnects.
    this.ticker = setInterval(() => this.tick(), 25);
    (this.ticker as { unref?: () => void }).unref?.();
    void this.open();
    return welcomed;
  }

  request<T>(
    name: string,
    payload?: unknown,
    opts: { timeoutMs?: number; traceparent?: string } = {},
  ): Promise<T> {
    if (typeof name !== 'string')
      return Promise.reject(new InvalidOptionError('name: a message type string'));
    const { traceparent } = opts;
    if (traceparent !== undefined && typeof traceparent !== 'string')
      return Promise.reject(new InvalidOptionError('traceparent: a W3C traceparent string'));
    return this.call<T>(
      (id) => ({
        type: 'request',
        id,
        name,
        ...(payload === undefined ? {} : { payload }),
        ...(traceparent === undefined ? {} : { traceparent }),
      }),
      opts.timeoutMs,
    );
  }

  status(sid?: string): Promise<unknown> {
    return this.call((id) => ({ type: 'status', id, ...(sid === undefined ? {} : { sid }) }));
  }

  drainHost(hostId: string): Promise<unknown> {
    return this.call((id) => ({ type: 'drain', id, host: hostId }), 120_000);
  }

  mesh(): Promise<unknown> {
    return this.call((id) => ({ type: 'mesh', id }));
  }

  crash(sid: string, epoch?: number): Promise<unknown> {
    return this.call((id) => ({
      type: 'crash',
      id,
      sid,
      ...(epoch === undefined ? {} : { epoch }),
    }));
  }

  on(event: string, fn: (payload: unknown, event: string) => void): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => void set.delete(fn);
  }

  onDatagram(fn: (data: Uint8Array, from: string) => void): () => void {
    this.datagramListeners.add(fn);
    return () => void this.datagramListeners.delete(fn);
  }

  sendDatagram(data: Uint8Array): boolean {
    const limit = this.welcome?.limits.maxDatagramBytes ?? defaultLimits.maxDatagramBytes;
    if (!this.connected || data.length === 0 || data.length > limit) return false;
    if (this.udp) {
      this.udp.socket.send(encodeUdpDatagram(this.udp.key, data), this.udp.port, this.udp.host);
      return true;
    }
    this.ws!.send(data);
    return true;
  }

  async close(): Promise<void> {
    this.finish(undefined);
    await this.closedPromise;
  }

  closed(): Promise<ConnectionClosedError | undefined> {
    return this.closedPromise;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ---- requests --------------------------------------------------------------------------

  private call<T>(build: (id: string) => object, timeoutMs?: number): Promise<T> {
    if (this.phase === 'closed')
      return Promise.reject(new ConnectionClosedError('the session is closed', 0));
    if (this.pendingById.size >= this.maxPending)
      return Promise.reject(
        new QueueFullError(`${this.maxPending} requests unanswered: wait for replies`),
      );
    const id = `${this.prefix}.${(++this.counter).toString(36)}`;
    let frame: string;
    try {
      frame = JSON.stringify(build(id));
    } catch (err) {
      return Promise.reject(
        new InvalidOptionError(`payload: not JSON-serialisable (${(err as Error).message})`),
      );
    }
    const max = this.welcome?.limits.maxFrameBytes ?? defaultLimits.maxFrameBytes;
    if (frame.length * 3 > max && encoder.encode(frame).length > max)
      return Promise.reject(
        new FrameTooLargeError(`the request frame exceeds the gateway's ${max} bytes`),
      );
    return new Promise<T>((resolve, reject) => {
      this.pendingById.set(id, {
        frame,
        resolve,
        reject,
        deadline: Date.now() + (timeoutMs ?? this.requestTimeoutMs),
        sent: false,
        attempts: 0,
        retryAt: 0,
      });
      this.queue.push(id);
      this.pump();
    });
  }

  /** Sends queued requests while the gateway's in-flight limit allows. */
  private pump(): void {
    if (!this.connected || this.ws?.readyState !== OPEN) return;
    const window = this.welcome!.limits.maxInFlight;
    const now = Date.now();
    while (this.queue.length && this.inFlight < window) {
      const id = this.queue[0]!;
      const p = this.pendingById.get(id);
      if (!p || p.sent) {
        this.queue.shift();
        continue;
      }
      if (!this.pace!.take(now)) return; // the ticker sends the rest
      this.queue.shift();
      p.sent = true;
      p.attempts++;
      this.inFlight++;
      this.ws.send(p.frame);
    }
  }

  private settle(id: string): Pending | undefined {
    const p = this.pendingById.get(id);
    if (!p) return undefined; // answered already: a duplicate reply
    this.pendingById.delete(id);
    if (p.sent) this.inFlight--;
    return p;
  }

  private onServerFrame(f: ServerFrame): void {
    switch (f.type) {
      case 'welcome':
        return this.onWelcome(f);
      case 'reply': {
        this.settle(f.id)?.resolve(f.result);
        return this.pump();
      }
      case 'error': {
        if (f.id === undefined) {
          this.options.onConnectionChange?.({ type: 'error', code: f.code, message: f.message });
          return;
        }
        const p = this.pendingById.get(f.id);
        if (!p) return;
        if (f.retryable && retryableErrorCodes.has(f.code)) {
          // Sent again later under the same id: the session applies it at most once.
          const delay = f.retryAfterMs ?? Math.min(1_000, 25 * 2 ** Math.min(p.attempts, 6));
          if (Date.now() + delay < p.deadline) {
            if (p.sent) this.inFlight--;
            p.sent = false;
            p.retryAt = Date.now() + delay;
            return this.pump();
          }
        }
        this.settle(f.id)?.reject(new RequestError(f.code, f.message, f.retryable, f.retryAfterMs));
        return this.pump();
      }
      case 'event': {
        for (const key of [f.name, '*'])
          for (const fn of this.listeners.get(key) ?? []) fn(f.payload, f.name);
        return;
      }
      case 'state':
      case 'patch': {
        if (f.type === 'state') this.state = f.state;
        else if (this.state === undefined)
          return; // a patch before any state: not from a v1 gateway
        else this.state = fastJsonPatch.applyPatch(this.state, f.ops, false, false).newDocument;
        this.stateSeq = f.seq;
        for (const fn of this.listeners.get('state') ?? []) fn(this.state, f.type);
        return;
      }
      default:
        return; // pong, and frame types of later versions
    }
  }

  private onWelcome(w: Welcome): void {
    this.welcome = w;
    if (typeof w.connection === 'string') this.lastConnection = w.connection;
    // A margin below the gateway's own bucket: frames bunch up on the way there.
    this.pace = new TokenBucket(
      w.limits.requestsPerSecond * 0.9,
      Math.max(1, Math.floor(w.limits.requestBurst / 2)),
      Date.now(),
    );
    this.clientId = w.client;
    this.sid = w.sid;
    this.gateway = w.gateway;
    this.attempt = 0;
    if (this.connectedOnce) this.reconnects++;
    // Everything unanswered goes again, in the order it was first sent, under its own id.
    const again: string[] = [];
    for (const [id, p] of this.pendingById) {
      if (p.sent || p.attempts > 0) this.resent++;
      p.sent = false;
      again.push(id);
    }
    this.inFlight = 0;
    this.queue = again;
    this.options.onConnectionChange?.({
      type: 'connected',
      gateway: w.gateway,
      url: this.url,
      reconnects: this.reconnects,
    });
    if (this.options.udp && w.udp) void this.startUdp(w.udp);
    else this.udp = undefined;
    if (!this.connectedOnce) {
      this.connectedOnce = true;
      this.firstWelcome?.resolve();
      this.firstWelcome = undefined;
    }
    this.pump();
  }

  // ---- the connection --------------------------------------------------------------------

  private async open(): Promise<void> {
    if (this.phase === 'closed') return;
    this.phase = 'connecting';
    this.welcome = undefined;
    this.url = this.urls[this.urlIndex % this.urls.length]!;
    if (!this.connectedOnce) this.tried.add(this.url);
    let token: string;
    try {
      token =
        typeof this.options.token === 'function' ? await this.options.token() : this.options.token;
    } catch (err) {
      return this.finish(new ConnectionClosedError(`token: ${(err as Error).message}`, 0, err));
    }
    if (this.isClosed) return; // closed while the token came
    let ws: WebSocketLike;
    try {
      ws = new this.WebSocketCtor(this.url, [SUBPROTOCOL]);
    } catch (err) {
      if (!this.connectedOnce && this.urls.length === 1)
        return this.finish(
          new ConnectionClosedError(
            `cannot connect to ${this.url}: ${(err as Error).message}`,
            0,
            err,
          ),
        );
      return this.lost(1006, String((err as Error).message));
    }
    this.ws = ws;
    this.lastFrameAt = Date.now();
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => {
      this.lastFrameAt = Date.now();
      ws.send(
        JSON.stringify({
          type: 'hello',
          v: PROTOCOL_VERSION,
          token,
          ...(this.options.sid ? { sid: this.options.sid } : {}),
          // The connection this one replaces: the session learns it left.
          ...(this.lastConnection ? { previous: this.lastConnection } : {}),
        }),
      );
    };
    ws.onmessage = (ev) => {
      this.lastFrameAt = Date.now();
      const data = ev.data;
      if (typeof data === 'string') {
        let f: ServerFrame;
        try {
          f = JSON.parse(data) as ServerFrame;
        } catch {
          return;
        }
        if (f.type === 'welcome') this.phase = 'open';
        this.onServerFrame(f);
      } else {
        const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : (data as Uint8Array);
        this.onDatagramIn(bytes);
      }
    };
    ws.onerror = () => undefined; // onclose follows
    ws.onclose = (ev) => {
      if (this.ws === ws) this.lost(ev.code, ev.reason);
    };
  }

  /** The current socket is gone (closed, or taken for dead): reconnect, unless that cannot help. */
  private lost(code: number, reason: string): void {
    const ws = this.ws;
    this.ws = undefined;
    if (ws) this.abandon(ws);
    if (this.phase === 'closed') return;
    const wasOpen = this.welcome !== undefined;
    this.welcome = undefined;
    this.phase = 'connecting';
    this.inFlight = 0;
    for (const p of this.pendingById.values()) p.sent = false;
    if (wasOpen) this.disconnectedAt = Date.now();
    this.options.onConnectionChange?.({ type: 'disconnected', code, reason });
    const renewable = code === CloseCode.tokenExpired && typeof this.options.token === 'function';
    if (terminalCloseCodes.has(code) && !renewable)
      return this.finish(
        new ConnectionClosedError(`the gateway closed the connection: ${code} ${reason}`, code),
      );
    this.lastLoss = { code, reason };
    if (!this.connectedOnce) {
      if (Date.now() - this.disconnectedAt >= this.connectTimeoutMs)
        return this.finish(this.unreachable());
    } else if (Date.now() - this.disconnectedAt > this.giveUpAfterMs)
      return this.finish(
        new ConnectionClosedError(
          `no gateway answered for ${this.giveUpAfterMs} ms (last: ${code} ${reason})`,
          code,
        ),
      );
    // The next gateway at once; then back off.
    this.urlIndex++;
    const delay =
      this.attempt === 0
        ? 0
        : Math.min(this.maxDelayMs, this.initialDelayMs * 2 ** (this.attempt - 1));
    this.attempt++;
    this.reconnectAt = Date.now() + delay;
    if (delay === 0) {
      this.reconnectAt = 0;
      void this.open();
    }
  }

  /** The error of a session no gateway ever welcomed within `connectTimeoutMs`. */
  private unreachable(): GatewayUnreachableError {
    const last = this.ws
      ? `${this.url} has not welcomed it`
      : `${this.lastLoss.code} ${this.lastLoss.reason}`.trim();
    const urls = [...this.tried];
    return new GatewayUnreachableError(
      `no gateway welcomed the session within ${this.connectTimeoutMs} ms; tried ${urls.join(', ')} (last: ${last})`,
      urls,
      this.lastLoss.code,
    );
  }

  private abandon(ws: WebSocketLike): void {
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => undefined;
    try {
      const terminate = (ws as { terminate?: () => void }).terminate;
      if (terminate) terminate.call(ws);
      else ws.close();
    } catch {
      // already closed
    }
  }

  private tick(): void {
    const now = Date.now();
    for (const [id, p] of this.pendingById) {
      if (p.deadline <= now) {
        this.settle(id);
        p.reject(new DeadlineError(`request ${id}: no reply within its deadline`));
      } else if (!p.sent && p.retryAt && p.retryAt <= now) {
        p.retryAt = 0;
        this.queue.push(id);
      }
    }
    if (this.phase === 'closed') return;
    // Before the first welcome, whatever the attempt is doing (refused, backing off, no answer).
    if (!this.connectedOnce && now - this.disconnectedAt >= this.connectTimeoutMs)
      return this.finish(this.unreachable());
    if (this.reconnectAt && now >= this.reconnectAt) {
      this.reconnectAt = 0;
      void this.open();
      return;
    }
    if (!this.ws) {
      if (!this.reconnectAt && Date.now() - this.disconnectedAt > this.giveUpAfterMs)
        this.finish(
          new ConnectionClosedError(`no gateway answered for ${this.giveUpAfterMs} ms`, 0),
        );
      return;
    }
    // A gateway (or the path to it) that went silent: move on.
    if (now - this.lastFrameAt > 2 * this.pingIntervalMs) return this.lost(1006, 'gateway silent');
    if (
      this.connected &&
      now - this.lastPingAt >= this.pingIntervalMs &&
      now - this.lastFrameAt >= this.pingIntervalMs
    ) {
      this.lastPingAt = now;
      this.ws.send('{"type":"ping"}');
    }
    this.pump();
  }

  private finish(err: ConnectionClosedError | undefined): void {
    if (this.phase === 'closed') return;
    this.phase = 'closed';
    clearInterval(this.ticker);
    const ws = this.ws;
    this.ws = undefined;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = () => undefined;
      try {
        ws.close(1000, 'client closed');
      } catch {
        // not open
      }
    }
    this.udp = undefined;
    // The one UDP socket, once it exists.
    this.udpSocket?.then((s) => s.close()).catch(() => undefined);
    const reason = err ?? new ConnectionClosedError('the session was closed', 0);
    for (const p of this.pendingById.values()) p.reject(reason);
    this.pendingById.clear();
    this.queue = [];
    this.firstWelcome?.reject(reason);
    this.firstWelcome = undefined;
    this.resolveClosed(err);
  }

  // ---- datagrams -------------------------------------------------------------------------

  private onDatagramIn(bytes: Uint8Array): void {
    const d = decodeClientDatagram(bytes);
    if (!d || !d.payload.length) return; // a registration ack, or not ours
    for (const fn of this.datagramListeners) fn(d.payload, d.from);
  }

  private async startUdp(info: { port: number; key: string }): Promise<void> {
    const host = new URL(this.url).hostname.replace(/^\[|\]$/g, '');
    this.udpSocket ??= (async () => {
      const name = 'node:dgram';
      const dgram = (await import(name)) as {
        createSocket(type: string): UdpSocket & { unref?: () => void };
      };
      const socket = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
      socket.on('message', (msg) => this.onDatagramIn(msg));
      return socket;
    })();
    const socket = await this.udpSocket;
    if (this.phase === 'closed') return; // finish() closes it
    const key = fromBase64Url(info.key);
    this.udp = { socket, host, port: info.port, key };
    // An empty datagram tells the gateway where to send ours; sent twice, UDP may drop one.
    socket.send(encodeUdpDatagram(key, new Uint8Array(0)), info.port, host);
    socket.send(encodeUdpDatagram(key, new Uint8Array(0)), info.port, host);
  }
}
