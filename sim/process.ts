import type { SimEvent } from './event-queue.ts';

/**
 * One simulated OS process (a host, or the client): what the faults act on.
 * A crashed process runs nothing more (its events are dropped, its promises
 * never settle); a hung one runs nothing until it resumes, then everything
 * that came due meanwhile, in order; a partitioned one runs, but is cut off
 * from the NATS server.
 */
export class SimProcess {
  crashed = false;
  hung = false;
  partitioned = false;
  /** Events that came due while hung, in order. */
  readonly deferred: SimEvent[] = [];
  /** The membership incarnation this process last joined as (a host), '' before. */
  incarnation = '';

  constructor(
    /** `h1#2`: host id and process number, for traces. */
    readonly name: string,
    /** The host id ('' for the client and the server's own connection). */
    readonly hostId: string,
  ) {}

  /** Neither crashed nor hung nor partitioned. */
  get reachable(): boolean {
    return !this.crashed && !this.hung && !this.partitioned;
  }
}
