import fastJsonPatch from 'fast-json-patch';
import { freeze, type Patch } from 'immer';
import type { ActorDefinition, ConsistencyMode, TransitionContext } from './actor.ts';
import { defineActor } from './actor.ts';

/** Options of {@link defineAdapter}: an existing service that keeps its own state. */
export interface AdapterOptions<Svc, St extends object> {
  name: string;
  consistency?: ConsistencyMode;
  /** Creates the service (on the primary; again on a promoted standby). */
  create(init: unknown): Svc;
  /** The critical state, as JSON-compatible data. */
  getState(service: Svc): St;
  /** Puts the service back into `state` (after a rollback, or on a new primary). */
  setState(service: Svc, state: St): void;
  /** Synchronous handlers on the service; the return value is the reply. */
  handlers: Record<string, (service: Svc, payload: any, ctx: TransitionContext) => unknown>;
  /** The handlers clients may call through a gateway (default: none; see `defineActor`). */
  clientHandlers?: readonly string[];
}

/** How the runtime drives an adapter: one service instance per session on the primary. */
export interface AdapterHooks {
  create(init: unknown): unknown;
  getState(service: unknown): object;
  setState(service: unknown, state: object): void;
  handlers: Readonly<
    Record<string, (service: unknown, payload: any, ctx: TransitionContext) => unknown>
  >;
}

const adapters = new WeakMap<object, AdapterHooks>();

/** The adapter hooks of an actor defined with {@link defineAdapter}, if it was. */
export function adapterOf(actor: object): AdapterHooks | undefined {
  return adapters.get(actor);
}

/**
 * Wraps an existing service that keeps its own state. After each handler
 * the runtime diffs the service's state against the previous one into JSON
 * Patch (fast-json-patch) and replicates those operations like native patches.
 * @example
 * const board = defineAdapter({
 *   name: 'board', create: () => new Board(), getState: (b) => b.toJSON(),
 *   setState: (b, s) => b.load(s), handlers: { draw: (b, stroke) => b.draw(stroke) },
 * });
 */
export function defineAdapter<Svc, St extends object>(
  options: AdapterOptions<Svc, St>,
): ActorDefinition<St> {
  const actor = defineActor<St>({
    name: options.name,
    ...(options.consistency ? { consistency: options.consistency } : {}),
    initialState: (init) => structuredClone(options.getState(options.create(init))),
    // The handlers only name the message types; TransitionRunner calls the adapter's own.
    handlers: Object.fromEntries(Object.keys(options.handlers).map((t) => [t, () => undefined])),
    ...(options.clientHandlers ? { clientHandlers: options.clientHandlers } : {}),
  });
  adapters.set(actor, {
    create: (init) => options.create(init),
    getState: (service) => options.getState(service as Svc),
    setState: (service, state) => options.setState(service as Svc, state as St),
    handlers: options.handlers as AdapterHooks['handlers'],
  });
  return actor;
}

const canonicalIndex = /^(0|[1-9][0-9]*)$/;

/** JSON Patch operations (RFC 6902) as immer patches, the form replicas apply. */
export function jsonPatchToImmer(ops: readonly fastJsonPatch.Operation[]): Patch[] {
  return ops.map((op) => {
    if (op.op !== 'add' && op.op !== 'remove' && op.op !== 'replace') {
      throw new Error(`unexpected JSON Patch op ${op.op} from the adapter diff`);
    }
    const path = op.path
      .split('/')
      .slice(1)
      .map((seg) => {
        const key = seg.replace(/~1/g, '/').replace(/~0/g, '~');
        return canonicalIndex.test(key) ? Number(key) : key;
      });
    return op.op === 'remove' ? { op: op.op, path } : { op: op.op, path, value: op.value };
  });
}

/**
 * Runs one adapter transaction: the handler on the service, then the diff.
 * A throwing handler puts the service back to `state` and rethrows.
 */
export function runAdapter(
  hooks: AdapterHooks,
  service: unknown,
  state: object,
  type: string,
  payload: unknown,
  ctx: TransitionContext,
): { state: object; patches: Patch[]; reply: unknown } {
  let reply: unknown;
  try {
    reply = hooks.handlers[type]!(service, payload, ctx);
  } catch (err) {
    hooks.setState(service, structuredClone(state));
    throw err;
  }
  const next = structuredClone(hooks.getState(service));
  const patches = jsonPatchToImmer(fastJsonPatch.compare(state, next));
  return { state: freeze(next, true), patches, reply };
}
