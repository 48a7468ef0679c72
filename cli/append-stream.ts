import { connect, mintToken, type Session } from '../gateway/index.ts';
import { firstLine } from './errors.ts';

/**
 * The clients of `demo failover`: each connects through the gateway with the
 * SDK and appends `ID:0`, `ID:1`, ... to one session, the next once the last
 * was answered (the ledger of demo-actors.ts checks exactly that order).
 */

/** One streaming client: what it was told, and when. */
export interface StreamClient {
  readonly id: string;
  readonly session: Session;
  /** The append numbers answered, in order. */
  readonly acked: number[];
  /** When each reply came (wall-clock ms, sub-millisecond), in order. */
  readonly replyTimes: number[];
  /** Requests that got an error instead of a reply (unknown whether applied). */
  failed: number;
  lastError?: string;
}

/** A running stream of appends. */
export interface AppendStream {
  readonly clients: readonly StreamClient[];
  /** A condition that holds once every client got `count` more replies than at the call. */
  progressed(count: number): () => boolean;
  /** Stops sending, waits for the requests in flight, closes the sessions. Safe twice. */
  stop(): Promise<void>;
}

const now = () => performance.timeOrigin + performance.now();

/** Connects `count` clients `c1`... to `sid` through the gateway at `url` and starts them. */
export async function startAppendStream(
  url: string,
  secret: string,
  sid: string,
  count: number,
): Promise<AppendStream> {
  const clients: StreamClient[] = [];
  const loops: Promise<void>[] = [];
  let streaming = true;
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      streaming = false;
      await Promise.all(loops);
      await Promise.all(clients.map((c) => c.session.close()));
    })());
  try {
    for (let i = 1; i <= count; i++) {
      const id = `c${i}`;
      const session = await connect([url], {
        token: mintToken({ secret, sub: id, sid }),
        requestTimeoutMs: 30_000,
      });
      const c: StreamClient = { id, session, acked: [], replyTimes: [], failed: 0 };
      clients.push(c);
      loops.push(
        (async () => {
          for (let n = 0; streaming; n++) {
            try {
              await session.request('append', `${id}:${n}`);
              c.acked.push(n);
              c.replyTimes.push(now());
            } catch (err) {
              c.failed++;
              c.lastError = firstLine(err);
            }
          }
        })(),
      );
    }
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    clients,
    progressed(more) {
      const marks = clients.map((c) => c.acked.length + more);
      return () => clients.every((c, i) => c.acked.length >= marks[i]!);
    },
    stop,
  };
}
