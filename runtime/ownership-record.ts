import { MalformedMessageError } from './errors.ts';

/**
 * Who serves a session in which epoch: the ownership record, and the only
 * ways it may change. Pure: `apply` computes the next record or says why
 * not; `ownership.ts` writes the result by compare-and-swap. See
 * runtime/PROTOCOL.md for the whole protocol.
 */
export type OwnerRecord = {
  actor: string;
  /** The host serving the session in `epoch`; empty once closed. */
  primary: string;
  /** The host holding the hot copy; empty while there is none (the log stands in). */
  standby: string;
  /** Grows by one each time the primary changes. */
  epoch: number;
  /** Grows by one each time the standby changes within an epoch; a standby's acks carry it. */
  term: number;
  /** The session ended: nothing serves it; a reopen starts at epoch + 1. */
  closed?: true;
};

/** A change of the record, with the record's fields as the asker saw them. */
export type OwnerChange =
  | { type: 'open'; actor: string; primary: string; standby: string }
  | { type: 'name-standby'; primary: string; epoch: number; term: number; standby: string }
  | { type: 'drop-standby'; primary: string; epoch: number; term: number }
  | { type: 'promote'; standby: string; from: string; epoch: number }
  | { type: 'hand-off'; from: string; to: string; epoch: number }
  | {
      type: 'restore';
      by: string;
      /** The record as the restorer judged it: every field must still hold. */
      judged: Pick<OwnerRecord, 'primary' | 'standby' | 'epoch' | 'term'>;
      /** The highest epoch the durable log holds: the new epoch is above it too. */
      logEpoch: number;
    }
  | { type: 'close'; primary: string; epoch: number };

/** Why a change was refused: the asker's view is out of date, or the change is illegal. */
export type Refusal = { refused: true; reason: string };

export type Applied = { refused: false; record: OwnerRecord } | Refusal;

const refuse = (reason: string): Refusal => ({ refused: true, reason });

/**
 * Applies `change` to `record` (undefined: the session has no record).
 * Returns the next record, or a refusal naming the field that did not hold.
 * The result always satisfies {@link checkStep} against `record`.
 */
export function apply(record: OwnerRecord | undefined, change: OwnerChange): Applied {
  const next = compute(record, change);
  if (!next.refused) checkStep(record, next.record);
  return next;
}

function compute(r: OwnerRecord | undefined, c: OwnerChange): Applied {
  if (c.type === 'open') {
    if (r && !r.closed)
      return refuse(`the session exists (epoch ${r.epoch}, primary ${r.primary})`);
    if (!c.primary) return refuse('a primary is needed');
    if (c.standby === c.primary) return refuse('the standby must be another host than the primary');
    const epoch = r ? r.epoch + 1 : 1;
    return ok({ actor: c.actor, primary: c.primary, standby: c.standby, epoch, term: 0 });
  }
  if (!r) return refuse('the session has no record');
  if (r.closed) return refuse(`the session was closed in epoch ${r.epoch}`);
  switch (c.type) {
    case 'name-standby':
    case 'drop-standby': {
      const seen = sameOwner(r, c.primary, c.epoch) ?? sameTerm(r, c.term);
      if (seen) return seen;
      if (c.type === 'drop-standby') {
        if (!r.standby) return refuse('no standby to drop');
        return ok({ ...r, standby: '', term: r.term + 1 });
      }
      if (!c.standby || c.standby === r.primary)
        return refuse('the standby must be another host than the primary');
      return ok({ ...r, standby: c.standby, term: r.term + 1 });
    }
    case 'promote':
    case 'hand-off': {
      const [to, from] = c.type === 'promote' ? [c.standby, c.from] : [c.to, c.from];
      const seen = sameOwner(r, from, c.epoch);
      if (seen) return seen;
      if (!to || r.standby !== to)
        return refuse(`the standby is ${r.standby || 'none'}, not ${to}`);
      return ok({ ...r, primary: to, standby: '', epoch: r.epoch + 1, term: 0 });
    }
    case 'restore': {
      const j = c.judged;
      if (
        r.primary !== j.primary ||
        r.standby !== j.standby ||
        r.epoch !== j.epoch ||
        r.term !== j.term
      )
        return refuse(
          `the record changed since it was judged (${describe(r)}, judged ${describe(j)})`,
        );
      if (!c.by) return refuse('a restorer is needed');
      const epoch = Math.max(r.epoch, c.logEpoch) + 1;
      return ok({ ...r, primary: c.by, standby: '', epoch, term: 0 });
    }
    case 'close': {
      const seen = sameOwner(r, c.primary, c.epoch);
      if (seen) return seen;
      return ok({
        actor: r.actor,
        primary: '',
        standby: '',
        epoch: r.epoch,
        term: r.term,
        closed: true,
      });
    }
  }
}

const ok = (record: OwnerRecord): Applied => ({ refused: false, record });

function sameOwner(r: OwnerRecord, primary: string, epoch: number): Refusal | undefined {
  if (r.epoch !== epoch) return refuse(`the epoch is ${r.epoch}, not ${epoch}`);
  if (r.primary !== primary) return refuse(`the primary is ${r.primary}, not ${primary}`);
  return undefined;
}

function sameTerm(r: OwnerRecord, term: number): Refusal | undefined {
  return r.term === term ? undefined : refuse(`the term is ${r.term}, not ${term}`);
}

function describe(r: Pick<OwnerRecord, 'primary' | 'standby' | 'epoch' | 'term'>): string {
  return `epoch ${r.epoch} term ${r.term}, primary ${r.primary || 'none'}, standby ${r.standby || 'none'}`;
}

/** Thrown when a step would break an invariant: a bug in `apply`, never a refused change. */
export class InvariantViolation extends Error {
  override name = 'InvariantViolation';
}

/**
 * The invariants between consecutive records (PROTOCOL.md): epochs only
 * grow; within an epoch the primary stays and the term grows with every
 * standby change; a primary is never its own standby; a new epoch starts
 * without a standby (term 0) unless it is a new session's first.
 * @throws InvariantViolation
 */
export function checkStep(prev: OwnerRecord | undefined, next: OwnerRecord): void {
  const fail = (what: string) => {
    throw new InvariantViolation(`${what}: ${JSON.stringify(prev)} -> ${JSON.stringify(next)}`);
  };
  if (!Number.isSafeInteger(next.epoch) || next.epoch < 1) fail('epoch-positive');
  if (next.primary && next.primary === next.standby) fail('primary-is-not-standby');
  if (next.closed && (next.primary || next.standby)) fail('closed-names-nobody');
  if (!prev) return;
  if (next.epoch < prev.epoch) fail('epochs-grow');
  if (prev.closed && !next.closed && next.epoch <= prev.epoch) fail('reopen-in-a-new-epoch');
  if (next.epoch === prev.epoch && !prev.closed && !next.closed) {
    if (next.primary !== prev.primary) fail('one-primary-per-epoch');
    if (next.standby !== prev.standby && next.term <= prev.term) fail('term-grows-with-standby');
    if (next.term < prev.term) fail('terms-grow');
  }
}

/**
 * Decodes a record read from the store or the watch: untrusted bytes.
 * @throws MalformedMessageError when it is not an ownership record
 */
export function parseOwnerRecord(value: unknown): OwnerRecord {
  const r = value as Partial<OwnerRecord> | null;
  const str = (x: unknown) => typeof x === 'string';
  const num = (x: unknown) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
  if (
    !r ||
    typeof r !== 'object' ||
    !str(r.actor) ||
    !str(r.primary) ||
    !str(r.standby) ||
    !num(r.epoch) ||
    !num(r.term ?? 0) ||
    (r.closed !== undefined && r.closed !== true)
  )
    throw new MalformedMessageError(
      `not an ownership record: ${JSON.stringify(value)?.slice(0, 200)}`,
    );
  return {
    actor: r.actor,
    primary: r.primary,
    standby: r.standby,
    epoch: r.epoch!,
    term: r.term ?? 0,
    ...(r.closed ? { closed: true as const } : {}),
  };
}
