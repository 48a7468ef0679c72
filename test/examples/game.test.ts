import { strict as assert } from 'node:assert';
import { game, TICK_MS, type Game, type Step } from '../../actors/index.ts';
import type { RequestError } from '../../gateway/index.ts';
import { until } from '../helpers/until.ts';
import { largestGap, now, useExampleMesh, type ExampleClient } from './example-mesh.ts';

/** What a player's view holds (actors/game.ts `view`). */
type GameView = {
  tick: number;
  paused: boolean;
  players: Record<string, { x: number; y: number }>;
};

const tickOf = (c: ExampleClient) => (c.session.state as GameView | undefined)?.tick ?? -1;

/** The ticks a client saw, in order, with when it saw each. */
const ticksSeen = (c: ExampleClient) =>
  c.states.map((s) => ({ tick: (s.state as GameView).tick, at: s.at }));

/** Each client turns every 100 ms (right, down, left, up); counts the inputs acknowledged. */
function play(clients: readonly ExampleClient[]): {
  acked: Map<string, number>;
  stop: () => Promise<void>;
} {
  const turns: [Step, Step][] = [
    [1, 0],
    [0, 1],
    [-1, 0],
    [0, -1],
  ];
  const acked = new Map(clients.map((c) => [c.id, 0]));
  const pending: Promise<void>[] = [];
  let turn = 0;
  const timer = setInterval(() => {
    const [dx, dy] = turns[turn++ % turns.length]!;
    for (const c of clients)
      pending.push(
        c.session.request<number>('input', { dx, dy }).then(() => {
          acked.set(c.id, acked.get(c.id)! + 1);
        }),
      );
  }, 100);
  return {
    acked,
    async stop() {
      clearInterval(timer);
      await Promise.all(pending);
    },
  };
}

/**
 * The ticks a client saw around a kill: never back (no reset), never more
 * than a few at once (no burst: views may coalesce two commits, never a
 * catch-up run), so the tick went on from where it stopped. Returns the
 * stall (the longest wait for a view after the kill) and the ticks on
 * either side of it.
 */
function checkTicks(
  c: ExampleClient,
  killedAt: number,
): { lastBefore: number; firstAfter: number; gap: number } {
  const seen = ticksSeen(c);
  for (let i = 1; i < seen.length; i++) {
    const step = seen[i]!.tick - seen[i - 1]!.tick;
    assert.ok(step >= 0 && step <= 3, `${c.id}: tick ${seen[i]!.tick} after ${seen[i - 1]!.tick}`);
  }
  const around = seen.filter((s) => s.at > killedAt - 100 && s.at < killedAt + 3_000);
  const stall = largestGap(around.map((s) => s.at));
  const at = around.findIndex((s) => s.at > stall.after);
  return { lastBefore: around[at - 1]!.tick, firstAfter: around[at]!.tick, gap: stall.gap };
}

describe('examples: game room with a 20 Hz tick through SIGKILLs of the primary', function () {
  const m = useExampleMesh();

  it('the tick resumes from where it stopped (no reset, no catch-up burst); inputs applied once; views equal the primary state', async () => {
    await m.startHosts('g1', 'g2', 'g3');
    await m.startGateway();
    const sid = 'game-1';
    const clients: ExampleClient[] = [];
    for (const id of ['ann', 'bob', 'cat']) clients.push(await m.connect(id, sid, 'game'));
    const [ann] = clients as [ExampleClient];
    // Internal handlers are the room's: a client may not tick or pause it.
    for (const name of ['tick', 'pause'])
      await assert.rejects(
        ann.session.request(name),
        (err: RequestError) => err.code === 'not_callable',
      );

    const players = play(clients);
    await until(() => tickOf(ann) >= 20, { message: 'the room ticks' });
    const start = { tick: tickOf(ann), at: now() };
    const killed = m.killPrimary(sid);
    await m.failedOver(sid, killed.host);
    await until(() => clients.every((c) => c.states.some((s) => s.at > killed.at + 1_000)), {
      timeoutMs: 10_000,
      message: 'a second of ticks after the kill',
    });
    await players.stop();
    const end = { tick: tickOf(ann), at: now() };

    const around = clients.map((c) => checkTicks(c, killed.at));
    const { state } = await m.primaryState<Game>(sid);
    const elapsed = (end.at - start.at) / TICK_MS;
    console.log(
      `      tick across the kill of ${killed.host}: ${around[0]!.lastBefore} -> ${around[0]!.firstAfter}, ` +
        `stall ${around[0]!.gap.toFixed(1)} ms at the client, ${state.skipped} ticks skipped; ` +
        `${end.tick - start.tick} ticks in ${(end.at - start.at).toFixed(0)} ms (${elapsed.toFixed(1)} tick times)`,
    );
    // No burst of catch-up ticks: at most the ticks the time allows; and the room did not stall.
    assert.ok(end.tick - start.tick <= elapsed + 2, 'no more ticks than the time allows');
    assert.ok(end.tick - start.tick >= elapsed - state.skipped - 10, 'the room ran at its rate');
    assert.ok(state.skipped < 20, `${state.skipped} ticks skipped: the stall was under a second`);

    // Every acknowledged input applied once.
    for (const c of clients)
      assert.equal(state.players[c.id]!.inputs, players.acked.get(c.id), `${c.id}'s inputs`);
    await m.mesh.request(sid, 'pause');
    await m.viewsSettle<Game>(sid, clients, game.view!);
    for (const c of clients) {
      assert.equal(c.session.reconnects, 0, `${c.id} kept its connection`);
      assert.equal(c.stateFrames, 1, `${c.id} got its view whole once, then patches`);
      assert.deepEqual(c.problems, []);
    }

    // Empty, the room stops: no tick timer armed. The next player starts it again, counting on.
    const paused = (await m.mesh.request(sid, 'resume')) as number;
    await until(() => tickOf(ann) > paused, { message: 'ticking again' });
    for (const c of clients) await c.session.close();
    const primary = m.mesh.owner(sid)!.primary;
    const stopped = (await until(async () => {
      const { state: s } = await m.primaryState<Game>(sid);
      const { meta } = await m.mesh.inspect(primary, sid);
      return !s.running && !meta.timers.some(([key]) => key === 'tick') ? s : undefined;
    }))!;
    assert.deepEqual(stopped.players, {});
    const dan = await m.connect('dan', sid, 'game');
    await until(() => tickOf(dan) > stopped.tick + 2, { message: 'the tick runs for dan' });
    const first = ticksSeen(dan)[0]!.tick;
    assert.ok(
      first >= stopped.tick && first <= stopped.tick + 3,
      `dan's first tick ${first}: counting on from ${stopped.tick}, no reset, no catch-up`,
    );
    m.assertNoErrors();
  });

  it("a client's state view stays equal to the view computed from the primary's state across three kills", async () => {
    await m.startHosts('s1', 's2', 's3');
    await m.startGateway();
    const sid = 'game-sync';
    const clients = [await m.connect('ann', sid, 'game'), await m.connect('bob', sid, 'game')];
    const [ann] = clients as [ExampleClient];
    const players = play(clients);
    const check = async (when: string) => {
      // Paused, the views stand still: each must then equal the view of the primary's state.
      await m.mesh.request(sid, 'pause');
      const state = await m.viewsSettle<Game>(sid, clients, game.view!);
      for (const c of clients) {
        assert.equal(c.session.reconnects, 0, `${when}: ${c.id} kept its connection`);
        assert.equal(c.stateFrames, 1, `${when}: ${c.id} got its view whole once, then patches`);
        assert.deepEqual(c.problems, [], when);
      }
      await m.mesh.request(sid, 'resume');
      return state;
    };
    let hosts = 3;
    for (let kill = 1; kill <= 3; kill++) {
      const from = tickOf(ann);
      await until(() => tickOf(ann) >= from + 10, { message: 'ticks before the kill' });
      const killed = m.killPrimary(sid);
      // A replacement, so that there is always a host for the next standby.
      await m.startHosts(`s${++hosts}`);
      await m.failedOver(sid, killed.host);
      await until(
        () => clients.every((c) => c.states.some((s) => s.at > killed.at && tickOf(c) > from + 15)),
        {
          timeoutMs: 10_000,
          message: `ticks after kill ${kill}`,
        },
      );
      const around = clients.map((c) => checkTicks(c, killed.at));
      const state = await check(`after kill ${kill}`);
      console.log(
        `      kill ${kill} (${killed.host}): tick ${around[0]!.lastBefore} -> ${around[0]!.firstAfter}, ` +
          `stall ${around[0]!.gap.toFixed(1)} ms at the client, ${state.skipped} ticks skipped in all`,
      );
      assert.ok(state.tick > from + 15, 'the tick counts on');
    }
    await players.stop();
    const state = await check('at the end');
    for (const c of clients)
      assert.equal(state.players[c.id]!.inputs, players.acked.get(c.id), `${c.id}'s inputs`);
    m.assertNoErrors();
  });
});
