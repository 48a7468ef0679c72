/**
 * Errors of the runtime, sorted by what the caller can do about them.
 *
 * - `retryable`: the same call may succeed later (a timeout, no responder yet).
 * - otherwise the call is terminal: fix the input or the code, retrying the same thing fails again.
 *
 * Every error has a stable `code` that travels on the wire, so a remote caller
 * gets the same class back (see {@link errorFromWire}).
 */
export class FtmError extends Error {
  override name = 'FtmError';
  /** Stable machine-readable code, also used on the wire. */
  readonly code: string = 'ftm_error';
  /** True when the same call may succeed if tried again later. */
  readonly retryable: boolean = false;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** A bad argument at an API boundary; the message names the argument and the fix. */
export class InvalidArgumentError extends FtmError {
  override name = 'InvalidArgumentError';
  override readonly code = 'invalid_argument';
}

/** The actor's handler threw: the transaction was rolled back, the session goes on. */
export class HandlerError extends FtmError {
  override name = 'HandlerError';
  override readonly code = 'handler_error';
}

/** The message type has no handler in the session's actor. */
export class UnknownMessageTypeError extends FtmError {
  override name = 'UnknownMessageTypeError';
  override readonly code = 'unknown_message_type';
}

/** No actor of that name is registered on this host. */
export class UnknownActorError extends FtmError {
  override name = 'UnknownActorError';
  override readonly code = 'unknown_actor';
}

/** The session is not open (here, or anywhere the caller can reach). */
export class SessionNotFoundError extends FtmError {
  override name = 'SessionNotFoundError';
  override readonly code = 'session_not_found';
}

/** A session with this id already exists; open it under another id or restore it. */
export class SessionExistsError extends FtmError {
  override name = 'SessionExistsError';
  override readonly code = 'session_exists';
}

/** Output of an older epoch than the receiver knows: refused, nothing applied. */
export class StaleEpochError extends FtmError {
  override name = 'StaleEpochError';
  override readonly code = 'stale_epoch';
}

/** A patch frame that cannot be decoded or applied: refused, the replica stays intact and resyncs. */
export class CorruptPatchError extends FtmError {
  override name = 'CorruptPatchError';
  override readonly code = 'corrupt_patch';
}

/** The payload does not pass the actor's declared check for its message type; nothing was applied. */
export class InvalidMessageError extends FtmError {
  override name = 'InvalidMessageError';
  override readonly code = 'invalid_message';
}

/** The host (or every host) is at its capacity: start a host or raise the capacity. */
export class CapacityError extends FtmError {
  override name = 'CapacityError';
  override readonly code = 'capacity';
}

/** A frame that is not a valid ftmesh wire frame. */
export class MalformedFrameError extends FtmError {
  override name = 'MalformedFrameError';
  override readonly code = 'malformed_frame';
}

/** No reply (or no release) within the deadline; the request may or may not have been applied. */
export class RequestTimeoutError extends FtmError {
  override name = 'RequestTimeoutError';
  override readonly code = 'request_timeout';
  override readonly retryable = true;
}

/** Nobody serves the subject right now (no primary yet, or between owners). */
export class NoResponderError extends FtmError {
  override name = 'NoResponderError';
  override readonly code = 'no_responder';
  override readonly retryable = true;
}

/** The resource was closed; create a new one. */
export class ClosedError extends FtmError {
  override name = 'ClosedError';
  override readonly code = 'closed';
}

/**
 * A compare-and-swap on a KV record lost: the record changed since it was
 * read. Read it again and decide again.
 */
export class KvConflictError extends FtmError {
  override name = 'KvConflictError';
  override readonly code = 'kv_conflict';
}

/**
 * The log refused an append: another writer appended since this one's last
 * message. For a writer whose epoch marker already landed, it is fenced.
 */
export class LogConflictError extends FtmError {
  override name = 'LogConflictError';
  override readonly code = 'log_conflict';
}

/** A wire message of the wrong shape: dropped and counted, never applied. */
export class MalformedMessageError extends FtmError {
  override name = 'MalformedMessageError';
  override readonly code = 'malformed_message';
}

/** A worker-thread job failed; delivered to the actor as a message, reported here for the host. */
export class WorkerJobError extends FtmError {
  override name = 'WorkerJobError';
  override readonly code = 'worker_job_failed';
}

/** A telemetry call threw (a fault of the OpenTelemetry SDK or its exporter); the runtime went on. */
export class TelemetryError extends FtmError {
  override name = 'TelemetryError';
  override readonly code = 'telemetry';
}

/**
 * A host refused to crash its own process on request: it was started without
 * `allowCrash` (`ftmesh host --allow-crash`). Terminal: start it with the option.
 */
export class CrashNotAllowedError extends FtmError {
  override name = 'CrashNotAllowedError';
  override readonly code = 'crash_not_allowed';
}

const byCode: Record<string, new (message: string) => FtmError> = {
  invalid_argument: InvalidArgumentError,
  invalid_message: InvalidMessageError,
  capacity: CapacityError,
  handler_error: HandlerError,
  unknown_message_type: UnknownMessageTypeError,
  unknown_actor: UnknownActorError,
  session_not_found: SessionNotFoundError,
  session_exists: SessionExistsError,
  stale_epoch: StaleEpochError,
  corrupt_patch: CorruptPatchError,
  malformed_frame: MalformedFrameError,
  request_timeout: RequestTimeoutError,
  no_responder: NoResponderError,
  closed: ClosedError,
  worker_job_failed: WorkerJobError,
  kv_conflict: KvConflictError,
  log_conflict: LogConflictError,
  malformed_message: MalformedMessageError,
  crash_not_allowed: CrashNotAllowedError,
};

/** The wire form of an error: what a remote caller needs to rebuild it. */
export type WireError = { code: string; message: string };

/** Turns any thrown value into its wire form without throwing. */
export function errorToWire(err: unknown): WireError {
  if (err instanceof FtmError) return { code: err.code, message: err.message };
  if (err instanceof Error) return { code: 'ftm_error', message: err.message };
  return { code: 'ftm_error', message: String(err) };
}

/** Rebuilds the typed error a remote side sent; unknown codes become a plain {@link FtmError}. */
export function errorFromWire(wire: WireError): FtmError {
  const Ctor = byCode[wire.code];
  return Ctor ? new Ctor(wire.message) : new FtmError(wire.message);
}
