import { Immer, enableMapSet, enablePatches, isDraft, current, type Patch } from 'immer';
import type { ActorDefinition, TransitionContext } from './actor.ts';
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
  readonly events: { event: string; payload: unknown }[];
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
    return Object.hasOwn(this.actor.handlers, type);
  }

  /**
   * Runs the handler for `type` on `state` as transaction `seq`.
   * @throws UnknownMessageTypeError, HandlerError (state untouched in both cases)
   */
  run(state: object, type: string, payload: unknown, seq: number): Transition {
    const handler = this.actor.handlers[type];
    if (!handler)
      throw new UnknownMessageTypeError(
        `actor ${this.actor.name} has no handler for ${JSON.stringify(type)}`,
      );
    const at = this.now();
    const effects: Effect[] = [];
    const events: { event: string; payload: unknown }[] = [];
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
      emit: (event, eventPayload) => void events.push({ event, payload: eventPayload }),
      sid: this.sid,
      seq,
      now: () => at,
      random: mulberry32(this.sidSeed ^ Math.imul(seq, 2654435761)),
    };
    let reply: unknown;
    try {
      if (this.adapter) {
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
        const r = handler(draft, payload, ctx);
        reply = isDraft(r) ? current(r) : r;
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
