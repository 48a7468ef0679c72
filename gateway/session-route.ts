import type { ActorDefinition, SessionClient } from '../runtime/index.ts';
import { encodeClientDatagram, jsonReplacer, ErrorCode } from './protocol.ts';

/** What a route needs from a client connection: the gateway's connections implement it. */
export interface RouteMember {
  /** The client id (token `sub`). */
  readonly clientId: string;
  /** Requests this connection waits on, by namespaced id. */
  readonly waiting: Set<string>;
  /** Sends a text frame already encoded; false when the connection is closing. */
  sendText(frame: Buffer): boolean;
  /** Sends a datagram to the client (UDP when its address is known, else WebSocket); may drop. */
  sendDatagram(frame: Uint8Array): void;
}

/** Counters a route updates; the gateway owns them. */
export interface RouteCounters {
  replies: number;
  events: number;
  datagramsOut: number;
  errors: Record<string, number>;
}

type InFlight = { id: string; waiters: Set<RouteMember> };

/**
 * A session as one gateway sees it: the runtime's {@link SessionClient} for
 * it (which releases replies by consistency mode, drops stale epochs and
 * re-sends unreleased requests on a new epoch), the actor whose handlers and
 * checks gate every request, and this gateway's connections to it.
 *
 * A request id in flight is forwarded once however many times it arrives
 * (a client that reconnected to this gateway and resent it waits on the same
 * reply): the runtime's client keeps one pending entry per id.
 */
export class SessionRoute {
  readonly members = new Set<RouteMember>();
  private readonly inFlight = new Map<string, InFlight>();

  constructor(
    readonly sid: string,
    readonly actor: ActorDefinition,
    private readonly client: SessionClient,
    private readonly counters: RouteCounters,
    private readonly requestTimeoutMs: number,
  ) {
    // One listener each for the session's life on this gateway, fanned out to its members.
    client.onEvent((name, payload) => this.broadcast(name, payload));
    client.onDatagram((data, from, to) => this.forwardDatagram(data, from, to));
  }

  /** Requests in flight at this gateway for this session. */
  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /**
   * Forwards a request already checked (rate, shape, handler, payload) under
   * the namespaced id `${clientId}.${id}`; the reply goes to every member
   * waiting on that id when it is released.
   */
  forward(member: RouteMember, id: string, name: string, payload: unknown): void {
    const nsId = `${member.clientId}.${id}`;
    member.waiting.add(nsId);
    const known = this.inFlight.get(nsId);
    if (known) {
      known.waiters.add(member);
      return;
    }
    const entry: InFlight = { id, waiters: new Set([member]) };
    this.inFlight.set(nsId, entry);
    this.client.request(name, payload, { requestId: nsId, timeoutMs: this.requestTimeoutMs }).then(
      (result) => {
        this.counters.replies++;
        this.settle(nsId, entry, { type: 'reply', id, result });
      },
      (err: unknown) => {
        const e = err as { code?: unknown; message?: unknown; retryable?: unknown };
        const code = typeof e?.code === 'string' ? e.code : ErrorCode.internal;
        this.counters.errors[code] = (this.counters.errors[code] ?? 0) + 1;
        this.settle(nsId, entry, {
          type: 'error',
          id,
          code,
          message: String(e?.message ?? err),
          retryable: e?.retryable === true,
        });
      },
    );
  }

  /** Sends a client's datagram to the session's primary, as client `from`. */
  sendDatagram(data: Uint8Array, from: string): void {
    this.client.sendDatagram(data, from);
  }

  /** A member left: it no longer waits on anything (the requests stay in flight). */
  leave(member: RouteMember): void {
    this.members.delete(member);
    for (const nsId of member.waiting) this.inFlight.get(nsId)?.waiters.delete(member);
    member.waiting.clear();
  }

  private settle(nsId: string, entry: InFlight, frame: object): void {
    this.inFlight.delete(nsId);
    if (!entry.waiters.size) return;
    let text: Buffer;
    try {
      text = Buffer.from(JSON.stringify(frame, jsonReplacer));
    } catch (err) {
      text = Buffer.from(
        JSON.stringify({
          type: 'error',
          id: entry.id,
          code: ErrorCode.internal,
          message: `reply not representable as JSON: ${(err as Error).message}`,
          retryable: false,
        }),
      );
    }
    for (const m of entry.waiters) {
      m.waiting.delete(nsId);
      m.sendText(text);
    }
  }

  private broadcast(name: string, payload: unknown): void {
    if (!this.members.size) return;
    this.counters.events++;
    // Encoded once for every member of this gateway.
    const text = Buffer.from(JSON.stringify({ type: 'event', name, payload }, jsonReplacer));
    for (const m of this.members) m.sendText(text);
  }

  /** `to` empty: every client of the session but the sender; else that client only. */
  private forwardDatagram(data: Uint8Array, from: string, to: string): void {
    let frame: Uint8Array | undefined;
    for (const m of this.members) {
      if (to ? m.clientId !== to : m.clientId === from) continue;
      frame ??= encodeClientDatagram(from, data);
      this.counters.datagramsOut++;
      m.sendDatagram(frame);
    }
  }
}
