import type { SnapshotPort } from '../runtime/ports.ts';
import type { SimProcess } from './process.ts';
import type { StoreServer } from './store-server.ts';

/** The snapshot store: one snapshot per session, an older order never replacing a newer one. */
export class SnapshotStore {
  private readonly stored = new Map<string, { order: number; bytes: Uint8Array }>();

  constructor(readonly server: StoreServer) {}

  port(proc: SimProcess): SnapshotPort {
    const server = this.server;
    return {
      put: (sid, bytes, { order }) =>
        server.op(proc, `snapshot put ${sid}`, () => {
          const cur = this.stored.get(sid);
          if (cur && cur.order >= order) return false;
          this.stored.set(sid, { order, bytes: bytes.slice() });
          return true;
        }),
      get: (sid) =>
        server.op(proc, `snapshot get ${sid}`, () => this.stored.get(sid)?.bytes.slice()),
      delete: (sid) =>
        server.op(proc, `snapshot delete ${sid}`, () => {
          this.stored.delete(sid);
        }),
    };
  }
}
