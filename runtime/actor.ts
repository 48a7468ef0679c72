import type { Draft } from 'immer';
import { InvalidArgumentError } from './errors.ts';

/** How long a reply waits before it is released to the client. */
export type ConsistencyMode = 'async' | 'standby' | 'durable';

/** What a handler may use besides the draft: recorded time and randomness. */
export interface TransitionContext {
  /** The session id. */
  readonly sid: string;
  /** The seq this transaction gets if it commits. */
  readonly seq: number;
  /**
   * Who sent this input: the client id from the token when it came through a
   * gateway (in `onJoin`/`onLeave` too: the client joining or leaving), and
   * {@link internalSender} (`"$host"`) for inputs no client sent (timers,
   * worker results, `onClose`, requests made from TypeScript). It travels in
   * the input, so a promoted standby that replays an input sees the same sender.
   */
  readonly sender: string;
  /** Time of the transaction, fixed for its whole run. */
  now(): number;
  /** Deterministic per (session, seq): a replay of the same input draws the same numbers. */
  random(): number;
  /**
   * Runs `task` of the actor's worker module on a worker thread once this
   * transaction commits (never if it rolls back). Its result comes back as a
   * message of type `resultType` with payload `{ result }` or `{ error }`.
   */
  runInWorker(task: string, input: unknown, resultType: string): void;
  /**
   * Arms a timer once this transaction commits: after `delayMs` (from
   * `now()`) the session receives a message of `type` with `payload`. Timers
   * are replicated: after a failover the new primary fires them on time.
   * Setting a key again replaces its timer.
   */
  setTimer(key: string, delayMs: number, type: string, payload?: unknown): void;
  /** Disarms the timer `key` (no-op when none is armed). */
  clearTimer(key: string): void;
  /**
   * Pushes `event` to the session's clients once this transaction commits,
   * released like a reply (in `standby` mode after the standby's ack): to
   * every client, or with `{ to }` only to the client ids listed.
   */
  emit(event: string, payload?: unknown, options?: EmitOptions): void;
  /**
   * Ends the session once this transaction commits: `onClose` runs, then the
   * record is closed, both copies go, snapshot and log are deleted, and the
   * gateways close the session's clients with code 4410. Replicated: a
   * failover before the close happens does not forget it.
   */
  close(): void;
}

/** Where an event goes: `to` one client id or a list of them (default: every client). */
export interface EmitOptions {
  to?: string | readonly string[];
}

/** The sender of inputs no client sent (timers, worker results, `onClose`, calls from TypeScript). */
export const internalSender = '$host';

/** Why a client left a session (`onLeave`). */
export type LeaveReason = 'closed' | 'lost' | 'expired' | 'kicked' | 'gateway';

/** What a session's clients see of its state; per client, JSON only. */
export type ViewFunction<S> = (state: Readonly<S>, clientId: string) => unknown;

/** What a datagram handler may do: read who sent it, forward bytes to clients. */
export interface DatagramContext {
  readonly sid: string;
  /** The client that sent the datagram (as the gateway named it). */
  readonly from: string;
  /** Sends `data` to one client (`to`), or to every client of the session but the sender. */
  forward(data: Uint8Array, to?: string): void;
}

/**
 * Media-like traffic: datagrams are forwarded, not state. Only the primary
 * receives them; the handler reads the state but cannot change it.
 */
export type DatagramHandler<S> = (
  state: Readonly<S>,
  data: Uint8Array,
  ctx: DatagramContext,
) => void;

/** A message check: true when the payload is acceptable, else the reason it is not. */
export type MessageCheck = (payload: unknown) => true | string;

/** CPU work off the event loop: a module exporting `tasks`, run on a pool of threads. */
export interface WorkerOptions {
  module: URL | string;
  /** Threads in the pool (default 2). */
  size?: number;
}

/** A synchronous transition on an immer draft; its return value is the reply. */
export type Handler<S> = (draft: Draft<S>, payload: any, ctx: TransitionContext) => unknown;

/** A lifecycle hook: a transition like a handler, its argument says who. */
export type Hook<S, A> = (draft: Draft<S>, arg: A, ctx: TransitionContext) => void;

/** An actor type: its initial state, its handlers and its consistency mode. */
export interface ActorDefinition<S extends object = object> {
  readonly name: string;
  readonly consistency: ConsistencyMode;
  initialState(init: unknown): S;
  readonly handlers: Readonly<Record<string, Handler<S>>>;
  /** Handlers a client may call through a gateway; the others are internal. */
  readonly clientHandlers: ReadonlySet<string>;
  readonly onJoin?: Hook<S, { client: string }>;
  readonly onLeave?: Hook<S, { client: string; reason: LeaveReason }>;
  readonly onClose?: Hook<S, { reason: 'closed' | 'requested' }>;
  readonly view?: ViewFunction<S>;
  readonly workers?: WorkerOptions;
  /** Checks of message payloads by type; a payload that fails never reaches a handler. */
  readonly messages?: Readonly<Record<string, MessageCheck>>;
  readonly datagram?: DatagramHandler<S>;
}

/** Options of {@link defineActor}. */
export interface ActorOptions<S extends object> {
  name: string;
  /** Default `standby`: a reply is released once the standby applied its transaction. */
  consistency?: ConsistencyMode;
  initialState: S | ((init: unknown) => S);
  handlers: Record<string, Handler<S>>;
  /**
   * The handlers clients may call through a gateway. Every other handler is
   * internal (timer callbacks, worker results, admin calls made from
   * TypeScript): the gateway refuses it with `not_callable` before NATS.
   * Default: none (an actor says what its clients may do).
   */
  clientHandlers?: readonly string[];
  /** Runs when a client's connection to the session opens (a failover is not a leave and no new join). */
  onJoin?: Hook<S, { client: string }>;
  /** Runs when a client's connection ends: closed by the client, lost, token expired, or its gateway went away. */
  onLeave?: Hook<S, { client: string; reason: LeaveReason }>;
  /** Runs as the session's last transaction, before it is closed (`ctx.close()` or `closeSession`). */
  onClose?: Hook<S, { reason: 'closed' | 'requested' }>;
  /**
   * What one client sees of the state (JSON). The gateway sends each client
   * its view on join, then JSON Patches (RFC 6902) as it changes.
   */
  view?: ViewFunction<S>;
  workers?: WorkerOptions;
  /**
   * Checks of message payloads by type, run by the primary (and by gateways,
   * before anything reaches NATS).
   */
  messages?: Record<string, MessageCheck>;
  /** Handles datagrams sent to the session (forwarding, as a media bridge does). */
  datagram?: DatagramHandler<S>;
}

const modes: readonly string[] = ['async', 'standby', 'durable'];

/** Message types the runtime itself sends a session: a handler may not take these names. */
export const reservedTypes = {
  join: '$join',
  leave: '$leave',
  close: '$close',
  state: '$state',
} as const;

/**
 * Defines an actor type.
 * @example
 * const counter = defineActor({
 *   name: 'counter',
 *   initialState: { n: 0 },
 *   handlers: { add: (s, by: number) => (s.n += by) },
 * });
 */
export function defineActor<S extends object>(options: ActorOptions<S>): ActorDefinition<S> {
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(options.name)) {
    throw new InvalidArgumentError(
      `actor name ${JSON.stringify(options.name)}: use 1-64 of A-Z a-z 0-9 _ -`,
    );
  }
  const consistency = options.consistency ?? 'standby';
  if (!modes.includes(consistency)) {
    throw new InvalidArgumentError(
      `consistency ${JSON.stringify(consistency)}: use async, standby or durable`,
    );
  }
  for (const name of Object.keys(options.handlers)) {
    if (name.startsWith('$'))
      throw new InvalidArgumentError(
        `handler ${JSON.stringify(name)} of ${options.name}: names starting with $ are the runtime's`,
      );
  }
  for (const name of options.clientHandlers ?? []) {
    if (!Object.hasOwn(options.handlers, name))
      throw new InvalidArgumentError(
        `clientHandlers of ${options.name} names ${JSON.stringify(name)}, which is not a handler`,
      );
  }
  const init = options.initialState;
  return Object.freeze({
    name: options.name,
    consistency,
    initialState: typeof init === 'function' ? init : () => structuredClone(init),
    handlers: Object.freeze({ ...options.handlers }),
    clientHandlers: new Set(options.clientHandlers ?? []),
    ...(options.onJoin ? { onJoin: options.onJoin } : {}),
    ...(options.onLeave ? { onLeave: options.onLeave } : {}),
    ...(options.onClose ? { onClose: options.onClose } : {}),
    ...(options.view ? { view: options.view } : {}),
    ...(options.workers ? { workers: options.workers } : {}),
    ...(options.messages ? { messages: Object.freeze({ ...options.messages }) } : {}),
    ...(options.datagram ? { datagram: options.datagram } : {}),
  });
}

/** True when `value` is an actor made by {@link defineActor} or `defineAdapter` (for module loaders). */
export function isActorDefinition(value: unknown): value is ActorDefinition {
  const a = value as Partial<ActorDefinition> | null;
  return (
    typeof a === 'object' &&
    a !== null &&
    typeof a.name === 'string' &&
    typeof a.handlers === 'object' &&
    a.clientHandlers instanceof Set &&
    typeof a.initialState === 'function'
  );
}
