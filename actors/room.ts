import { defineActor } from '../runtime/index.ts';

type Room = { participants: Record<string, { name: string; joinedAt: number }>; said: number };

const isName = (p: unknown) =>
  (typeof p === 'string' && /^[\w -]{1,40}$/.test(p)) ||
  'a name of 1-40 letters, digits, _ - or space';

/**
 * A small conference room: participants join and leave, messages are pushed
 * to everyone as events, and media datagrams are forwarded to the others
 * (by the primary only: datagrams are traffic, not state).
 */
export const room = defineActor<Room>({
  name: 'room',
  initialState: { participants: {}, said: 0 },
  clientHandlers: ['join', 'leave', 'say'],
  messages: {
    join: isName,
    leave: isName,
    say: (p) => (typeof p === 'string' && p.length <= 1000) || 'a text of at most 1000 characters',
  },
  handlers: {
    join(s, name: string, ctx) {
      s.participants[name] = { name, joinedAt: ctx.now() };
      ctx.emit('joined', { name });
      return Object.keys(s.participants).length;
    },
    leave(s, name: string, ctx) {
      if (!s.participants[name]) throw new Error(`${name} is not in the room`);
      delete s.participants[name];
      ctx.emit('left', { name });
      return Object.keys(s.participants).length;
    },
    say(s, text: string, ctx) {
      s.said++;
      ctx.emit('said', { text, n: s.said });
      return s.said;
    },
  },
  datagram(_state, data, ctx) {
    ctx.forward(data);
  },
});
