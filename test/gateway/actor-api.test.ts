import { strict as assert } from 'node:assert';
import {
  connect,
  createGateway,
  mintToken,
  type Gateway,
  type Session,
} from '../../gateway/index.ts';
import { createClient, defineActor, internalSender, type MeshClient } from '../../runtime/index.ts';
import { collectErrors } from '../helpers/errors.ts';
import { useHosts } from '../helpers/hosts.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { until } from '../helpers/until.ts';

type Arena = {
  players: Record<string, { x: number; joins: number }>;
  log: string[];
};

/** A room using every part of the actor API a client can see. */
const arena = defineActor<Arena>({
  name: 'arena',
  initialState: { players: {}, log: [] },
  clientHandlers: ['move', 'whisper', 'shout', 'quit'],
  handlers: {
    // The payload may name anyone; only the sender moves.
    move(s, p: { who?: string; dx: number }, ctx) {
      const me = s.players[ctx.sender];
      if (!me) throw new Error(`${ctx.sender} has not joined`);
      me.x += p.dx;
      return { who: ctx.sender, x: me.x };
    },
    whisper: (_s, to: string, ctx) => ctx.emit('whisper', { from: ctx.sender }, { to }),
    shout: (_s, _p, ctx) => ctx.emit('shout', { from: ctx.sender }),
    quit: (_s, _p, ctx) => ctx.close(),
    // Internal: an admin's, never a client's.
    reset(s) {
      for (const p of Object.values(s.players)) p.x = 0;
    },
    whoami: (_s, _p, ctx) => ctx.sender,
  },
  onJoin(s, { client }) {
    const p = (s.players[client] ??= { x: 0, joins: 0 });
    p.joins++;
    s.log.push(`join ${client}`);
  },
  onLeave(s, { client, reason }) {
    s.log.push(`leave ${client} ${reason}`);
    delete s.players[client];
  },
  onClose(_s, { reason }, ctx) {
    ctx.emit('bye', { reason });
  },
  view: (s, client) => ({ me: s.players[client] ?? null, count: Object.keys(s.players).length }),
});

/** A view whose root changes kind: an object, then a list, then a number. */
const shifty = defineActor({
  name: 'shifty',
  initialState: { shape: 0 },
  clientHandlers: ['next'],
  handlers: { next: (s) => void (s.shape = (s.shape + 1) % 3) },
  view: (s) => [{ shape: 'object' }, ['list'], 42][s.shape],
});

describe('the actor API through a gateway: sender, hooks, internal handlers, targeted events, views, close', function () {
  this.timeout(30_000);
  const nats = useNatsServer();
  const reported = collectErrors();
  const secret = 'actor-api-test-secret-of-32-bytes!!';
  let gw: Gateway;
  let mesh: MeshClient;
  const sessions: Session[] = [];
  let n = 0;
  // Clients and the gateway go first; then the errors are checked; then the hosts go.
  afterEach(async () => {
    for (const s of sessions.splice(0)) await s.close();
    await gw?.close();
    await mesh?.close();
  });
  afterEach(() => reported.assertNone());
  const host = useHosts(() => nats.url, reported, { actors: [arena, shifty] });

  const join = async (sub: string, sid: string, actor: string | null = 'arena') => {
    const s = await connect([gw.url], {
      token: mintToken({ secret, sub, sid, ...(actor ? { actor } : {}) }),
    });
    sessions.push(s);
    return s;
  };
  /** Each test its own session id: records of the last one are purged, not reused. */
  const nextSid = () => `arena-${++n}`;

  beforeEach(async () => {
    await host('aa');
    await host('ab');
    mesh = await createClient({ nats: nats.url, onError: reported.onError });
    await until(() => mesh.liveHosts().length === 2);
    gw = await createGateway({
      nats: nats.url,
      actors: [arena, shifty],
      auth: { secret },
      udpPort: false,
      onError: reported.onError,
    });
  });

  const stateOf = async (sid: string) => {
    const owner = await mesh.fetchOwner(sid);
    const inspection = await mesh.inspect(owner!.primary, sid);
    return inspection.state as Arena;
  };

  it('a token with an actor claim opens the session once, with a standby, however many clients race', async () => {
    const sid = nextSid();
    const all = await Promise.all(['c1', 'c2', 'c3', 'c4', 'c5'].map((c) => join(c, sid)));
    assert.equal(all.length, 5);
    const owner = await mesh.fetchOwner(sid);
    assert.equal(owner?.actor, 'arena');
    assert.equal(owner?.epoch, 1, 'opened once');
    await until(() => !!mesh.owner(sid)?.standby);
    await until(async () => (await stateOf(sid)).log.length === 5);
    assert.deepEqual(
      (await stateOf(sid)).log.sort(),
      ['c1', 'c2', 'c3', 'c4', 'c5'].map((c) => `join ${c}`),
    );
  });

  it('a token without the claim, or naming an actor the gateway does not serve, gets 4404', async () => {
    for (const actor of [null, 'nobody']) {
      const err = await join('x', nextSid(), actor).then(
        () => assert.fail('welcomed'),
        (e: { closeCode?: number }) => e,
      );
      assert.equal(err.closeCode, 4404, `actor ${actor}`);
    }
  });

  it('the sender is the token subject: a client moves only itself', async () => {
    const sid = nextSid();
    const ann = await join('ann', sid);
    await join('bob', sid);
    assert.deepEqual(await ann.request('move', { who: 'bob', dx: 3 }), { who: 'ann', x: 3 });
    const state = await stateOf(sid);
    assert.equal(state.players.ann!.x, 3);
    assert.equal(state.players.bob!.x, 0);
    // From TypeScript, without a gateway: the host is the sender.
    assert.equal(await mesh.request(sid, 'whoami'), internalSender);
  });

  it('an internal handler is refused by the gateway before anything reaches the session', async () => {
    const sid = nextSid();
    const ann = await join('ann', sid);
    await ann.request('move', { dx: 1 });
    const owner = await mesh.fetchOwner(sid);
    const before = (await mesh.inspect(owner!.primary, sid)).info.seq;
    for (const name of ['reset', 'whoami', '$close', '$state']) {
      const err = await ann.request(name).then(
        () => assert.fail(`${name} answered`),
        (e: { code?: string }) => e,
      );
      assert.equal(err.code, name.startsWith('$') ? 'unknown_message_type' : 'not_callable', name);
    }
    assert.equal((await mesh.inspect(owner!.primary, sid)).info.seq, before, 'no transaction ran');
    assert.equal((await stateOf(sid)).players.ann!.x, 1);
  });

  it('join and leave run once per connection, with why the client left', async () => {
    const sid = nextSid();
    await join('ann', sid);
    const bob = await join('bob', sid);
    await until(async () => (await stateOf(sid)).log.length === 2);
    await bob.close();
    await until(async () => (await stateOf(sid)).log.includes('leave bob closed'));
    const state = await stateOf(sid);
    assert.deepEqual(Object.keys(state.players), ['ann']);
    assert.deepEqual(state.log, ['join ann', 'join bob', 'leave bob closed']);
  });

  it('an event goes to the one client named, or to all', async () => {
    const sid = nextSid();
    const ann = await join('ann', sid);
    const bob = await join('bob', sid);
    const got: Record<string, string[]> = { ann: [], bob: [] };
    for (const [name, s] of [
      ['ann', ann],
      ['bob', bob],
    ] as const)
      s.on('*', (_p, event) => got[name]!.push(event));
    await ann.request('whisper', 'bob');
    await ann.request('shout');
    // Events arrive in commit order: once the shout is in, the whisper would have been.
    await until(() => got.ann!.includes('shout') && got.bob!.includes('shout'));
    assert.deepEqual(got.ann, ['shout']);
    assert.deepEqual(got.bob, ['whisper', 'shout']);
  });

  it("each client holds its own view: the whole on join, then patches equal to the view of the primary's state", async () => {
    const sid = nextSid();
    const ann = await join('ann', sid);
    const bob = await join('bob', sid);
    const changes = { ann: 0, bob: 0 };
    ann.on('state', () => changes.ann++);
    bob.on('state', () => changes.bob++);
    for (let i = 1; i <= 20; i++) await ann.request('move', { dx: 1 });
    await bob.request('move', { dx: -2 });
    const state = await stateOf(sid);
    await until(
      () =>
        JSON.stringify(ann.state) === JSON.stringify(arena.view!(state, 'ann')) &&
        JSON.stringify(bob.state) === JSON.stringify(arena.view!(state, 'bob')),
    );
    assert.deepEqual(ann.state, { me: { x: 20, joins: 1 }, count: 2 });
    assert.deepEqual(bob.state, { me: { x: -2, joins: 1 }, count: 2 });
    assert.ok(changes.ann >= 1, 'ann saw her view change');
    assert.ok(changes.bob >= 1, 'bob saw his view change');
  });

  it('a view whose root changes kind is sent whole again', async () => {
    const c = await join('cy', nextSid(), 'shifty');
    const seen: unknown[] = [];
    c.on('state', (state, how) => seen.push([how, state]));
    await until(() => seen.length === 1);
    for (let i = 0; i < 3; i++) await c.request('next');
    await until(() => seen.length === 4);
    assert.deepEqual(seen, [
      ['state', { shape: 'object' }],
      ['state', ['list']],
      ['state', 42],
      ['state', { shape: 'object' }],
    ]);
  });

  it('ctx.close() runs onClose, closes every client with 4410 and the record', async () => {
    const sid = nextSid();
    const ann = await join('ann', sid);
    const bob = await join('bob', sid);
    const byes: unknown[] = [];
    for (const s of [ann, bob]) s.on('bye', (p) => byes.push(p));
    await ann.request('quit');
    const codes = await Promise.all([ann.closed(), bob.closed()]);
    assert.deepEqual(
      codes.map((e) => e?.closeCode),
      [4410, 4410],
    );
    assert.deepEqual(byes, [{ reason: 'requested' }, { reason: 'requested' }]);
    await until(async () => (await mesh.fetchOwner(sid))?.closed === true);
  });

  it('closeSession from a mesh client runs onClose before the session ends', async () => {
    const sid = nextSid();
    const ann = await join('ann', sid);
    const byes: unknown[] = [];
    ann.on('bye', (p) => byes.push(p));
    await until(() => !!mesh.owner(sid)?.standby);
    await mesh.closeSession(sid);
    assert.equal((await ann.closed())?.closeCode, 4410);
    assert.deepEqual(byes, [{ reason: 'closed' }]);
  });
});
