/**
 * The gateway's wire protocol, version 1: the constants and the few byte
 * layouts that the gateway and the SDK share. gateway/PROTOCOL.md is the
 * normative description; this file must agree with it.
 *
 * Browser-safe: it imports nothing at run time, so the SDK can use it in any runtime.
 */
import type { Operation } from 'fast-json-patch';

/** The protocol version a hello names and a welcome confirms. */
export const PROTOCOL_VERSION = 1;

/** The WebSocket subprotocol of version 1; the gateway selects it when offered. */
export const SUBPROTOCOL = 'ftmesh.v1';

/** WebSocket close codes the gateway uses (besides the standard 1000, 1001, 1007, 1009, 1011, 1013). */
export const CloseCode = {
  /** The gateway is shutting down or draining: reconnect to another one. */
  goingAway: 1001,
  /** A text frame that is not valid UTF-8 (closed by the WebSocket layer). */
  invalidUtf8: 1007,
  /** A frame larger than `maxFrameBytes` (closed by the WebSocket layer). */
  tooLarge: 1009,
  /** The gateway failed unexpectedly: reconnect. */
  internal: 1011,
  /** The gateway is at its connection limit: try another one. */
  tryAgainLater: 1013,
  /** The first frame was not a valid hello, or the version is not supported. */
  protocol: 4400,
  /** The token is malformed, not signed by a key the gateway trusts, or its claims are invalid. */
  tokenInvalid: 4401,
  /** The token's `exp` has passed (at the hello, or while connected). */
  tokenExpired: 4402,
  /** The token does not grant what the hello asks (another session). */
  forbidden: 4403,
  /** No such session on the mesh (or its actor is not one this gateway serves). */
  unknownSession: 4404,
  /** The session ended (`ctx.close()`, `closeSession`, `ftmesh session close`). */
  sessionClosed: 4410,
  /** No hello within `helloTimeoutMs`. */
  helloTimeout: 4408,
  /** The client does not read fast enough: its send buffer passed `maxBufferedBytes`. */
  slowConsumer: 4409,
  /** The client kept sending over its rate limit (`maxRejectedPerSecond` frames refused within a second). */
  flood: 4429,
} as const;

/** Close codes after which a client must not reconnect with the same token (it would fail again). */
export const terminalCloseCodes: ReadonlySet<number> = new Set([
  CloseCode.protocol,
  CloseCode.tokenInvalid,
  CloseCode.tokenExpired,
  CloseCode.forbidden,
  CloseCode.unknownSession,
  CloseCode.sessionClosed,
]);

/** Codes of error frames. */
export const ErrorCode = {
  /** The frame is not a JSON object of a known shape; nothing was forwarded. */
  malformedFrame: 'malformed_frame',
  /** The frame's `type` is not one of protocol v1. */
  unknownFrameType: 'unknown_frame_type',
  /** The session's actor has no handler of this name; nothing was forwarded. */
  unknownMessageType: 'unknown_message_type',
  /** The handler is internal (not in the actor's `clientHandlers`); nothing was forwarded. */
  notCallable: 'not_callable',
  /** The payload fails the actor's check of this message type; nothing was forwarded. */
  invalidMessage: 'invalid_message',
  /** Over the client's request rate; resend the same id after `retryAfterMs`. */
  rateLimited: 'rate_limited',
  /** Too many requests of this client unanswered at once; resend the same id later. */
  tooManyInFlight: 'too_many_in_flight',
  /** The token does not allow this frame (an operator frame with a client token, ...). */
  forbidden: 'forbidden',
  /** No released reply before the gateway's deadline; resend the same id (applied at most once). */
  requestTimeout: 'request_timeout',
  /** The actor's handler threw; the transaction was rolled back. */
  handlerError: 'handler_error',
  /** A drain named a host that is not live. */
  unknownHost: 'unknown_host',
  /** A crash named a session the mesh has no open record of. */
  unknownSession: 'unknown_session',
  /** A crash named the epoch the operator saw, and the session is past it (it failed over already). */
  staleEpoch: 'stale_epoch',
  /** The host serving the session's primary was not started with --allow-crash: it refused. */
  crashNotAllowed: 'crash_not_allowed',
  /** The reply or the operation failed in the gateway or the mesh. */
  internal: 'internal',
} as const;

/** Error codes after which sending the same frame again (same id) may succeed. */
export const retryableErrorCodes: ReadonlySet<string> = new Set([
  ErrorCode.rateLimited,
  ErrorCode.tooManyInFlight,
  ErrorCode.requestTimeout,
  'no_responder',
]);

/** The limits a gateway enforces, announced in the welcome frame. */
export interface Limits {
  /** Largest text or binary frame accepted, in bytes (default 65,536). */
  maxFrameBytes: number;
  /** Largest datagram payload accepted, in bytes (default 1,200). */
  maxDatagramBytes: number;
  /** Sustained requests per second per client id (default 1,000). */
  requestsPerSecond: number;
  /**
   * Requests a client may send at once above the sustained rate (default 256).
   * At least `maxInFlight`: a client that reconnects re-sends up to that many at once.
   */
  requestBurst: number;
  /** Sustained datagrams per second per client id (default 2,000). */
  datagramsPerSecond: number;
  /** Datagram burst (default 400). */
  datagramBurst: number;
  /** Requests of one client unanswered at once (default 256). */
  maxInFlight: number;
  /** Bytes queued towards a client before it counts as a slow consumer (default 1 MiB). */
  maxBufferedBytes: number;
  /** How long the gateway waits for a released reply (default 10,000 ms). */
  requestTimeoutMs: number;
  /** How long a new connection has to send its hello (default 5,000 ms). */
  helloTimeoutMs: number;
  /** Rate-limited frames within one second that close the connection with 4429 (default 1,000). */
  maxRejectedPerSecond: number;
}

/** The default {@link Limits}, in one place. */
export const defaultLimits: Readonly<Limits> = Object.freeze({
  maxFrameBytes: 65_536,
  maxDatagramBytes: 1_200,
  requestsPerSecond: 1_000,
  requestBurst: 256,
  datagramsPerSecond: 2_000,
  datagramBurst: 400,
  maxInFlight: 256,
  maxBufferedBytes: 1 << 20,
  requestTimeoutMs: 10_000,
  helloTimeoutMs: 5_000,
  maxRejectedPerSecond: 1_000,
});

/** A request id as a client picks it: 1-64 of A-Z a-z 0-9 _ - . : */
export const requestIdPattern = /^[A-Za-z0-9_.:-]{1,64}$/;

/** A client id (`sub`) or a host id: 1-64 of A-Z a-z 0-9 _ - */
export const clientIdPattern = /^[A-Za-z0-9_-]{1,64}$/;

/** A session id (`sid`), as the runtime allows: 1-128 of A-Z a-z 0-9 _ - */
export const sessionIdPattern = /^[A-Za-z0-9_-]{1,128}$/;

/** A connection id, as a welcome names it and a hello's `previous` repeats it. */
export const connectionIdPattern = /^[A-Za-z0-9_-]{1,64}\.[a-z0-9]{1,12}$/;

/** An actor name (`defineActor`), as the `actor` claim names it. */
export const actorNamePattern = /^[A-Za-z0-9_-]{1,64}$/;

/** First byte of every datagram of protocol v1 (UDP both ways, and WebSocket binary frames to the client). */
export const DATAGRAM_VERSION = 1;

/** Bytes of the per-connection UDP key the welcome hands out. */
export const UDP_KEY_BYTES = 8;

/** Header of a client's UDP datagram: [version][key]. */
export const UDP_HEADER_BYTES = 1 + UDP_KEY_BYTES;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * A datagram towards a client, on UDP or in a WebSocket binary frame:
 * `[u8 version=1][u8 fromLength][from (UTF-8)][payload]`.
 */
export function encodeClientDatagram(from: string, payload: Uint8Array): Uint8Array {
  const f = encoder.encode(from);
  if (f.length > 255) throw new RangeError(`datagram sender id of ${f.length} bytes: at most 255`);
  const out = new Uint8Array(2 + f.length + payload.length);
  out[0] = DATAGRAM_VERSION;
  out[1] = f.length;
  out.set(f, 2);
  out.set(payload, 2 + f.length);
  return out;
}

/** Decodes {@link encodeClientDatagram}'s layout; undefined when the bytes do not fit it. */
export function decodeClientDatagram(
  bytes: Uint8Array,
): { from: string; payload: Uint8Array } | undefined {
  if (bytes.length < 2 || bytes[0] !== DATAGRAM_VERSION) return undefined;
  const n = bytes[1]!;
  if (bytes.length < 2 + n) return undefined;
  return { from: decoder.decode(bytes.subarray(2, 2 + n)), payload: bytes.subarray(2 + n) };
}

/** A client's UDP datagram to the gateway: `[u8 version=1][8-byte key][payload]`. */
export function encodeUdpDatagram(key: Uint8Array, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(UDP_HEADER_BYTES + payload.length);
  out[0] = DATAGRAM_VERSION;
  out.set(key.subarray(0, UDP_KEY_BYTES), 1);
  out.set(payload, UDP_HEADER_BYTES);
  return out;
}

/** base64url without padding, without Buffer (browsers). */
export function toBase64Url(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** Inverse of {@link toBase64Url}. @throws when the text is not base64url */
export function fromBase64Url(text: string): Uint8Array {
  const b64 = text.replace(/-/g, '+').replace(/_/g, '/');
  const bin = atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// ---- frames (JSON text frames) -------------------------------------------------------------

/** Frames a client sends. */
export type ClientFrame =
  | { type: 'hello'; v: number; token: string; sid?: string; previous?: string }
  | { type: 'request'; id: string; name: string; payload?: unknown; traceparent?: string }
  | { type: 'ping'; id?: string }
  | { type: 'status'; id: string; sid?: string }
  | { type: 'drain'; id: string; host: string }
  | { type: 'mesh'; id: string }
  | { type: 'crash'; id: string; sid: string; epoch?: number };

/** What the welcome frame says about the connection. */
export interface Welcome {
  type: 'welcome';
  v: number;
  /** The gateway's id: which gateway the client reached. */
  gateway: string;
  /** The token's `sub`: the client id every request id is namespaced with. */
  client: string;
  /** The session this connection reaches; absent for an operator token without one. */
  sid?: string;
  /**
   * This connection's id (`<gateway>.<n>`): a client that reconnects names it
   * as `previous` in its next hello, so the session learns that connection left.
   */
  connection: string;
  role: 'client' | 'operator';
  /** The token's expiry (seconds since the epoch): the connection closes with 4402 then. */
  exp: number;
  /** UDP datagrams: the gateway's port and this connection's key (base64url); absent without UDP. */
  udp?: { port: number; key: string };
  limits: Limits;
}

/** Frames the gateway sends. */
export type ServerFrame =
  | Welcome
  | { type: 'reply'; id: string; result?: unknown }
  | {
      type: 'error';
      id?: string;
      code: string;
      message: string;
      retryable: boolean;
      retryAfterMs?: number;
    }
  | { type: 'event'; name: string; payload?: unknown }
  /** The client's whole view of the session's state, at seq `seq` (on join). */
  | { type: 'state'; seq: number; state: unknown }
  /** RFC 6902 operations taking the client's view to the one at seq `seq`. */
  | { type: 'patch'; seq: number; ops: Operation[] }
  | { type: 'pong'; id?: string };

/**
 * JSON.stringify replacer for actor values: MessagePack carries more than
 * JSON, so Map becomes an object, Set an array, binary a base64url string,
 * bigint a decimal string (PROTOCOL.md, "Values").
 */
export function jsonReplacer(this: unknown, key: string, value: unknown): unknown {
  // The holder's own value: Node's Buffer would already have been through its toJSON.
  const raw = (this as Record<string, unknown>)[key];
  if (raw instanceof Uint8Array) return toBase64Url(raw);
  if (value instanceof Map) return Object.fromEntries(value);
  if (value instanceof Set) return [...value];
  if (typeof value === 'bigint') return value.toString();
  return value;
}
