import { defineActor } from '../runtime/index.ts';

/** The smallest useful actor: a named counter with a history of who added what. */
export const counter = defineActor({
  name: 'counter',
  initialState: { value: 0, last: [] as { by: number; at: number }[] },
  messages: { add: (by) => Number.isFinite(by) || 'a finite number' },
  handlers: {
    add(state, by: number, ctx) {
      if (!Number.isFinite(by)) throw new TypeError('add: payload must be a finite number');
      state.value += by;
      state.last.push({ by, at: ctx.now() });
      if (state.last.length > 10) state.last.shift();
      return state.value;
    },
    get: (state) => state.value,
  },
});

/** The counter in `durable` mode: a reply is released once the log holds it too. */
export const ledger = defineActor({
  name: 'ledger',
  consistency: 'durable',
  initialState: (init: unknown) => counter.initialState(init),
  handlers: counter.handlers,
  ...(counter.messages ? { messages: counter.messages } : {}),
});
