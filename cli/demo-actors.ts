import { fileURLToPath } from 'node:url';
import { defineActor } from '../runtime/index.ts';

/**
 * The actors `ftmesh demo` and `ftmesh demo failover` run (their hosts load
 * this module with `--actors`). A ledger of appends whose state says exactly
 * which append was applied, and how often: every client numbers its appends
 * 0, 1, 2, ... and sends the next only once the last was answered, so each
 * client's appends must arrive in order, each once. An append that comes
 * twice is recorded in `twice`, one that never came leaves a hole in
 * `skipped` (or stops `next` short) — lost and duplicated are exact, and the
 * state stays small however long the demo runs.
 */

/** One client's appends as the session applied them. */
export interface ClientLedger {
  /** The number the next append should carry: every one below was applied. */
  next: number;
  /** Appends applied a second time. */
  twice: number[];
  /** Numbers passed over: appends that never arrived (so far). */
  skipped: number[];
}

export interface Ledger {
  /** Appends applied, all clients together. */
  appends: number;
  clients: Record<string, ClientLedger>;
}

/** An append's tag: `CLIENT:N`, the client's id and its append number. */
export const tagPattern = /^([A-Za-z0-9_-]{1,64}):(\d{1,9})$/;

/** Lists are capped: a broken run must not grow the state without bound. */
const MAX_LISTED = 1_000;

const handlers = {
  /** Records the append `CLIENT:N`; replies with the number of appends applied. */
  append(s: Ledger, tag: string) {
    const [, client, digits] = tagPattern.exec(tag) ?? [];
    if (client === undefined || digits === undefined)
      throw new TypeError('append: the tag must be CLIENT:N');
    const n = Number(digits);
    const c = (s.clients[client] ??= { next: 0, twice: [], skipped: [] });
    if (n === c.next) c.next++;
    else if (n > c.next) {
      for (let k = c.next; k < n && c.skipped.length < MAX_LISTED; k++) c.skipped.push(k);
      c.next = n + 1;
    } else {
      const late = c.skipped.indexOf(n);
      if (late !== -1) c.skipped.splice(late, 1);
      else if (c.twice.length < MAX_LISTED) c.twice.push(n);
    }
    s.appends++;
    return s.appends;
  },
  /** The number of appends applied. */
  count: (s: Ledger) => s.appends,
  /** The whole ledger (internal: the demo reads it through the mesh, not a gateway). */
  ledger: (s: Ledger) => s,
};

const options = {
  initialState: (): Ledger => ({ appends: 0, clients: {} }),
  handlers,
  clientHandlers: ['append', 'count'],
  messages: {
    append: (tag: unknown) =>
      (typeof tag === 'string' && tagPattern.test(tag)) || 'a tag CLIENT:N (N a whole number)',
  },
};

/** Replies released once the standby applied the append (the default consistency). */
export const demoLedger = defineActor<Ledger>({ name: 'demo-ledger', ...options });

/** Replies released once the standby applied the append and the log holds it. */
export const demoLedgerDurable = defineActor<Ledger>({
  name: 'demo-ledger-durable',
  consistency: 'durable',
  ...options,
});

/** The actors of the demos, by name. */
export const demoActors = [demoLedger, demoLedgerDurable] as const;

/** What a client's acknowledged appends say about the final ledger. */
export function checkLedger(
  ledger: Ledger,
  acknowledged: ReadonlyMap<string, readonly number[]>,
): { lost: number; duplicated: number } {
  let lost = 0;
  let duplicated = 0;
  for (const c of Object.values(ledger.clients)) duplicated += c.twice.length;
  for (const [client, ns] of acknowledged) {
    const c = ledger.clients[client];
    const skipped = new Set(c?.skipped ?? []);
    for (const n of ns) if (!c || n >= c.next || skipped.has(n)) lost++;
  }
  return { lost, duplicated };
}

/** This module's file: the demos' hosts load it with `--actors`. */
export const demoActorsFile = fileURLToPath(import.meta.url);
