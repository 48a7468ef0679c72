import type { NatsConnection } from '@nats-io/transport-node';
import { NoResponderError, RequestTimeoutError, ClosedError, FtmError } from './errors.ts';
import type { Transport, TransportSubscription } from './ports.ts';
import type { DroppedMessages } from './dropped-messages.ts';

/** The 1 MiB default of nats-server, for a connection that has no server info yet. */
const defaultMaxPayload = 1024 * 1024;

/**
 * The {@link Transport} port on a NATS connection. Each subscription gets a
 * callback that catches what the runtime's handler throws: a malformed
 * message is dropped and counted, and the client's read loop, which an
 * exception escaping a callback would end, goes on.
 */
export function natsTransport(nc: NatsConnection, dropped: DroppedMessages): Transport {
  return {
    publish(subject, data) {
      nc.publish(subject, data);
    },
    subscribe(subject, onMessage): TransportSubscription {
      const sub = nc.subscribe(subject, {
        callback: (err, msg) => {
          if (err) return dropped.drop(subject, err);
          try {
            // A NATS message is a TransportMessage as it is: no copy per message on the hot path.
            onMessage(msg);
          } catch (e) {
            dropped.drop(msg.subject, e);
          }
        },
      });
      return { unsubscribe: () => sub.unsubscribe() };
    },
    async request(subject, data, timeoutMs) {
      try {
        const reply = await nc.request(subject, data, { timeout: timeoutMs });
        return reply.data;
      } catch (err) {
        throw transportError(subject, err);
      }
    },
    flush: () => nc.flush(),
    get maxPayload() {
      return nc.info?.max_payload ?? defaultMaxPayload;
    },
  };
}

/** The client's errors as the runtime's: retryable ones stay retryable. */
export function transportError(subject: string, err: unknown): FtmError {
  if (err instanceof FtmError) return err;
  const e = err as { name?: string; message?: string; isNoResponders?: () => boolean };
  if (typeof e?.isNoResponders === 'function' && e.isNoResponders())
    return new NoResponderError(`nobody answers on ${subject}`, { cause: err });
  if (e?.name === 'TimeoutError' || /timeout/i.test(String(e?.message)))
    return new RequestTimeoutError(`no answer on ${subject} in time`, { cause: err });
  if (/closed|draining/i.test(String(e?.message)))
    return new ClosedError(`connection closed: ${e?.message}`, { cause: err });
  return new FtmError(`request on ${subject}: ${e?.message ?? String(err)}`, { cause: err });
}
