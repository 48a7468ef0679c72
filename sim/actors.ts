import { defineActor, type ActorDefinition } from '../runtime/actor.ts';

/** The state of every sim actor: the ids applied, in order (a session's history). */
export type AppliedState = { applied: string[]; ticks?: number };

const add = (s: AppliedState, id: string): number => {
  s.applied.push(id);
  return s.applied.length;
};

/** Checks the payload of `add`: a request id. */
const idCheck = { add: (id: unknown) => typeof id === 'string' || 'a request id' };

/** `standby` mode: a reply is released on the named standby's ack (or the log's). */
export const ledger = defineActor<AppliedState>({
  name: 'ledger',
  consistency: 'standby',
  initialState: () => ({ applied: [] }),
  messages: idCheck,
  handlers: { add },
});

/** `durable` mode: a reply is released once the log holds it (and the standby, when named). */
export const journal = defineActor<AppliedState>({
  name: 'journal',
  consistency: 'durable',
  initialState: () => ({ applied: [] }),
  messages: idCheck,
  handlers: { add },
});

/**
 * `standby` mode with a replicated timer: `start` arms a tick that re-arms
 * itself `ticks` times, so timers (meta) survive failovers in the run.
 */
export const ticker = defineActor<AppliedState>({
  name: 'ticker',
  consistency: 'standby',
  initialState: () => ({ applied: [], ticks: 0 }),
  messages: idCheck,
  handlers: {
    add(s, id: string, ctx) {
      if (!s.ticks) ctx.setTimer('tick', 20, 'tick');
      return add(s, id);
    },
    tick(s, _payload, ctx) {
      s.ticks = (s.ticks ?? 0) + 1;
      if (s.ticks < 30) ctx.setTimer('tick', 40, 'tick');
    },
  },
});

/** Every actor a sim host runs. */
export const simActors: readonly ActorDefinition<any>[] = [ledger, journal, ticker];
