import { defineActor } from '../runtime/index.ts';

/** The smallest useful actor: a number its clients add to. */
export const counter = defineActor({
  name: 'counter',
  initialState: { value: 0 },
  clientHandlers: ['add', 'get'],
  // Checked by the gateway (and the primary) before a handler sees the payload.
  messages: { add: (by) => Number.isFinite(by) || 'a finite number' },
  handlers: {
    // A transition on an immer draft; the return value is the reply.
    add(state, by: number) {
      state.value += by;
      return state.value;
    },
    get: (state) => state.value,
  },
});

/** An entry of the {@link ledger}: who added what, when. */
export interface LedgerEntry {
  n: number;
  amount: number;
  /** The client id of the sender (`$host` for a request made from TypeScript). */
  by: string;
  at: number;
}

type Ledger = { balance: number; count: number; recent: LedgerEntry[] };

/** Entries a ledger keeps; older ones are in its durable log, not its state. */
const RECENT = 20;

/**
 * The counter in `durable` mode, keeping who added what: a reply is released
 * once the standby applied it and the log holds it, so an acknowledged entry
 * survives even the loss of primary and standby together.
 */
export const ledger = defineActor<Ledger>({
  name: 'ledger',
  consistency: 'durable',
  initialState: { balance: 0, count: 0, recent: [] },
  clientHandlers: ['add', 'get', 'recent'],
  messages: { add: (amount) => Number.isFinite(amount) || 'a finite number' },
  handlers: {
    add(state, amount: number, ctx) {
      state.balance += amount;
      const entry = { n: ++state.count, amount, by: ctx.sender, at: ctx.now() };
      // A ring: one slot replaced per entry (a shift would rewrite every slot in the patches).
      state.recent[(entry.n - 1) % RECENT] = entry;
      return state.balance;
    },
    get: (state) => state.balance,
    /** The last entries, oldest first. */
    recent: (state) => [...state.recent].sort((a, b) => a.n - b.n),
  },
});
