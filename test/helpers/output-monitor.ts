import { AssertionError } from 'node:assert';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import { connectNats } from '../../runtime/nats-connect.ts';
import { subjects } from '../../runtime/subjects.ts';
import { CommitFlag, FrameKind, decodeFrame } from '../../runtime/wire.ts';

/** Counts of what an {@link OutputMonitor} saw so far. */
export interface OutputStats {
  /** Messages received on the output subject. */
  messages: number;
  /** Commits recorded (first sightings and retransmissions). */
  commits: number;
  /** Distinct (epoch, seq) recorded. */
  seqs: number;
  /** Commits seen again with the same bytes at their (epoch, seq). */
  retransmissions: number;
  /** Frames flagged duplicate (a repeat answered from the dedup table): ignored. */
  duplicates: number;
  /** Refusals (nothing committed): ignored. */
  refusals: number;
  /** Frames of another kind on the output subject: ignored. */
  otherKinds: number;
  /** Messages that did not decode. */
  malformed: number;
  /** (epoch, seq) seen with two different payloads. */
  conflicts: number;
}

/** One (epoch, seq) committed with different payloads. */
export interface OutputConflict {
  epoch: number;
  seq: number;
  /** Each distinct payload, hex-encoded and cut to 80 characters, with its request id. */
  payloads: { requestId: string; hex: string }[];
}

/** Watches a session's output subject, see {@link monitorOutput}. */
export interface OutputMonitor {
  /**
   * @throws AssertionError listing every (epoch, seq) committed with two
   * different payloads (reply, patches or request id). Retransmissions are
   * byte-identical and pass.
   */
  assertOnePayloadPerSeq(): void;
  /** Every (epoch, seq) committed with different payloads so far. */
  conflicts(): OutputConflict[];
  stats(): OutputStats;
  /** Errors of messages that did not decode, the first 20. */
  readonly errors: readonly Error[];
  /** Unsubscribes. Safe to call twice. */
  close(): void;
}

const MAX_ERRORS = 20;

/** The bytes a commit is made of: request id, reply and patches (flags vary on a retransmit). */
function payloadKey(requestId: string, reply: Uint8Array, patches: Uint8Array): string {
  return `${requestId}\u0000${Buffer.from(reply).toString('hex')}\u0000${Buffer.from(patches).toString('hex')}`;
}

/**
 * Subscribes to `ftm.s.<sid>.out` and records, per (epoch, seq), the bytes of
 * each commit (request id, reply and patches). Commits flagged duplicate and
 * refusals are ignored; a message that does not decode is counted as
 * malformed (its error kept), never thrown into the client's read loop.
 * One primary per epoch means one payload per (epoch, seq): a second,
 * different one is two histories.
 *
 * @example
 * const monitor = monitorOutput(nc, 'room-1');
 * await nc.flush(); // the subscription is on the server
 * ...
 * monitor.assertOnePayloadPerSeq();
 * monitor.close();
 */
export function monitorOutput(nc: NatsConnection, sid: string): OutputMonitor {
  /** `${epoch}:${seq}` -> the distinct payloads seen there, by key. */
  const seen = new Map<string, Map<string, { requestId: string; hex: string }>>();
  const errors: Error[] = [];
  const stats: OutputStats = {
    messages: 0,
    commits: 0,
    seqs: 0,
    retransmissions: 0,
    duplicates: 0,
    refusals: 0,
    otherKinds: 0,
    malformed: 0,
    conflicts: 0,
  };

  const record = (bytes: Uint8Array): void => {
    stats.messages++;
    let f;
    try {
      f = decodeFrame(bytes);
    } catch (err) {
      stats.malformed++;
      if (errors.length < MAX_ERRORS) errors.push(err as Error);
      return;
    }
    if (f.kind === FrameKind.refusal) return void stats.refusals++;
    if (f.kind !== FrameKind.commit) return void stats.otherKinds++;
    if (f.flags & CommitFlag.duplicate) return void stats.duplicates++;
    stats.commits++;
    const at = `${f.epoch}:${f.seq}`;
    let payloads = seen.get(at);
    if (!payloads) {
      seen.set(at, (payloads = new Map()));
      stats.seqs++;
    }
    const key = payloadKey(f.requestId, f.reply, f.patches);
    if (payloads.has(key)) return void stats.retransmissions++;
    const hex = Buffer.from(bytes.subarray(14)).toString('hex');
    payloads.set(key, {
      requestId: f.requestId,
      hex: hex.length > 80 ? `${hex.slice(0, 77)}...` : hex,
    });
    if (payloads.size === 2) stats.conflicts++;
  };

  const sub: Subscription = nc.subscribe(subjects.output(sid), {
    callback: (err, msg) => {
      if (err) {
        if (errors.length < MAX_ERRORS) errors.push(err);
        return;
      }
      record(msg.data);
    },
  });

  const conflicts = (): OutputConflict[] => {
    const out: OutputConflict[] = [];
    for (const [at, payloads] of seen) {
      if (payloads.size < 2) continue;
      const [epoch, seq] = at.split(':').map(Number) as [number, number];
      out.push({ epoch, seq, payloads: [...payloads.values()] });
    }
    return out;
  };

  return {
    errors,
    stats: () => ({ ...stats }),
    conflicts,
    assertOnePayloadPerSeq() {
      const found = conflicts();
      if (!found.length) return;
      const lines = found.map(
        (c) =>
          `  epoch ${c.epoch} seq ${c.seq}: ` +
          c.payloads.map((p) => `[${p.requestId}] ${p.hex}`).join(' | '),
      );
      throw new AssertionError({
        message:
          `${found.length} (epoch, seq) of session ${sid} committed with different payloads ` +
          `(two histories):\n${lines.join('\n')}`,
        actual: found,
        expected: [],
        operator: 'assertOnePayloadPerSeq',
      });
    },
    close: () => sub.unsubscribe(),
  };
}

/**
 * For a describe's failover tests: `watch(sid)` monitors a session's output
 * from then on; after each test that passed, every monitor asserts one
 * payload per (epoch, seq), then all are closed (also after a failure).
 * @example
 * const watchOutput = useOutputMonitors(() => nats.url);
 * it('...', async () => { await client.placeSession('counter', 's'); await watchOutput('s'); ... });
 */
export function useOutputMonitors(url: () => string): (sid: string) => Promise<OutputMonitor> {
  let nc: NatsConnection | undefined;
  const monitors: OutputMonitor[] = [];
  afterEach(async function () {
    try {
      if (this.currentTest?.state === 'passed')
        for (const m of monitors) m.assertOnePayloadPerSeq();
    } finally {
      for (const m of monitors.splice(0)) m.close();
      await nc?.close();
      nc = undefined;
    }
  });
  return async (sid) => {
    nc ??= await connectNats(url());
    const m = monitorOutput(nc, sid);
    await nc.flush();
    monitors.push(m);
    return m;
  };
}
