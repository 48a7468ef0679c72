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
   * released like a reply (in `standby` mode after the standby's ack).
   */
  emit(event: string, payload?: unknown): void;
}

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

/** An actor type: its initial state, its handlers and its consistency mode. */
export interface ActorDefinition<S extends object = object> {
  readonly name: string;
  readonly consistency: ConsistencyMode;
  initialState(init: unknown): S;
  readonly handlers: Readonly<Record<string, Handler<S>>>;
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
  const init = options.initialState;
  return Object.freeze({
    name: options.name,
    consistency,
    initialState: typeof init === 'function' ? init : () => structuredClone(init),
    handlers: Object.freeze({ ...options.handlers }),
    ...(options.workers ? { workers: options.workers } : {}),
    ...(options.messages ? { messages: Object.freeze({ ...options.messages }) } : {}),
    ...(options.datagram ? { datagram: options.datagram } : {}),
  });
}
