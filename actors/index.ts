export { counter, ledger } from './counter.ts';
export type { LedgerEntry } from './counter.ts';
export { room } from './room.ts';
export { conference, encodeMedia, decodeMedia } from './conference.ts';
export type { Conference, Participant, StreamKind } from './conference.ts';
export { game, TICK_MS, SIZE } from './game.ts';
export type { Game, Player, Step } from './game.ts';
export { chat, HISTORY } from './chat.ts';
export type { Chat, ChatMessage } from './chat.ts';
import { counter, ledger } from './counter.ts';
import { room } from './room.ts';
import { conference } from './conference.ts';
import { game } from './game.ts';
import { chat } from './chat.ts';

/** Every example actor, for hosts and gateways started from the command line. */
export const exampleActors = [counter, ledger, room, conference, game, chat] as const;
