import type { ActorDefinition } from './actor.ts';
import { move, type CopyStatus } from './copy-status.ts';
import type { PrimarySession } from './primary-session.ts';
import type { ReplicaSession } from './replica-session.ts';
import type { SessionMeta } from './session-meta.ts';
import type { HostLoad } from './membership-record.ts';

/**
 * This host's copy of one session: its status (PROTOCOL.md, "A copy's
 * states") and the object that does the work, a replica or a primary.
 * The status changes only through {@link moveTo}, which refuses an illegal move.
 */
export class SessionCopy {
  private current: CopyStatus;
  replica: ReplicaSession | undefined;
  primary: PrimarySession | undefined;
  /** The ownership record's revision its primary had seen when it attached this copy. */
  attachedAfter = 0;
  /** When this copy was created (the host's clock): a copy never named is collected after a while. */
  readonly createdAt: number;
  /** When a primary copy last read the record because an ack named a newer epoch. */
  epochCheckAt: number | undefined;

  constructor(
    readonly sid: string,
    readonly actor: ActorDefinition,
    status: CopyStatus,
    now: number,
    private readonly onMove: (copy: SessionCopy, from: CopyStatus) => void,
  ) {
    this.current = status;
    this.createdAt = now;
  }

  get status(): CopyStatus {
    return this.current;
  }

  /** @throws InvariantViolation on a move the protocol does not allow */
  moveTo(next: CopyStatus): void {
    const from = this.current;
    this.current = move(this.sid, from, next);
    this.onMove(this, from);
  }

  get epoch(): number {
    return this.primary?.epoch ?? this.replica?.epoch ?? 0;
  }

  get seq(): number {
    return this.primary?.seq ?? this.replica?.seq ?? 0;
  }

  get state(): object {
    return this.primary?.state ?? this.replica?.state ?? {};
  }

  get meta(): SessionMeta | undefined {
    return this.primary?.meta ?? this.replica?.meta;
  }

  /** 'primary' for a copy that serves (or may again), 'standby' for one that follows. */
  get role(): 'primary' | 'standby' {
    return this.primary && !this.replica ? 'primary' : 'standby';
  }
}

/**
 * The copies this host holds, one per session at most, with their load
 * (placement) and the hosts they tie this host to (failure watching).
 */
export class SessionCopies {
  private readonly copies = new Map<string, SessionCopy>();
  /** Called on every add, remove and move: the host re-reports its load and its watch list. */
  onChange: (() => void) | undefined;

  constructor(private readonly now: () => number) {}

  get(sid: string): SessionCopy | undefined {
    return this.copies.get(sid);
  }

  has(sid: string): boolean {
    return this.copies.has(sid);
  }

  get size(): number {
    return this.copies.size;
  }

  values(): IterableIterator<SessionCopy> {
    return this.copies.values();
  }

  /** Adds a copy in `status`; there must be none for `sid`. */
  add(sid: string, actor: ActorDefinition, status: CopyStatus): SessionCopy {
    if (this.copies.has(sid)) throw new Error(`${sid}: this host already holds a copy`);
    const copy = new SessionCopy(sid, actor, status, this.now(), () => this.onChange?.());
    this.copies.set(sid, copy);
    this.onChange?.();
    return copy;
  }

  /** Removes `copy` (if it is still the one held for its session), moving it to closed. */
  remove(copy: SessionCopy): void {
    if (copy.status.type !== 'closed') copy.moveTo({ type: 'closed' });
    if (this.copies.get(copy.sid) === copy) {
      this.copies.delete(copy.sid);
      this.onChange?.();
    }
  }

  load(capacity: number, draining: boolean): HostLoad {
    let primaries = 0;
    for (const c of this.copies.values())
      if (c.status.type === 'primary' || c.status.type === 'handing-off') primaries++;
    return { primaries, standbys: this.copies.size - primaries, capacity, draining };
  }
}
