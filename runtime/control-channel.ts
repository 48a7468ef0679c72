import type { ValueCodec } from './codec.ts';
import { errorFromWire, errorToWire, MalformedMessageError, type WireError } from './errors.ts';
import type { Transport, TransportSubscription } from './ports.ts';
import type { SessionSnapshot } from './session-types.ts';
import { subjects } from './subjects.ts';

/**
 * The host-to-host control requests, on `ftm.h.<host>.ctl`. `after` is the
 * ownership record's revision as the primary saw it when it attached a copy:
 * a change at or before it is older than the attach and must not undo it.
 */
export type ControlRequest =
  /** Become a copy of a session not serving yet (open), its state in the request. */
  | { op: 'attach'; sid: string; actor: string; after: number; snapshot: SessionSnapshot }
  /** Same, for a state above max_payload: it waits in the snapshot store at `seq`. */
  | { op: 'attach-stored'; sid: string; actor: string; seq: number; after: number }
  /** Become a copy of a serving session (its primary serves `epoch`): subscribe, then fetch its state. */
  | { op: 'sync'; sid: string; actor: string; after: number; epoch: number }
  /** The record names the receiver the standby of `sid`, at `revision` and `term`. */
  | { op: 'named'; sid: string; revision: number; term: number }
  /** Drop your copy unless the record names you. */
  | { op: 'detach'; sid: string }
  /** Open a session here as primary. */
  | {
      op: 'open';
      actor: string;
      sid: string;
      standby?: string;
      standbyHint?: string;
      init?: unknown;
    }
  /**
   * Take the session over from its primary `from` in `epoch`: a drain (its
   * log ends at `expectLast`), or a primary that holds no copy any more
   * (it joined again) handing the session to its live standby.
   */
  | {
      op: 'take-over';
      sid: string;
      from: string;
      epoch: number;
      expectLast?: number;
      cause: 'drain' | 'leave';
    }
  /** Give your primary copy another standby, not one of `exclude`. */
  | { op: 'reprotect'; sid: string; exclude: string[] }
  /** End the session (you are its primary). */
  | { op: 'close'; sid: string }
  | { op: 'inspect'; sid: string }
  | { op: 'failovers' }
  | { op: 'drain' }
  | { op: 'status' }
  /**
   * SIGKILL your own process once this is answered (an operator causing a
   * failover to watch it); refused unless the host was started with `allowCrash`.
   */
  | { op: 'crash' };

export type ControlOp = ControlRequest['op'];

const str = (x: unknown): x is string => typeof x === 'string';
const num = (x: unknown): x is number => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
const opt = (x: unknown, check: (x: unknown) => boolean) => x === undefined || check(x);

/** The fields each request must have, by type: anything else is refused before use. */
const shapes: Record<ControlOp, (r: Record<string, unknown>) => boolean> = {
  attach: (r) => str(r.sid) && str(r.actor) && num(r.after) && isSnapshot(r.snapshot),
  'attach-stored': (r) => str(r.sid) && str(r.actor) && num(r.seq) && num(r.after),
  sync: (r) => str(r.sid) && str(r.actor) && num(r.after) && num(r.epoch),
  named: (r) => str(r.sid) && num(r.revision) && num(r.term),
  detach: (r) => str(r.sid),
  open: (r) => str(r.actor) && str(r.sid) && opt(r.standby, str) && opt(r.standbyHint, str),
  'take-over': (r) =>
    str(r.sid) &&
    str(r.from) &&
    num(r.epoch) &&
    opt(r.expectLast, num) &&
    (r.cause === 'drain' || r.cause === 'leave'),
  reprotect: (r) => str(r.sid) && Array.isArray(r.exclude) && r.exclude.every(str),
  close: (r) => str(r.sid),
  inspect: (r) => str(r.sid),
  failovers: () => true,
  drain: () => true,
  status: () => true,
  crash: () => true,
};

function isSnapshot(x: unknown): x is SessionSnapshot {
  const s = x as Partial<SessionSnapshot> | null;
  return (
    !!s &&
    typeof s === 'object' &&
    typeof s.state === 'object' &&
    s.state !== null &&
    num(s.seq) &&
    num(s.epoch) &&
    !!s.meta &&
    Array.isArray(s.meta.dedup) &&
    Array.isArray(s.meta.timers) &&
    Array.isArray(s.meta.jobs)
  );
}

/**
 * Checks that a decoded value is a control request of a known op with the
 * fields it needs.
 * @throws MalformedMessageError naming what is wrong
 */
export function parseControlRequest(value: unknown): ControlRequest {
  const r = value as Record<string, unknown> | null;
  const op = r?.op;
  if (!r || typeof r !== 'object' || !str(op) || !Object.hasOwn(shapes, op))
    throw new MalformedMessageError(`unknown control request ${JSON.stringify(op)}`);
  if (!shapes[op as ControlOp](r))
    throw new MalformedMessageError(
      `control request ${op} lacks a field or has one of the wrong type`,
    );
  return r as unknown as ControlRequest;
}

/**
 * Requests to other hosts and answers to theirs. Every answer is either the
 * handler's value or `{ error }`, rebuilt as the typed error on the asker's side.
 */
export class ControlChannel {
  private sub: TransportSubscription | undefined;

  constructor(
    private readonly transport: Transport,
    private readonly codec: ValueCodec,
  ) {}

  /**
   * Sends `req` to host `to`; resolves with its answer.
   * @throws the typed error the host answered with, NoResponderError, RequestTimeoutError
   */
  async request<T = Record<string, unknown>>(
    to: string,
    req: ControlRequest,
    timeoutMs = 5_000,
  ): Promise<T> {
    const reply = await this.transport.request(
      subjects.hostControl(to),
      this.codec.encode(req),
      timeoutMs,
    );
    const answer = this.codec.decode(reply) as { error?: WireError } | null;
    if (!answer || typeof answer !== 'object')
      throw new MalformedMessageError(`host ${to} answered ${req.op} with something unreadable`);
    if (answer.error) throw errorFromWire(answer.error);
    return answer as T;
  }

  /**
   * Serves `host`'s control subject: each request is checked, then handed to
   * `handle`; a malformed one is answered with an error and counted.
   */
  serve(
    host: string,
    handle: (req: ControlRequest) => Promise<object>,
    onMalformed: (err: unknown) => void,
  ): void {
    this.sub = this.transport.subscribe(subjects.hostControl(host), (msg) => {
      let req: ControlRequest;
      try {
        req = parseControlRequest(this.codec.decode(msg.data));
      } catch (err) {
        onMalformed(err);
        msg.respond(this.codec.encode({ error: errorToWire(err) }));
        return;
      }
      handle(req).then(
        (answer) => msg.respond(this.codec.encode(answer)),
        (err: unknown) => {
          try {
            msg.respond(this.codec.encode({ error: errorToWire(err) }));
          } catch {
            // The connection is closing: nobody is left to answer.
          }
        },
      );
    });
  }

  close(): void {
    this.sub?.unsubscribe();
  }
}
