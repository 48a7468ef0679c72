import { strict as assert } from 'node:assert';
import { isDeepStrictEqual } from 'node:util';
import { WebSocket } from 'ws';
import {
  connect,
  mintToken,
  type ConnectOptions,
  type ConnectionEvent,
  type Session,
  type WebSocketConstructor,
} from '../../gateway/index.ts';
import type { MeshClient } from '../../runtime/index.ts';
import { purgeMesh, useNatsServer } from '../helpers/nats.ts';
import {
  createTestClient,
  spawnNode,
  stopAll,
  useProcessesPerTest,
  type NodeProcess,
} from '../helpers/processes.ts';
import { until } from '../helpers/until.ts';

/** Milliseconds on one clock for every process of the test (performance.now() is per process). */
export const now = (): number => performance.timeOrigin + performance.now();

/** A client of a session through the gateway, and everything it saw. */
export interface ExampleClient {
  /** The client id (token `sub`). */
  readonly id: string;
  readonly session: Session;
  /** Every event, in arrival order. */
  readonly events: { name: string; payload: unknown; at: number }[];
  /** Every change of `session.state` the SDK reported (`on('state')`), with the seq it is at. */
  readonly states: { seq: number; state: unknown; at: number }[];
  /** `state` frames on the wire (whole views, sent on join); patches are the rest. */
  readonly stateFrames: number;
  readonly patchFrames: number;
  /** What went wrong as the client saw it: disconnections, errors not tied to a request, the end. */
  readonly problems: string[];
}

/** The hooks and handles of {@link useExampleMesh}. */
export interface ExampleMesh {
  /** The suite's nats-server. */
  readonly natsUrl: string;
  /** The test's own handle on the mesh (not a host): owners, placement, requests from TypeScript. */
  readonly mesh: MeshClient & { errors: Error[] };
  /** The WebSocket URL of the test's gateway process. */
  readonly gatewayUrl: string;
  /** Starts host processes with these ids; resolves once each is ready and the mesh hears it. */
  startHosts(...ids: string[]): Promise<void>;
  /**
   * Starts a gateway process (after the hosts); resolves with its URL. The
   * first one started is the one {@link connect} uses.
   */
  startGateway(id?: string): Promise<string>;
  /**
   * Connects a client with a token for `sid`; with `actor` the token lets the
   * gateway create the session on this hello if it does not exist.
   */
  connect(
    sub: string,
    sid: string,
    actor?: string,
    options?: Partial<ConnectOptions> & { urls?: string[] },
  ): Promise<ExampleClient>;
  /** The process of a host or gateway of this test, by id. */
  process(id: string): NodeProcess;
  /** SIGKILLs the process serving `sid`'s primary (from the ownership record): its id, and when. */
  killPrimary(sid: string): { host: string; at: number };
  /** Resolves once a live host other than `killed` is `sid`'s primary and another its standby. */
  failedOver(sid: string, killed: string): Promise<{ primary: string; standby: string }>;
  /** The primary's state and the seq it is at, read through the session like any request. */
  primaryState<S>(sid: string): Promise<{ seq: number; state: S }>;
  /**
   * Waits until each client's `session.state` equals `view(state of the
   * primary, client id)` (as JSON); fails with the difference otherwise.
   * Call it once the views stand still (no input or timer changing them).
   */
  viewsSettle<S>(
    sid: string,
    clients: readonly ExampleClient[],
    view: (state: S, clientId: string) => unknown,
  ): Promise<S>;
  /**
   * Fails when the gateway, a host or the test's mesh client reported an
   * error (the processes' stderr lines starting `error:`) but those `expected`
   * (a handler error the test provoked).
   */
  assertNoErrors(expected?: readonly RegExp[]): void;
}

const secret = 'example-tests-secret-0123456789abcdefghij';

/**
 * For an example's suite: one nats-server; per test, host processes, one
 * gateway process and SDK clients, all stopped after the test (clients
 * closed first, then every process SIGKILLed by pid, then the mesh's records
 * purged so the next test's hosts do not restore this one's sessions).
 */
export function useExampleMesh(): ExampleMesh {
  const nats = useNatsServer();
  const clients: ExampleClient[] = [];
  let mesh: (MeshClient & { errors: Error[] }) | undefined;
  let gatewayUrl: string | undefined;

  // Registered before the processes' hook: mocha runs afterEach hooks in this order.
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.session.close()));
  });
  const procs = useProcessesPerTest();
  afterEach(async () => {
    gatewayUrl = undefined;
    if (mesh) mesh.errors.length = 0;
    await purgeMesh(nats.url);
  });
  before(async () => {
    mesh = await createTestClient(nats.url);
  });
  after(async () => {
    await mesh?.close();
    await stopAll();
  });

  const spawn = (role: 'host' | 'gateway', id: string) => {
    const p = spawnNode('test/examples/mesh-process.ts', [role, nats.url, id], {
      env: { FTMESH_SECRET: secret },
    });
    procs.set(id, p);
    return p;
  };

  const self: ExampleMesh = {
    get natsUrl() {
      return nats.url;
    },
    get mesh() {
      if (!mesh) throw new Error('the mesh client starts in before()');
      return mesh;
    },
    get gatewayUrl() {
      if (!gatewayUrl) throw new Error('start the gateway first');
      return gatewayUrl;
    },
    async startHosts(...ids) {
      await Promise.all(
        ids.map((id) => spawn('host', id).waitForLine(new RegExp(`^ready ${id}$`), 20_000)),
      );
      await until(() => ids.every((id) => self.mesh.liveHosts().includes(id)), {
        message: `hosts ${ids.join(', ')} heard`,
      });
    },
    async startGateway(id = 'gw') {
      const line = await spawn('gateway', id).waitForLine(
        new RegExp(`^ready gateway ${id} `),
        20_000,
      );
      const url = line.split(' ')[3]!;
      gatewayUrl ??= url;
      return url;
    },
    process(id) {
      const p = procs.get(id);
      if (!p) throw new Error(`no process ${id} in this test`);
      return p;
    },
    async connect(sub, sid, actor, { urls, ...options } = {}) {
      let stateFrames = 0;
      let patchFrames = 0;
      const problems: string[] = [];
      const session = await connect(urls ?? self.gatewayUrl, {
        ...options,
        token: mintToken({ secret, sub, sid, ...(actor ? { actor } : {}) }),
        WebSocket: countingWebSocket((type) => {
          if (type === 'state') stateFrames++;
          else if (type === 'patch') patchFrames++;
        }),
        onConnectionChange: (e: ConnectionEvent) => {
          if (e.type === 'disconnected') problems.push(`disconnected ${e.code} ${e.reason}`);
          if (e.type === 'error') problems.push(`error ${e.code}: ${e.message}`);
        },
      });
      const client: ExampleClient = {
        id: sub,
        session,
        events: [],
        states: [],
        get stateFrames() {
          return stateFrames;
        },
        get patchFrames() {
          return patchFrames;
        },
        problems,
      };
      session.on('*', (payload, name) => client.events.push({ name, payload, at: now() }));
      session.on('state', (state) =>
        client.states.push({ seq: session.stateSeq, state, at: now() }),
      );
      void session.closed().then((err) => {
        if (err) problems.push(`closed: ${err.message}`);
      });
      clients.push(client);
      return client;
    },
    killPrimary(sid) {
      const host = self.mesh.owner(sid)?.primary;
      const p = host ? procs.get(host) : undefined;
      if (!host || !p) throw new Error(`no process of ours serves ${sid}'s primary (${host})`);
      const at = now();
      p.signal('SIGKILL');
      return { host, at };
    },
    async failedOver(sid, killed) {
      const owner = await until(
        () => {
          const o = self.mesh.owner(sid);
          const moved = o && o.primary !== killed && o.standby !== '' && o.standby !== killed;
          return moved ? o : undefined;
        },
        { timeoutMs: 10_000, message: `${sid} served and protected again without ${killed}` },
      );
      return { primary: owner!.primary, standby: owner!.standby };
    },
    async primaryState<S>(sid: string) {
      // `$state` is what a gateway asks for a session's state at a seq (runtime/transition.ts).
      return (await self.mesh.request(sid, '$state')) as { seq: number; state: S };
    },
    async viewsSettle<S>(
      sid: string,
      those: readonly ExampleClient[],
      view: (state: S, clientId: string) => unknown,
    ) {
      const expected = (state: S, id: string): unknown =>
        JSON.parse(JSON.stringify(view(state, id)));
      let last: S | undefined;
      try {
        await until(
          async () => {
            last = (await self.primaryState<S>(sid)).state;
            return those.every((c) => isDeepStrictEqual(c.session.state, expected(last!, c.id)));
          },
          { timeoutMs: 5_000, intervalMs: 50, message: `the clients' views of ${sid} settle` },
        );
      } catch (err) {
        // Say where they differ.
        for (const c of those)
          assert.deepStrictEqual(c.session.state, expected(last!, c.id), `${c.id}'s view`);
        throw err;
      }
      return last!;
    },
    assertNoErrors(expected = []) {
      const reported = [...procs].flatMap(([id, p]) =>
        p.stderr
          .filter((l) => l.startsWith('error:') && !expected.some((e) => e.test(l)))
          .map((l) => `${id} ${l}`),
      );
      assert.deepEqual(reported, [], 'errors the gateway and hosts reported');
      assert.deepEqual(self.mesh.errors.map(String), [], "errors the test's mesh client reported");
    },
  };
  return self;
}

/** The `ws` WebSocket, also telling `onFrame` the type of every JSON frame the gateway sends. */
function countingWebSocket(onFrame: (type: unknown) => void): WebSocketConstructor {
  class Counting extends WebSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols);
      this.on('message', (data, isBinary) => {
        if (!isBinary)
          onFrame((JSON.parse((data as Buffer).toString('utf8')) as { type?: unknown }).type);
      });
    }
  }
  return Counting as unknown as WebSocketConstructor;
}

/**
 * The largest gap between consecutive times, and where it starts.
 * @example largestGap([0, 5, 40, 45]) // { gap: 35, after: 5 }
 */
export function largestGap(times: readonly number[]): { gap: number; after: number } {
  let best = { gap: 0, after: times[0] ?? 0 };
  for (let i = 1; i < times.length; i++)
    if (times[i]! - times[i - 1]! > best.gap)
      best = { gap: times[i]! - times[i - 1]!, after: times[i - 1]! };
  return best;
}
