import { randomBytes } from 'node:crypto';
import type { NatsConnection, Subscription } from '@nats-io/transport-node';
import type { ActorDefinition } from './actor.ts';
import { systemClock, type Clock } from './clock.ts';
import { createValueCodec } from './codec.ts';
import type { FtmError } from './errors.ts';
import {
  ClosedError,
  InvalidArgumentError,
  SessionExistsError,
  SessionNotFoundError,
  UnknownActorError,
  errorFromWire,
  errorToWire,
  type WireError,
} from './errors.ts';
import { connectNats } from './nats-connect.ts';
import { PrimarySession } from './primary-session.ts';
import { ReplicaSession } from './replica-session.ts';
import { SessionClient } from './session-client.ts';
import { stateHash } from './state-hash.ts';
import { assertId, subjects } from './subjects.ts';

/** Options of {@link createHost}. */
export interface HostOptions {
  /** A NATS URL (or comma-separated URLs), or a connection the caller owns. */
  nats: string | NatsConnection;
  /** The actor types this host can run, as primary or standby. */
  actors: readonly ActorDefinition<any>[];
  /** Default: a random id. Letters, digits, `_` and `-`. */
  hostId?: string;
  clock?: Clock;
  /** Called with every error the host handled without throwing (refused frames, handler errors). */
  onError?: (err: FtmError) => void;
}

/** What a host knows of one of its sessions. */
export interface SessionInfo {
  sid: string;
  actor: string;
  role: 'primary' | 'standby';
  epoch: number;
  seq: number;
}

/** A process's share of the mesh: many sessions, each as primary or standby. */
export interface Host {
  readonly id: string;
  /**
   * Opens a new session with this host as primary and `standby` as its hot
   * standby; resolves once the standby holds the initial state and the
   * primary takes inputs.
   */
  openSession(
    actor: string,
    sid: string,
    options: { standby: string; init?: unknown },
  ): Promise<SessionInfo>;
  /** Sends a request to a session (anywhere on the mesh); resolves with the released reply. */
  request(
    sid: string,
    type: string,
    payload?: unknown,
    options?: { requestId?: string; timeoutMs?: number },
  ): Promise<unknown>;
  /** The client this host uses for `sid` (one per session, created on first use). */
  client(sid: string): SessionClient;
  /** This host's copy of the session's state (primary or standby). */
  state(sid: string): unknown;
  /** Canonical hash of this host's copy of the state. */
  hash(sid: string): string;
  info(sid: string): SessionInfo | undefined;
  /** Stops every session and subscription; closes the connection if the host opened it. Safe twice. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

type ControlRequest = {
  op: 'attach';
  actor: string;
  sid: string;
  epoch: number;
  seq: number;
  state: object;
};

/**
 * Creates a host on a NATS connection.
 * @example
 * const host = await createHost({ nats: 'nats://127.0.0.1:4222', actors: [counter] });
 */
export async function createHost(options: HostOptions): Promise<Host> {
  const hostId = options.hostId ?? `h-${randomBytes(5).toString('hex')}`;
  assertId('hostId', hostId);
  if (!options.actors?.length)
    throw new InvalidArgumentError('actors: pass at least one actor definition');
  const owned = typeof options.nats === 'string';
  const nc =
    typeof options.nats === 'string'
      ? await connectNats(options.nats, { name: `ftm-host-${hostId}` })
      : options.nats;
  const codec = createValueCodec();
  const clock = options.clock ?? systemClock;
  const onError =
    options.onError ??
    ((err: FtmError) => console.error(`[ftmesh ${hostId}] ${err.name}: ${err.message}`));
  const actors = new Map(options.actors.map((a) => [a.name, a]));
  const sessions = new Map<string, PrimarySession | ReplicaSession>();
  const clients = new Map<string, SessionClient>();
  let closed = false;

  const actorNamed = (name: string): ActorDefinition => {
    const a = actors.get(name);
    if (!a)
      throw new UnknownActorError(
        `actor ${JSON.stringify(name)} is not registered on host ${hostId}`,
      );
    return a;
  };
  const session = (sid: string) => {
    const s = sessions.get(sid);
    if (!s) throw new SessionNotFoundError(`session ${sid} is not on host ${hostId}`);
    return s;
  };

  const control: Subscription = nc.subscribe(subjects.hostControl(hostId), {
    callback: (_err, msg) => {
      void (async () => {
        try {
          const req = codec.decode(msg.data) as ControlRequest;
          if (req.op !== 'attach')
            throw new InvalidArgumentError(`unknown control op ${JSON.stringify(req.op)}`);
          if (sessions.has(req.sid))
            throw new SessionExistsError(`session ${req.sid} already on host ${hostId}`);
          const replica = new ReplicaSession(
            nc,
            codec,
            actorNamed(req.actor),
            req.sid,
            req,
            onError,
          );
          sessions.set(req.sid, replica);
          await replica.start();
          msg.respond(codec.encode({ ok: true }));
        } catch (err) {
          msg.respond(codec.encode({ error: errorToWire(err) }));
        }
      })();
    },
  });
  await nc.flush();

  const host: Host = {
    id: hostId,
    async openSession(actorName, sid, opts) {
      if (closed) throw new ClosedError(`host ${hostId} is closed`);
      assertId('sid', sid);
      assertId('hostId', opts?.standby);
      if (opts.standby === hostId)
        throw new InvalidArgumentError(`standby: pick another host than the primary (${hostId})`);
      if (sessions.has(sid))
        throw new SessionExistsError(`session ${sid} is already open on host ${hostId}`);
      const actor = actorNamed(actorName);
      const init = { state: Object.freeze(actor.initialState(opts.init)), seq: 0, epoch: 1 };
      const primary = new PrimarySession(nc, codec, actor, sid, init, () => clock.now(), onError);
      sessions.set(sid, primary);
      try {
        const reply = await nc.request(
          subjects.hostControl(opts.standby),
          codec.encode({ op: 'attach', actor: actorName, sid, ...init } satisfies ControlRequest),
          { timeout: 5_000 },
        );
        const answer = codec.decode(reply.data) as { ok?: true; error?: WireError };
        if (answer.error) throw errorFromWire(answer.error);
      } catch (err) {
        sessions.delete(sid);
        throw err;
      }
      primary.serve();
      await nc.flush();
      return host.info(sid)!;
    },
    client(sid) {
      assertId('sid', sid);
      let c = clients.get(sid);
      if (!c) clients.set(sid, (c = new SessionClient(nc, codec, sid)));
      return c;
    },
    async request(sid, type, payload, opts) {
      const c = host.client(sid);
      return c.request(type, payload, opts);
    },
    state: (sid) => session(sid).state,
    hash: (sid) => stateHash(session(sid).state),
    info(sid) {
      const s = sessions.get(sid);
      return s && { sid, actor: s.actor.name, role: s.role, epoch: s.epoch, seq: s.seq };
    },
    // Shutdown order: stop taking control requests and inputs, then let go of the connection.
    async close() {
      if (closed) return;
      closed = true;
      control.unsubscribe();
      for (const s of sessions.values()) s.close();
      for (const c of clients.values()) c.close();
      sessions.clear();
      clients.clear();
      if (owned) await nc.close();
      else await nc.flush().catch(() => undefined);
    },
    [Symbol.asyncDispose]: () => host.close(),
  };
  return host;
}
