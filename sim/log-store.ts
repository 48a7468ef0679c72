import { LogConflictError } from '../runtime/errors.ts';
import type { LogMessage, LogPort } from '../runtime/ports.ts';
import type { SimProcess } from './process.ts';
import type { StoreServer } from './store-server.ts';

/**
 * The JetStream stream `FTM_LOG`: one stream sequence, one subject per
 * session. An append is deduplicated by its msgId first (a retry answers the
 * first append's seq, whatever its expectation says: JetStream checks the
 * duplicate window before the expected last subject sequence), then refused
 * with {@link LogConflictError} unless the subject's last message is
 * `expectLast` (0: none). With `fenceOff` the expectation is ignored: what
 * the fencing prevents can then be seen.
 */
export class LogStream {
  seq = 0;
  appends = 0;
  conflicts = 0;
  private readonly subjects = new Map<string, LogMessage[]>();
  private readonly msgIds = new Map<string, number>();
  /** Called at the server after each stored append (the one-writer-per-log check). */
  onAppend: ((sid: string, data: Uint8Array, seq: number, by: SimProcess) => void) | undefined;

  constructor(
    readonly server: StoreServer,
    private readonly fenceOff: boolean,
  ) {}

  private lastOf(sid: string): number {
    return this.subjects.get(sid)?.at(-1)?.seq ?? 0;
  }

  private lastMessage(sid: string): { seq: number; epoch: number } {
    const m = this.subjects.get(sid)?.at(-1);
    return { seq: m?.seq ?? 0, epoch: m?.epoch ?? 0 };
  }

  /** The messages of `sid` as stored now (for checks; no copy). */
  messages(sid: string): readonly LogMessage[] {
    return this.subjects.get(sid) ?? [];
  }

  port(proc: SimProcess): LogPort {
    const server = this.server;
    return {
      append: (sid, data, { msgId, expectLast, epoch }) =>
        server.op(proc, `append to ${sid}`, () => {
          const dup = this.msgIds.get(msgId);
          if (dup !== undefined) return dup;
          const last = this.lastOf(sid);
          if (!this.fenceOff && expectLast !== last) {
            this.conflicts++;
            throw new LogConflictError(
              `log of ${sid}: another writer appended after stream seq ${expectLast}`,
            );
          }
          const seq = ++this.seq;
          let list = this.subjects.get(sid);
          if (!list) this.subjects.set(sid, (list = []));
          list.push({ seq, data: data.slice(), epoch });
          this.msgIds.set(msgId, seq);
          this.appends++;
          this.onAppend?.(sid, data, seq, proc);
          return seq;
        }),
      last: (sid) => server.op(proc, `last of ${sid}`, () => this.lastMessage(sid)),
      read: (sid) =>
        server.op(proc, `read ${sid}`, () =>
          (this.subjects.get(sid) ?? []).map((m) => ({ ...m, data: m.data.slice() })),
        ),
      purgeBefore: (sid, seq) =>
        server.op(proc, `purge ${sid} below ${seq}`, () => {
          const list = this.subjects.get(sid);
          if (list)
            this.subjects.set(
              sid,
              list.filter((m) => m.seq >= seq),
            );
        }),
      purgeAll: (sid) =>
        server.op(proc, `purge ${sid}`, () => {
          this.subjects.delete(sid);
        }),
    };
  }
}
