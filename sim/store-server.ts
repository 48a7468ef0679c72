import { RequestTimeoutError } from '../runtime/errors.ts';
import type { Prng } from './prng.ts';
import type { SimProcess } from './process.ts';
import type { World } from './world.ts';

/** JetStream operations answer within this long or fail (nats-stores.ts `opTimeoutMs`). */
export const storeTimeoutMs = 2_000;

/**
 * The server side of one store (a KV bucket, the log stream, the snapshot
 * store): each operation travels to it (sampled latency, FIFO per process),
 * applies there in arrival order, and its answer travels back. A process
 * cut off from the server, or a store in an outage, gets a retryable
 * {@link RequestTimeoutError} after {@link storeTimeoutMs}; an operation in
 * flight when its process crashed applies or not, as the PRNG decides.
 */
export class StoreServer {
  /** While true, operations fail after their timeout and watches stall. */
  outage = false;
  ops = 0;
  private readonly lastUp = new Map<SimProcess, number>();
  private readonly lastDown = new Map<SimProcess, number>();
  /** Called when an outage ends: stalled watchers catch up. */
  onOutageEnd: (() => void) | undefined;

  constructor(
    readonly name: string,
    private readonly world: World,
    private readonly rng: Prng,
  ) {}

  setOutage(on: boolean): void {
    const was = this.outage;
    this.outage = on;
    if (was && !on) this.onOutageEnd?.();
  }

  /** When a request `proc` sends now reaches the server. */
  up(proc: SimProcess): number {
    const t = Math.max(this.world.now + this.rng.range(0.1, 0.5), this.lastUp.get(proc) ?? 0);
    this.lastUp.set(proc, t);
    return t;
  }

  /** When an answer the server sends `proc` now reaches it. */
  down(proc: SimProcess): number {
    const t = Math.max(this.world.now + this.rng.range(0.1, 0.5), this.lastDown.get(proc) ?? 0);
    this.lastDown.set(proc, t);
    return t;
  }

  /** Rejects with a timeout `storeTimeoutMs` after `issuedAt`, on `proc`. */
  timeout(proc: SimProcess, issuedAt: number, what: string, reject: (e: Error) => void): void {
    this.world.at(
      issuedAt + storeTimeoutMs,
      () => reject(new RequestTimeoutError(`${this.name}: ${what}: no answer in time`)),
      proc,
    );
  }

  /** Runs `apply` at the server on behalf of `proc`; resolves or rejects with its outcome there. */
  op<T>(proc: SimProcess, what: string, apply: () => T): Promise<T> {
    this.ops++;
    const issuedAt = this.world.now;
    return new Promise<T>((resolve, reject) => {
      if (proc.partitioned) return this.timeout(proc, issuedAt, what, reject);
      this.world.atServer(this.up(proc), () => {
        if (this.outage) return this.timeout(proc, issuedAt, what, reject);
        // Its process died with the request on the wire: it may or may not have left.
        if (proc.crashed && this.rng.chance(0.5)) return;
        let outcome: { ok: true; value: T } | { ok: false; err: Error };
        try {
          outcome = { ok: true, value: apply() };
        } catch (err) {
          outcome = { ok: false, err: err as Error };
        }
        if (proc.crashed) return;
        this.world.at(
          this.down(proc),
          () => {
            if (proc.partitioned) return this.timeout(proc, issuedAt, what, reject);
            if (outcome.ok) resolve(outcome.value);
            else reject(outcome.err);
          },
          proc,
        );
      });
    });
  }
}
