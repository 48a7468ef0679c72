import fastJsonPatch from 'fast-json-patch';
import {
  ClosedError,
  SessionMirror,
  type ActorDefinition,
  type FtmError,
  type LeaveReason,
  type SessionClient,
} from '../runtime/index.ts';
import type { Span } from '@opentelemetry/api';
import { RequestTracing } from './gateway-telemetry.ts';
import { CloseCode, encodeClientDatagram, jsonReplacer, ErrorCode } from './protocol.ts';

/** What a route needs from a client connection: the gateway's connections implement it. */
export interface RouteMember {
  /** The client id (token `sub`). */
  readonly clientId: string;
  /** This connection's id, unique across gateways (`<gateway>.<n>`). */
  readonly connectionId: string;
  /** Requests this connection waits on, by namespaced id. */
  readonly waiting: Set<string>;
  /** Sends a text frame already encoded; false when the connection is closing. */
  sendText(frame: Buffer): boolean;
  /** Sends a datagram to the client (UDP when its address is known, else WebSocket); may drop. */
  sendDatagram(frame: Uint8Array): void;
  /** Closes the client's connection with `code`. */
  close(code: number, reason: string): void;
}

/** Counters a route updates; the gateway owns them. */
export interface RouteCounters {
  replies: number;
  events: number;
  datagramsOut: number;
  errors: Record<string, number>;
}

/** A request in flight: its client's id, who waits on it, and its span (a no-op one when untraced). */
type InFlight = { id: string; waiters: Set<RouteMember>; span: Span };

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
  /** The view each member was last sent (JSON), once it has had its first. */
  private readonly views = new Map<RouteMember, unknown>();
  private mirror: SessionMirror | undefined;
  private readonly tracing: RequestTracing;

  constructor(
    readonly sid: string,
    readonly actor: ActorDefinition,
    private readonly client: SessionClient,
    private readonly counters: RouteCounters,
    private readonly requestTimeoutMs: number,
    private readonly onError: (err: Error) => void,
  ) {
    this.tracing = new RequestTracing(onError);
    // One listener each for the session's life on this gateway, fanned out to its members.
    client.onEvent((name, payload, to) => this.broadcast(name, payload, to));
    client.onDatagram((data, from, to) => this.forwardDatagram(data, from, to));
  }

  /**
   * A client's connection to the session opened (after its welcome): the
   * actor's `onJoin` runs (a replicated input from the client), and the
   * client gets its view once the session's state is known here. A client
   * back after a lost connection names it (`previous`): its leave goes
   * first, under the id its own gateway would have used, so it is applied
   * once even when that gateway sent it too, and at all when it died.
   */
  join(member: RouteMember, previous?: string): void {
    this.members.add(member);
    if (this.actor.onLeave && previous)
      this.lifecycle(member.clientId, `$leave.${previous}`, '$leave', { reason: 'lost' });
    if (this.actor.onJoin)
      this.lifecycle(member.clientId, `$join.${member.connectionId}`, '$join', {});
    if (this.actor.view) {
      this.mirror ??= new SessionMirror(
        this.client,
        (state, seq) => this.syncViews(state, seq),
        (err: FtmError) => this.onError(err),
      );
      if (this.mirror.state !== undefined)
        this.syncView(member, this.mirror.state, this.mirror.seq);
    }
  }

  /** The session was closed: every member's connection ends with 4410. */
  ended(): void {
    for (const m of [...this.members]) m.close(CloseCode.sessionClosed, 'the session ended');
    this.close();
  }

  /** Stops the route's state sync (the session ended, or the gateway stops). */
  close(): void {
    this.mirror?.close();
    this.mirror = undefined;
  }

  /**
   * Sends a lifecycle input of client `clientId` (its ids hold a `$`, which a
   * client's request ids never do; applied once: the id is resent as is
   * across a failover).
   */
  private lifecycle(clientId: string, id: string, type: string, extra: object): void {
    this.client
      .request(
        type,
        { client: clientId, ...extra },
        { requestId: `${clientId}.${id}`, timeoutMs: this.requestTimeoutMs, sender: clientId },
      )
      .catch((err: unknown) => {
        // The gateway is stopping: the input went out, its answer is not needed.
        if (err instanceof ClosedError) return;
        this.onError(
          new Error(`${this.sid}: ${type} of ${clientId} failed: ${(err as Error).message}`),
        );
      });
  }

  private syncViews(state: object, seq: number): void {
    for (const m of this.members) this.syncView(m, state, seq);
  }

  /** Sends `member` its view: whole the first time, then the JSON Patch from the last one sent. */
  private syncView(member: RouteMember, state: object, seq: number): void {
    let view: unknown;
    try {
      // Plain JSON, as the client will hold it (Maps, Sets, bytes converted).
      const raw = JSON.stringify(this.actor.view!(state, member.clientId) ?? null, jsonReplacer);
      view = JSON.parse(raw);
    } catch (err) {
      return this.onError(
        new Error(
          `${this.actor.name}.view for ${member.clientId} threw: ${(err as Error).message}`,
        ),
      );
    }
    const before = this.views.get(member);
    this.views.set(member, view);
    // A patch changes what is inside a view: a first view, or one whose root is
    // no longer the same kind of container, goes whole.
    if (
      before === undefined ||
      !containerKind(view) ||
      containerKind(before) !== containerKind(view)
    ) {
      member.sendText(Buffer.from(JSON.stringify({ type: 'state', seq, state: view })));
      return;
    }
    const ops = fastJsonPatch.compare(before as object, view as object);
    if (ops.length) member.sendText(Buffer.from(JSON.stringify({ type: 'patch', seq, ops })));
  }

  /** Requests in flight at this gateway for this session. */
  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /**
   * Forwards a request already checked (rate, shape, handler, payload) under
   * the namespaced id `${clientId}.${id}`; the reply goes to every member
   * waiting on that id when it is released. The request is a span
   * (`ftmesh.gateway.request`, a child of the client's `traceparent` when
   * it sent a valid one); a sampled span's context goes on with the input.
   */
  forward(
    member: RouteMember,
    id: string,
    name: string,
    payload: unknown,
    traceparent?: string,
  ): void {
    const nsId = `${member.clientId}.${id}`;
    member.waiting.add(nsId);
    const known = this.inFlight.get(nsId);
    if (known) {
      known.waiters.add(member);
      return;
    }
    const span = this.tracing.start(this.sid, name, member.clientId, id, traceparent);
    const entry: InFlight = { id, waiters: new Set([member]), span };
    this.inFlight.set(nsId, entry);
    const options = {
      requestId: nsId,
      timeoutMs: this.requestTimeoutMs,
      sender: member.clientId,
      traceparent: this.tracing.context(span),
    };
    this.client.request(name, payload, options).then(
      (result) => {
        this.counters.replies++;
        this.tracing.end(span);
        this.settle(nsId, entry, { type: 'reply', id, result });
      },
      (err: unknown) => {
        const e = err as { code?: unknown; message?: unknown; retryable?: unknown };
        const code = typeof e?.code === 'string' ? e.code : ErrorCode.internal;
        this.tracing.end(span, code);
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

  /**
   * A member left: it no longer waits on anything (the requests stay in
   * flight), and the actor's `onLeave` runs with `reason` (none when the
   * session itself ended).
   */
  leave(member: RouteMember, reason: LeaveReason | undefined): void {
    if (!this.members.delete(member)) return;
    this.views.delete(member);
    if (this.actor.onLeave && reason)
      this.lifecycle(member.clientId, `$leave.${member.connectionId}`, '$leave', { reason });
    // Nobody here to sync a view to: stop following the session's commits.
    if (!this.members.size) this.close();
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

  /** An event to every member, or (`to`) to the members of those client ids. */
  private broadcast(name: string, payload: unknown, to: string[] | undefined): void {
    if (!this.members.size) return;
    let text: Buffer | undefined;
    for (const m of this.members) {
      if (to && !to.includes(m.clientId)) continue;
      if (!text) {
        // Encoded once for every member of this gateway.
        text = Buffer.from(JSON.stringify({ type: 'event', name, payload }, jsonReplacer));
        this.counters.events++;
      }
      m.sendText(text);
    }
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

/** `array`, `object`, or `''` for a JSON value a patch cannot reach into. */
function containerKind(value: unknown): string {
  if (Array.isArray(value)) return 'array';
  return typeof value === 'object' && value !== null ? 'object' : '';
}
