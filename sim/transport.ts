import { FtmError, NoResponderError, RequestTimeoutError } from '../runtime/errors.ts';
import type { Transport, TransportMessage } from '../runtime/ports.ts';
import type { Connection, Network, SimMessage, Subscription } from './network.ts';
import type { World } from './world.ts';

/** nats-server's default max_payload. */
export const maxPayload = 1024 * 1024;

type Pending = {
  resolve: (data: Uint8Array) => void;
  reject: (err: Error) => void;
  timer: { cancelled: boolean };
};

/**
 * The Transport port on a simulated connection, as `nats-transport.ts` binds
 * it on a NATS one: a throwing callback is counted as a dropped message
 * (by the network) and delivery goes on; requests use one inbox
 * subscription per connection, time out on the process's clock, and fail
 * with {@link NoResponderError} when the server finds no subscriber.
 */
export function simTransport(world: World, network: Network, conn: Connection): Transport {
  const pending = new Map<string, Pending>();
  const inboxPrefix = `_INBOX.${conn.id}.`;
  let inbox: Subscription | undefined;
  let nextToken = 0;
  const checkSize = (subject: string, data: Uint8Array) => {
    if (data.length > maxPayload)
      throw new FtmError(`publish on ${subject}: ${data.length} bytes exceed max_payload`);
  };
  const onReply = (m: SimMessage) => {
    const token = m.subject.slice(inboxPrefix.length);
    const p = pending.get(token);
    if (!p) return;
    pending.delete(token);
    p.timer.cancelled = true;
    if (m.noResponders) p.reject(new NoResponderError(`nobody answers on ${m.subject}`));
    else p.resolve(m.data);
  };
  return {
    publish(subject, data) {
      checkSize(subject, data);
      network.publish(conn, subject, data);
    },
    subscribe(subject, onMessage) {
      const sub = network.subscribe(conn, subject, (m) => {
        const replyTo = m.replyTo;
        const msg: TransportMessage = {
          subject: m.subject,
          data: m.data,
          respond: (data) => {
            if (!replyTo) return false;
            checkSize(replyTo, data);
            network.publish(conn, replyTo, data);
            return true;
          },
        };
        onMessage(msg);
      });
      return { unsubscribe: () => network.unsubscribe(sub) };
    },
    request(subject, data, timeoutMs) {
      checkSize(subject, data);
      inbox ??= network.subscribe(conn, `${inboxPrefix}*`, onReply);
      const token = String(nextToken++);
      return new Promise<Uint8Array>((resolve, reject) => {
        const timer = world.schedule(
          timeoutMs,
          () => {
            if (!pending.delete(token)) return;
            reject(new RequestTimeoutError(`no answer on ${subject} in time`));
          },
          conn.proc,
        );
        pending.set(token, { resolve, reject, timer });
        network.publish(conn, subject, data, `${inboxPrefix}${token}`);
      });
    },
    flush: () => network.flush(conn),
    maxPayload,
  };
}
