/**
 * Errors of the gateway and its SDK, sorted by what the caller can do:
 * `retryable` ones may succeed if the same thing is tried again (the SDK
 * does so itself, with the same request id); the others are terminal: fix the
 * input, the token or the configuration.
 *
 * Browser-safe: no imports, the SDK uses these classes too.
 */
export class GatewayError extends Error {
  override name = 'GatewayError';
  /** Stable machine-readable code (the error frame's `code`, see PROTOCOL.md). */
  readonly code: string;
  /** True when the same call may succeed later. */
  readonly retryable: boolean;
  constructor(message: string, options: { code: string; retryable?: boolean; cause?: unknown }) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = options.code;
    this.retryable = options.retryable ?? false;
  }
}

/** A bad argument or option; the message names it and the fix. */
export class InvalidOptionError extends GatewayError {
  override name = 'InvalidOptionError';
  constructor(message: string) {
    super(message, { code: 'invalid_argument' });
  }
}

/** Why a token was refused. */
export type TokenProblem = 'malformed' | 'signature' | 'claims' | 'expired' | 'not_yet_valid';

/** A token the gateway does not accept; `problem` says why. Terminal: get a new token. */
export class TokenError extends GatewayError {
  override name = 'TokenError';
  readonly problem: TokenProblem;
  constructor(problem: TokenProblem, message: string) {
    super(message, { code: problem === 'expired' ? 'token_expired' : 'token_invalid' });
    this.problem = problem;
  }
}

/** The gateway answered a request with an error frame; `code` is the frame's. */
export class RequestError extends GatewayError {
  override name = 'RequestError';
  /** For `rate_limited`: how long the gateway asked to wait. */
  readonly retryAfterMs: number | undefined;
  constructor(code: string, message: string, retryable: boolean, retryAfterMs?: number) {
    super(message, { code, retryable });
    this.retryAfterMs = retryAfterMs;
  }
}

/**
 * The SDK's own deadline for a request passed. Retryable: the request may or
 * may not have been applied; sending it again with the same id applies it at most once.
 */
export class DeadlineError extends GatewayError {
  override name = 'DeadlineError';
  constructor(message: string) {
    super(message, { code: 'deadline', retryable: true });
  }
}

/** The SDK's bounded queue of unanswered requests is full. Retryable once replies come back. */
export class QueueFullError extends GatewayError {
  override name = 'QueueFullError';
  constructor(message: string) {
    super(message, { code: 'queue_full', retryable: true });
  }
}

/** The frame would exceed the gateway's `maxFrameBytes`; never sent. Terminal. */
export class FrameTooLargeError extends GatewayError {
  override name = 'FrameTooLargeError';
  constructor(message: string) {
    super(message, { code: 'frame_too_large' });
  }
}

/**
 * The connection is gone for good: closed by the caller, by a terminal close
 * code (bad token, unknown session), or no gateway answered in time.
 */
export class ConnectionClosedError extends GatewayError {
  override name = 'ConnectionClosedError';
  /** The WebSocket close code that ended it (0 when closed locally or never opened). */
  readonly closeCode: number;
  constructor(message: string, closeCode: number, cause?: unknown, code = 'closed') {
    super(message, { code, cause });
    this.closeCode = closeCode;
  }
}

/**
 * `connect` gave up: no gateway of the list welcomed the session within
 * `connectTimeoutMs` (a wrong URL, nothing listening, a gateway that never
 * answers the hello). Check the URLs, or call `connect` again later.
 */
export class GatewayUnreachableError extends ConnectionClosedError {
  override name = 'GatewayUnreachableError';
  /** The gateway URLs tried, in the order given. */
  readonly urls: readonly string[];
  constructor(message: string, urls: readonly string[], closeCode: number) {
    super(message, closeCode, undefined, 'unreachable');
    this.urls = urls;
  }
}
