import { Immer, enableMapSet, enablePatches, isDraft, current, type Patch } from 'immer';
import {
  internalSender,
  reservedTypes,
  type ActorDefinition,
  type EmitOptions,
  type Handler,
  type TransitionContext,
} from './actor.ts';
import { adapterOf, runAdapter, type AdapterHooks } from './adapter.ts';
import { HandlerError, InvalidArgumentError, UnknownMessageTypeError } from './errors.ts';
import type { Effect } from './session-meta.ts';

enablePatches();
enableMapSet();

/** The outcome of one committed transition. */
export interface Transition {
  readonly state: object;
  readonly patches: Patch[];
  readonly reply: unknown;
  /** Timers and worker jobs to start now that the transaction committed; replicated. */
  readonly effects: Effect[];
  /** Events for the session's clients, sent once the transaction committed. */
  readonly events: TransitionEvent[];
}

/** An event a transaction emitted; `to` lists its clients (absent: all). */
export type TransitionEvent = { event: string; payload: unknown; to?: string[] };

function targets(options: EmitOptions | undefined): string[] | undefined {
  const to = options?.to;
  if (to === undefined) return undefined;
  const list = typeof to === 'string' ? [to] : to;
  if (!Array.isArray(list) || !list.every((c) => typeof c === 'string'))
    throw new InvalidArgumentError('emit: `to` is a client id or a list of client ids');
  return [...list];
}

/**
 * The runtime's own message types, as handlers: the lifecycle hooks, and
 * `$state`, which answers with the state at its seq (a gateway's starting
 * point for the views it syncs to clients).
 */
function reservedHandler(actor: ActorDefinition, type: string): Handler<object> | undefined {
  switch (type) {
    case reservedTypes.join:
      return (draft, arg, ctx) => void actor.onJoin?.(draft, arg, ctx);
    case reservedTypes.leave:
      return (draft, arg, ctx) => void actor.onLeave?.(draft, arg, ctx);
    case reservedTypes.close:
      return (draft, arg, ctx) => void actor.onClose?.(draft, arg ?? { reason: 'closed' }, ctx);
    case reservedTypes.state:
      return (draft, _arg, ctx) => ({ seq: ctx.seq, state: current(draft) });
    default:
      return undefined;
  }
}

/** A small, fast, seedable PRNG (mulberry32) so `ctx.random()` replays identically. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The reply as plain values: a handler may return parts of its draft, alone
 * or inside a new array or object (`s.items.filter(...)`), and drafts are
 * revoked once the transaction ends. Values without drafts are returned as
 * they are (no copy).
 */
function undraft(value: unknown): unknown {
  if (typeof value !== 'object' || value === null) return value;
  if (isDraft(value)) return current(value);
  if (Array.isArray(value)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const v = undraft(value[i]);
      if (v !== value[i]) (out ??= value.slice())[i] = v;
    }
    return out ?? value;
  }
  if (Object.getPrototypeOf(value) !== Object.prototype) return value;
  let out: Record<string, unknown> | undefined;
  for (const [k, v0] of Object.entries(value)) {
    const v = undraft(v0);
    if (v !== v0) (out ??= { ...value })[k] = v;
  }
  return out ?? value;
}

function hashString(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

/**
 * Runs handlers as immer transactions for one session. A throwing handler
 * leaves the state untouched (immer drafts are discarded) and surfaces as a
 * {@link HandlerError}.
 */
export class TransitionRunner {
  private readonly immer = new Immer({ autoFreeze: true });
  private readonly sidSeed: number;
  private readonly adapter: AdapterHooks | undefined;
  /** The adapter's service instance, created from the state on first use. */
  private service: unknown;

  constructor(
    private readonly actor: ActorDefinition,
    private readonly sid: string,
    private readonly now: () => number,
  ) {
    this.sidSeed = hashString(sid);
    this.adapter = adapterOf(actor);
  }

  has(type: string): boolean {
    return Object.hasOwn(this.actor.handlers, type) || type.startsWith('$');
  }

  /**
   * Runs the handler for `type` on `state` as transaction `seq`.
   * @throws UnknownMessageTypeError, HandlerError (state untouched in both cases)
   */
  run(state: object, type: string, payload: unknown, seq: number, sender = ''): Transition {
    const handler = Object.hasOwn(this.actor.handlers, type)
      ? this.actor.handlers[type]
      : reservedHandler(this.actor, type);
    if (!handler)
      throw new UnknownMessageTypeError(
        `actor ${this.actor.name} has no handler for ${JSON.stringify(type)}`,
      );
    const at = this.now();
    const effects: Effect[] = [];
    const events: TransitionEvent[] = [];
    let jobs = 0;
    const ctx: TransitionContext = {
      runInWorker: (task, input, resultType) =>
        void effects.push({ op: 'job', id: `${seq}.${jobs++}`, task, input, resultType }),
      setTimer: (key, delayMs, timerType, timerPayload) => {
        if (typeof key !== 'string' || !(delayMs >= 0))
          throw new InvalidArgumentError(
            `setTimer(${key}, ${delayMs}): a string key and a delay >= 0`,
          );
        effects.push({
          op: 'timer',
          key,
          at: at + delayMs,
          type: timerType,
          payload: timerPayload,
        });
      },
      clearTimer: (key) => void effects.push({ op: 'cancel', key }),
      emit: (event, eventPayload, options) => {
        const to = targets(options);
        events.push(to ? { event, payload: eventPayload, to } : { event, payload: eventPayload });
      },
      close: () =>
        void effects.push({
          op: 'timer',
          key: reservedTypes.close,
          at,
          type: reservedTypes.close,
          payload: { reason: 'requested' },
        }),
      sender: sender || internalSender,
      sid: this.sid,
      seq,
      now: () => at,
      random: mulberry32(this.sidSeed ^ Math.imul(seq, 2654435761)),
    };
    let reply: unknown;
    try {
      if (this.adapter && !type.startsWith('$')) {
        if (this.service === undefined) {
          this.service = this.adapter.create(undefined);
          this.adapter.setState(this.service, structuredClone(state));
        }
        return {
          ...runAdapter(this.adapter, this.service, state, type, payload, ctx),
          effects,
          events,
        };
      }
      const [next, patches] = this.immer.produceWithPatches(state, (draft: any) => {
        reply = undraft(handler(draft, payload, ctx));
      });
      return { state: next, patches, reply, effects, events };
    } catch (err) {
      throw new HandlerError(
        `handler ${this.actor.name}.${type} threw: ${(err as Error)?.message ?? String(err)}`,
        { cause: err },
      );
    }
  }

  /** Applies replicated patches; throws (leaving `state` untouched) when they do not fit. */
  apply(state: object, patches: Patch[]): object {
    return this.immer.applyPatches<object>(state, patches);
  }
}
