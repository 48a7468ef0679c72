import { defineActor, type TransitionContext } from '../runtime/index.ts';

/** One message; `author` is the client that sent it, as its token names it. */
export interface ChatMessage {
  /** Its place in the room's order: 1, 2, 3, ... with no gaps. */
  n: number;
  author: string;
  text: string;
  at: number;
}

export interface Chat {
  /** Messages posted so far (the last one's `n`). */
  count: number;
  /** The last {@link HISTORY} messages, by `n`. */
  messages: Record<string, ChatMessage>;
  /** Who is here, with how many connections: present from the first, gone with the last. */
  present: Record<string, number>;
}

/** Messages the room keeps. */
export const HISTORY = 100;

/**
 * A chat room: messages from many clients in one order, each pushed to
 * every client as a `message` event; who is present (from connections
 * opening and closing) in each client's view and as `presence` events. The
 * author of a message is its sender's client id (`ctx.sender`), never a
 * field of the payload, so nobody can post as someone else. The room keeps
 * the last {@link HISTORY} messages; `history(n)` returns those after `n`
 * (what a client that missed events reads, see `last` in its view).
 */
export const chat = defineActor<Chat>({
  name: 'chat',
  initialState: { count: 0, messages: {}, present: {} },
  clientHandlers: ['say', 'whisper', 'history'],
  messages: {
    say: (p) =>
      (typeof p === 'string' && p.length > 0 && p.length <= 2000) ||
      'a text of 1 to 2000 characters',
    whisper: (p) =>
      (typeof p === 'object' &&
        p !== null &&
        typeof (p as { to?: unknown }).to === 'string' &&
        typeof (p as { text?: unknown }).text === 'string') ||
      '{ to: client id, text }',
    history: (p) =>
      p === undefined || (Number.isInteger(p) && (p as number) >= 0) || 'a message number',
    announce: (p) => (typeof p === 'string' && p.length > 0) || 'a text',
  },
  onJoin(s, { client }, ctx) {
    const connections = (s.present[client] ?? 0) + 1;
    s.present[client] = connections;
    if (connections === 1) ctx.emit('presence', { client, present: true });
  },
  onLeave(s, { client, reason }, ctx) {
    const connections = (s.present[client] ?? 1) - 1;
    if (connections > 0) return void (s.present[client] = connections);
    delete s.present[client];
    ctx.emit('presence', { client, present: false, reason });
  },
  handlers: {
    /** Posts a message as the sender; returns its `n`. */
    say(s, text: string, ctx) {
      return post(s, text, ctx);
    },
    /** A private message: only `to` and the sender hear it (an event, not history). */
    whisper(s, { to, text }: { to: string; text: string }, ctx) {
      if (!Object.hasOwn(s.present, to)) throw new Error(`${to} is not here`);
      ctx.emit('whisper', { from: ctx.sender, to, text }, { to: [to, ctx.sender] });
    },
    /** Messages after `n` (default 0) that the room still keeps, in order. */
    history(s, after: number | undefined) {
      const out: ChatMessage[] = [];
      for (let n = Math.max((after ?? 0) + 1, s.count - HISTORY + 1); n <= s.count; n++)
        out.push({ ...s.messages[n]! });
      return out;
    },
    /** Internal (from TypeScript): a notice from the service itself, authored `$host`. */
    announce(s, text: string, ctx) {
      return post(s, text, ctx);
    },
  },
  view: (s, me) => ({ you: me, present: Object.keys(s.present).sort(), last: s.count }),
});

/** Appends a message by the sender, forgets the oldest beyond {@link HISTORY}, tells everyone. */
function post(s: Chat, text: string, ctx: TransitionContext): number {
  const message = { n: ++s.count, author: ctx.sender, text, at: ctx.now() };
  s.messages[message.n] = message;
  delete s.messages[message.n - HISTORY];
  ctx.emit('message', message);
  return message.n;
}
