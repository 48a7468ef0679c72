import { defineActor, type MessageCheck } from '../runtime/index.ts';

export type StreamKind = 'audio' | 'video';

/** One client in the bridge. */
export interface Participant {
  joinedAt: number;
  /** Open connections of this client: it joins with its first and leaves with its last. */
  connections: number;
  audioMuted: boolean;
  videoMuted: boolean;
  /** The streams it publishes, by name. */
  streams: Record<string, StreamKind>;
  /** Its audio level, smoothed over its last reports: 0 (silence) to 100. */
  level: number;
  /** Whose video it asked to see besides the main one. */
  pinned: string | null;
}

/** The bridge's state: the roster, who speaks, and who receives what. */
export interface Conference {
  /** In join order: the first is the moderator. */
  participants: Record<string, Participant>;
  /** Who speaks now, and who spoke before (the dominant speaker watches them). */
  dominant: string | null;
  previous: string | null;
  /**
   * The forwarding table: for each stream (`client/name`), the clients that
   * receive it. Critical state, replicated with every change: a promoted
   * standby forwards the very next datagram by it.
   */
  forwarding: Record<string, string[]>;
}

/** What a stream may be called: it travels in every media datagram's header. */
const streamName = /^[a-z0-9_-]{1,16}$/;
/** A level at which a participant counts as speaking. */
const SPEAKING = 30;
/** How much louder than the dominant speaker a challenger must be: no flapping between two. */
const MARGIN = 10;

// ---- media datagrams: [u8 n][stream name, n ASCII bytes][payload] ---------------------------

/** Wraps a media payload in the bridge's header, which names the sender's stream. */
export function encodeMedia(stream: string, payload: Uint8Array): Uint8Array {
  if (!streamName.test(stream))
    throw new TypeError(`encodeMedia: stream ${JSON.stringify(stream)}: use 1-16 of a-z 0-9 _ -`);
  const out = new Uint8Array(1 + stream.length + payload.length);
  out[0] = stream.length;
  for (let i = 0; i < stream.length; i++) out[1 + i] = stream.charCodeAt(i);
  out.set(payload, 1 + stream.length);
  return out;
}

/** The stream name in a media datagram's header; undefined when it has none. */
function streamOf(data: Uint8Array): string | undefined {
  const n = data[0];
  if (!n || data.length < 1 + n) return undefined;
  return String.fromCharCode(...data.subarray(1, 1 + n));
}

/** The stream a media datagram names and its payload; undefined when it has no valid header. */
export function decodeMedia(data: Uint8Array): { stream: string; payload: Uint8Array } | undefined {
  const stream = streamOf(data);
  return stream === undefined ? undefined : { stream, payload: data.subarray(1 + stream.length) };
}

// ---- the forwarding table --------------------------------------------------------------------

/** Whose video `id` sees as the main one: the dominant speaker's; theirs is the previous speaker's. */
function mainSpeaker(s: Conference, id: string): string | null {
  return s.dominant === id ? s.previous : s.dominant;
}

/** Unmuted audio goes to everyone else; unmuted video to those who watch or pinned its sender. */
function receivers(s: Conference, from: string, kind: StreamKind): string[] {
  const p = s.participants[from]!;
  if (kind === 'audio' ? p.audioMuted : p.videoMuted) return [];
  return Object.keys(s.participants).filter(
    (id) =>
      id !== from &&
      (kind === 'audio' || mainSpeaker(s, id) === from || s.participants[id]!.pinned === from),
  );
}

/**
 * Brings the forwarding table up to date after any change of roster, mute,
 * streams, speaker or pins; entries that did not change are left alone
 * (every assignment is a patch to replicate and a view to resend).
 */
function route(s: Conference): void {
  const live = new Set<string>();
  for (const [from, p] of Object.entries(s.participants))
    for (const [name, kind] of Object.entries(p.streams)) {
      const stream = `${from}/${name}`;
      live.add(stream);
      const to = receivers(s, from, kind);
      const was = s.forwarding[stream];
      if (!was || was.length !== to.length || was.some((id, i) => id !== to[i]))
        s.forwarding[stream] = to;
    }
  for (const stream of Object.keys(s.forwarding))
    if (!live.has(stream)) delete s.forwarding[stream];
}

function participant(s: Conference, id: string): Participant {
  const p = Object.hasOwn(s.participants, id) ? s.participants[id] : undefined;
  if (!p) throw new Error(`${id} is not in the conference`);
  return p;
}

// ---- message checks (run by the gateway before anything reaches the session) ------------------

const clientId = /^[A-Za-z0-9_-]{1,64}$/;
const isObject = (p: unknown): p is Record<string, unknown> =>
  typeof p === 'object' && p !== null && !Array.isArray(p);

const checks: Record<string, MessageCheck> = {
  publish: (p) =>
    (isObject(p) &&
      typeof p.name === 'string' &&
      streamName.test(p.name) &&
      (p.kind === 'audio' || p.kind === 'video')) ||
    '{ name: 1-16 of a-z 0-9 _ -, kind: "audio" | "video" }',
  unpublish: (p) => (typeof p === 'string' && streamName.test(p)) || 'a stream name',
  mute: (p) =>
    (isObject(p) &&
      (typeof p.audio === 'boolean' || typeof p.video === 'boolean') &&
      (p.audio === undefined || typeof p.audio === 'boolean') &&
      (p.video === undefined || typeof p.video === 'boolean')) ||
    '{ audio?: boolean, video?: boolean }, at least one',
  level: (p) => (typeof p === 'number' && p >= 0 && p <= 100) || 'an audio level from 0 to 100',
  pin: (p) => p === null || (typeof p === 'string' && clientId.test(p)) || 'a client id or null',
};

/**
 * A conference bridge in the spirit of the Jitsi videobridge. Participants
 * come and go with their connections; each publishes streams, mutes its
 * audio or video, reports its audio level (the loudest becomes the dominant
 * speaker) and may pin someone. From these the bridge keeps a forwarding
 * table, and its datagram handler forwards each media datagram by it: the
 * dominant speaker's video and all unmuted audio to everyone, a pinned
 * participant's video to whoever pinned them.
 */
export const conference = defineActor<Conference>({
  name: 'conference',
  initialState: { participants: {}, dominant: null, previous: null, forwarding: {} },
  clientHandlers: ['publish', 'unpublish', 'mute', 'level', 'pin', 'end'],
  messages: checks,
  onJoin(s, { client }, ctx) {
    const known = Object.hasOwn(s.participants, client) ? s.participants[client] : undefined;
    if (known) return void known.connections++;
    s.participants[client] = {
      joinedAt: ctx.now(),
      connections: 1,
      audioMuted: false,
      videoMuted: false,
      streams: {},
      level: 0,
      pinned: null,
    };
    route(s);
  },
  onLeave(s, { client }) {
    const p = Object.hasOwn(s.participants, client) ? s.participants[client] : undefined;
    if (!p || --p.connections > 0) return;
    delete s.participants[client];
    if (s.previous === client) s.previous = null;
    if (s.dominant === client) [s.dominant, s.previous] = [s.previous, null];
    for (const other of Object.values(s.participants))
      if (other.pinned === client) other.pinned = null;
    route(s);
  },
  handlers: {
    /** Announces a stream of the sender's; returns its id (`client/name`) in the forwarding table. */
    publish(s, { name, kind }: { name: string; kind: StreamKind }, ctx) {
      participant(s, ctx.sender).streams[name] = kind;
      route(s);
      return `${ctx.sender}/${name}`;
    },
    unpublish(s, name: string, ctx) {
      delete participant(s, ctx.sender).streams[name];
      route(s);
    },
    /** Mutes or unmutes the sender's own audio and video; returns its flags. */
    mute(s, flags: { audio?: boolean; video?: boolean }, ctx) {
      const p = participant(s, ctx.sender);
      if (flags.audio !== undefined) p.audioMuted = flags.audio;
      if (flags.video !== undefined) p.videoMuted = flags.video;
      route(s);
      return { audioMuted: p.audioMuted, videoMuted: p.videoMuted };
    },
    /**
     * The sender's audio level (clients report it a few times a second).
     * It becomes the dominant speaker when it speaks, unmuted, clearly louder
     * than the current one. Returns the dominant speaker.
     */
    level(s, level: number, ctx) {
      const me = participant(s, ctx.sender);
      me.level = Math.round((me.level + level) / 2);
      const current = s.dominant === null ? undefined : s.participants[s.dominant];
      if (
        s.dominant !== ctx.sender &&
        !me.audioMuted &&
        me.level >= SPEAKING &&
        (!current || current.audioMuted || me.level >= current.level + MARGIN)
      ) {
        s.previous = s.dominant;
        s.dominant = ctx.sender;
        route(s);
      }
      return s.dominant;
    },
    /** The sender also receives `id`'s video (null: nobody's but the main speaker's). */
    pin(s, id: string | null, ctx) {
      if (id !== null) participant(s, id);
      participant(s, ctx.sender).pinned = id === ctx.sender ? null : id;
      route(s);
    },
    /** Ends the conference for everyone; the moderator's call only. */
    end(s, _payload: unknown, ctx) {
      const moderator = Object.keys(s.participants)[0];
      if (ctx.sender !== moderator) throw new Error(`only the moderator (${moderator}) may end it`);
      ctx.close();
    },
  },
  view: (s, me) => ({
    you: me,
    moderator: Object.keys(s.participants)[0] ?? null,
    dominantSpeaker: s.dominant,
    participants: Object.fromEntries(
      Object.entries(s.participants).map(([id, p]) => [
        id,
        { audioMuted: p.audioMuted, videoMuted: p.videoMuted, streams: p.streams },
      ]),
    ),
    pinned: Object.hasOwn(s.participants, me) ? s.participants[me]!.pinned : null,
    receiving: Object.keys(s.forwarding)
      .filter((stream) => s.forwarding[stream]!.includes(me))
      .sort(),
  }),
  // Forwarded as received, header and all: receivers read the stream name from it.
  datagram(s, data, ctx) {
    const name = streamOf(data);
    if (name === undefined) return;
    const stream = `${ctx.from}/${name}`;
    const to = Object.hasOwn(s.forwarding, stream) ? s.forwarding[stream]! : [];
    for (const id of to) ctx.forward(data, id);
  },
});
