import { RequestTimeoutError, type MeshClient } from '../../runtime/index.ts';

/** What a request stream saw: every reply, by request index, and when each arrived. */
export interface StreamResult {
  replies: number[];
  /** performance.now() of each reply, in arrival order. */
  arrivals: number[];
  /** Requests sent again after a timeout (same id, so applied at most once). */
  retries: number;
}

/**
 * Sends `count` requests `add 1` to a counter session, `window` at a time,
 * each with its own id; a timed-out request is sent again with the same id.
 * `onReply` sees the number of replies so far (a test kills a host at some count).
 */
export async function streamAdds(
  client: MeshClient,
  sid: string,
  count: number,
  options: { window?: number; onReply?: (n: number) => void; prefix?: string } = {},
): Promise<StreamResult> {
  const result: StreamResult = { replies: new Array<number>(count), arrivals: [], retries: 0 };
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < count; i = next++) {
      const requestId = `${options.prefix ?? sid}-${i}`;
      for (let attempt = 0; ; attempt++) {
        try {
          result.replies[i] = (await client.request(sid, 'add', 1, {
            requestId,
            timeoutMs: 2_000,
          })) as number;
          break;
        } catch (err) {
          if (!(err instanceof RequestTimeoutError) || attempt >= 10) throw err;
          result.retries++;
        }
      }
      result.arrivals.push(performance.now());
      options.onReply?.(result.arrivals.length);
    }
  };
  await Promise.all(Array.from({ length: options.window ?? 4 }, worker));
  return result;
}

/**
 * Each of n adds applied exactly once gives the replies 1..n, each once:
 * returns the values missing (an update lost) and repeated (applied twice).
 */
export function exactlyOnce(replies: readonly number[]): { lost: number[]; doubled: number[] } {
  const seen = new Map<number, number>();
  for (const r of replies) seen.set(r, (seen.get(r) ?? 0) + 1);
  const lost: number[] = [];
  for (let v = 1; v <= replies.length; v++) if (!seen.has(v)) lost.push(v);
  const doubled = [...seen].filter(([, n]) => n > 1).map(([v]) => v);
  return { lost, doubled };
}
