import { KvConflictError } from './errors.ts';
import type { KvPort } from './ports.ts';

/** A record as stored, with the revision a compare-and-swap names. */
export type Stored<R> = { record: R; revision: number };

/** A pure change's outcome: the next record, or a refusal with its reason. */
export type Applied<R> = { refused: false; record: R } | { refused: true; reason: string };

export type SwapResult<R> =
  | { ok: true; stored: Stored<R>; bytes: Uint8Array }
  | { ok: false; reason: string; stored: Stored<R> | undefined };

/**
 * Applies a pure change to a KV record by compare-and-swap (PROTOCOL.md,
 * "Two records"). It starts from `viewed` (what a watch delivered) when
 * given; a refusal is only ever decided on a record read from the store
 * (the view may lag), and a lost swap reads the record again and applies
 * the change to it: the change either still holds (it lands) or is refused.
 */
export async function compareAndSwap<R>(
  kv: KvPort,
  key: string,
  viewed: Stored<R> | undefined,
  read: () => Promise<Stored<R> | undefined>,
  apply: (record: R | undefined) => Applied<R>,
  encode: (record: R) => Uint8Array,
): Promise<SwapResult<R>> {
  let stored = viewed ?? (await read());
  let fromStore = !viewed;
  for (let attempt = 0; attempt < 5; attempt++) {
    const next = apply(stored?.record);
    if (next.refused && !fromStore) {
      stored = await read();
      fromStore = true;
      continue;
    }
    if (next.refused) return { ok: false, reason: next.reason, stored };
    try {
      const bytes = encode(next.record);
      const revision = stored
        ? await kv.update(key, bytes, stored.revision)
        : await kv.create(key, bytes);
      return { ok: true, stored: { record: next.record, revision }, bytes };
    } catch (err) {
      if (!(err instanceof KvConflictError)) throw err;
      stored = await read();
      fromStore = true;
    }
  }
  return { ok: false, reason: 'the record kept changing under us', stored };
}
