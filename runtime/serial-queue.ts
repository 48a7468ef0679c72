/**
 * One queue per key (a session): the actions of a key run one at a time, in
 * the order they were queued, each to its end (awaits included) before the
 * next starts. An action that finds the key busy waits its turn; none is
 * dropped. Actions of different keys run concurrently.
 */
export class SerialQueues {
  private readonly tails = new Map<string, Promise<unknown>>();
  /** Keys with a coalescible action queued but not started yet. */
  private readonly pending = new Set<string>();

  /** Runs `action` after every action queued before it for `key`; resolves or rejects with it. */
  run<T>(key: string, action: () => Promise<T> | T): Promise<T> {
    const prev = this.tails.get(key) ?? Promise.resolve();
    const result = prev.then(
      () => action(),
      () => action(),
    );
    const tail = result.then(
      () => undefined,
      () => undefined,
    );
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return result;
  }

  /**
   * Queues `action` unless one queued this way for `key` has not started yet:
   * that one will see everything this one would (it reads the latest state
   * when it runs). Resolves when the queued action finishes.
   */
  coalesce(key: string, action: () => Promise<void>): Promise<void> {
    if (this.pending.has(key)) return this.tails.get(key)!.then(() => undefined);
    this.pending.add(key);
    return this.run(key, () => {
      this.pending.delete(key);
      return action();
    });
  }

  /** True while an action of `key` runs or waits. */
  busy(key: string): boolean {
    return this.tails.has(key);
  }

  /** Resolves once every action queued so far, for every key, has finished. */
  async idle(): Promise<void> {
    while (this.tails.size) await Promise.all([...this.tails.values()]);
  }
}
