import { defineActor, type TransitionContext } from '../runtime/index.ts';

/** A step of a player's direction: -1, 0 or 1 on each axis. */
export type Step = -1 | 0 | 1;

export interface Player {
  x: number;
  y: number;
  dx: Step;
  dy: Step;
  /** Inputs applied: each acknowledged `input` counts once. */
  inputs: number;
  /** Open connections of this client: it joins with its first and leaves with its last. */
  connections: number;
}

export interface Game {
  /** Ticks run since the room opened; never reset, never run twice. */
  tick: number;
  /** When the tick in progress was due (`ctx.now()` time): the next is due {@link TICK_MS} later. */
  dueAt: number;
  /** Ticks skipped because the room stalled longer than a tick (a failover): never run in a burst. */
  skipped: number;
  /** Whether the tick timer is armed: players are in, and no admin paused the room. */
  running: boolean;
  paused: boolean;
  players: Record<string, Player>;
}

/** 20 Hz. */
export const TICK_MS = 50;
/** The world is a SIZE x SIZE torus: a player leaving one edge comes back on the other. */
export const SIZE = 100;

const wrap = (v: number) => (v + SIZE) % SIZE;
const isStep = (v: unknown): v is Step => v === -1 || v === 0 || v === 1;

/** Arms the tick when the room should run and does not (first join, resume), or disarms it. */
function schedule(s: Game, ctx: TransitionContext): void {
  const run = !s.paused && Object.keys(s.players).length > 0;
  if (run === s.running) return;
  s.running = run;
  if (run) {
    s.dueAt = ctx.now() + TICK_MS;
    ctx.setTimer('tick', TICK_MS, 'tick');
  } else {
    ctx.clearTimer('tick');
  }
}

/**
 * An authoritative game room with a fixed 20 Hz tick. Clients send their
 * direction (`input`); the room moves every player each tick and shows each
 * client the positions (`view`). The tick is a replicated timer: when the
 * primary dies, the promoted standby fires the next tick on time and counts
 * on from the last committed one.
 */
export const game = defineActor<Game>({
  name: 'game',
  initialState: { tick: 0, dueAt: 0, skipped: 0, running: false, paused: false, players: {} },
  clientHandlers: ['input'],
  messages: {
    input: (p) =>
      (typeof p === 'object' &&
        p !== null &&
        isStep((p as Player).dx) &&
        isStep((p as Player).dy)) ||
      '{ dx: -1 | 0 | 1, dy: -1 | 0 | 1 }',
  },
  onJoin(s, { client }, ctx) {
    const known = Object.hasOwn(s.players, client) ? s.players[client] : undefined;
    if (known) known.connections++;
    else {
      // ctx.random() is recorded: a standby replaying this join places the player alike.
      const at = () => Math.floor(ctx.random() * SIZE);
      s.players[client] = { x: at(), y: at(), dx: 0, dy: 0, inputs: 0, connections: 1 };
    }
    schedule(s, ctx);
  },
  onLeave(s, { client }, ctx) {
    const p = Object.hasOwn(s.players, client) ? s.players[client] : undefined;
    if (p && --p.connections === 0) delete s.players[client];
    schedule(s, ctx);
  },
  handlers: {
    /** The sender's own direction (ctx.sender: a client moves only itself); returns the tick it applies at. */
    input(s, { dx, dy }: { dx: Step; dy: Step }, ctx) {
      const p = Object.hasOwn(s.players, ctx.sender) ? s.players[ctx.sender] : undefined;
      if (!p) throw new Error(`${ctx.sender} is not in the room`);
      p.dx = dx;
      p.dy = dy;
      p.inputs++;
      return s.tick + 1;
    },
    /** The timer's handler (internal: a client calling it is refused by the gateway). */
    tick(s, _payload: unknown, ctx) {
      if (!s.running) return;
      s.tick++;
      for (const p of Object.values(s.players)) {
        p.x = wrap(p.x + p.dx);
        p.y = wrap(p.y + p.dy);
      }
      // The next tick on the fixed grid, so that a late timer does not make the room drift;
      // after a stall longer than a tick, the grid starts again from now (missed ticks skipped).
      const now = ctx.now();
      let next = s.dueAt + TICK_MS;
      if (next <= now) {
        s.skipped += Math.floor((now - s.dueAt) / TICK_MS);
        next = now + TICK_MS;
      }
      s.dueAt = next;
      ctx.setTimer('tick', next - now, 'tick');
    },
    /** Admin, from TypeScript: stops the tick (the players stay). */
    pause(s, _payload: unknown, ctx) {
      s.paused = true;
      schedule(s, ctx);
      return s.tick;
    },
    /** Admin, from TypeScript: the tick runs again, counting on. */
    resume(s, _payload: unknown, ctx) {
      s.paused = false;
      schedule(s, ctx);
      return s.tick;
    },
  },
  view: (s, me) => ({
    you: me,
    tick: s.tick,
    paused: s.paused,
    players: Object.fromEntries(
      Object.entries(s.players).map(([id, p]) => [id, { x: p.x, y: p.y }]),
    ),
  }),
});
