import { InvariantViolation } from './ownership-record.ts';

/**
 * The state of one host's copy of a session (PROTOCOL.md, "A copy's
 * states"). A copy moves only along {@link legalMoves}, through
 * {@link move}: a status is a value, never "is this subscription undefined?".
 */
export type CopyStatus =
  /** Applies the primary's stream; the record does not name it yet: never acknowledges. */
  | { type: 'attaching' }
  /** The record names it, at `term`: it acknowledges. */
  | { type: 'standby'; term: number }
  /** Its compare-and-swap for the next epoch is in flight. */
  | { type: 'promoting' }
  /** Serves its epoch; `standby` is the recorded standby (empty: unprotected). */
  | { type: 'primary'; standby: string; term: number }
  /** A drain stopped its inputs; it waits for the standby to take over. */
  | { type: 'handing-off'; to: string }
  /** A newer epoch exists, the log refused it, or its host was declared dead. */
  | { type: 'fenced'; reason: string }
  | { type: 'closed' };

export type CopyStatusType = CopyStatus['type'];

/** Where each status may go. A status may always stay what it is (a primary changing standby). */
export const legalMoves: Readonly<Record<CopyStatusType, readonly CopyStatusType[]>> = {
  attaching: ['standby', 'closed'],
  standby: ['promoting', 'closed'],
  promoting: ['primary', 'standby', 'closed'],
  primary: ['primary', 'handing-off', 'fenced', 'closed'],
  'handing-off': ['primary', 'fenced', 'closed'],
  fenced: ['closed'],
  closed: [],
};

/**
 * Returns `to` if a copy may move there from `from`.
 * @throws InvariantViolation on an illegal move: a bug, not a runtime condition
 */
export function move(sid: string, from: CopyStatus, to: CopyStatus): CopyStatus {
  if (!legalMoves[from.type].includes(to.type))
    throw new InvariantViolation(`${sid}: a copy cannot go from ${from.type} to ${to.type}`);
  return to;
}

/** True for a copy that serves the session (takes inputs or may again). */
export const isPrimary = (
  s: CopyStatus,
): s is Extract<CopyStatus, { type: 'primary' | 'handing-off' }> =>
  s.type === 'primary' || s.type === 'handing-off';

/** True for a copy that follows a primary. */
export const isReplica = (s: CopyStatus): boolean =>
  s.type === 'attaching' || s.type === 'standby' || s.type === 'promoting';
