import type { ValueCodec } from './codec.ts';
import { errorToWire, MalformedMessageError } from './errors.ts';
import type { Transport, TransportSubscription } from './ports.ts';
import type { SessionSnapshot } from './session-types.ts';
import { subjects } from './subjects.ts';

/** Control requests served by a session's primary on `ftm.s.<sid>.ctl.<epoch>`. */
export type SessionControl = { op: 'flush' } | { op: 'snapshot' };

/** What the primary answers them from. */
export type SessionControlSource = {
  snapshot(): SessionSnapshot;
  /** How far the log reaches: a standby that keeps the frames above it can cover them. */
  logged(): number;
  /** Stores a snapshot in the snapshot store (for one above max_payload); resolves with its seq. */
  snapshotNow(): Promise<number>;
  /** Flushes the log; resolves with the logged seq. */
  flush(): Promise<number>;
};

/**
 * Serves a primary's control requests: a replica's snapshot (in the answer,
 * or through the snapshot store when it is too big for one message) and a
 * log flush before it reads the log. The subject names the epoch: a
 * primary of another epoch, not fenced yet, never answers for this one.
 */
export function serveSessionControl(
  transport: Transport,
  codec: ValueCodec,
  sid: string,
  epoch: number,
  source: SessionControlSource,
): TransportSubscription {
  return transport.subscribe(subjects.control(sid, epoch), (msg) => {
    const fail = (err: unknown) => msg.respond(codec.encode({ error: errorToWire(err) }));
    let req: Partial<SessionControl> | null;
    try {
      req = codec.decode(msg.data) as Partial<SessionControl> | null;
    } catch (err) {
      fail(new MalformedMessageError(`${sid}: an unreadable session control request`));
      throw err;
    }
    if (req?.op === 'snapshot') {
      const bytes = codec.encode({ ...source.snapshot(), logged: source.logged() });
      if (bytes.length <= transport.maxPayload - 1024) {
        msg.respond(bytes);
        return;
      }
      // Too big for one NATS message (a large state, a dedup table full of
      // large replies): it goes through the snapshot store, which chunks it.
      source
        .snapshotNow()
        .then((seq) => msg.respond(codec.encode({ stored: seq, logged: seq, epoch })), fail);
    } else if (req?.op === 'flush') {
      source.flush().then((loggedSeq) => msg.respond(codec.encode({ loggedSeq })), fail);
    } else {
      fail(new MalformedMessageError(`${sid}: unknown session control request`));
    }
  });
}
