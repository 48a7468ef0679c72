/**
 * codec: the runtime's value codec (createValueCodec(): msgpackr with
 * structuredClone) against JSON (JSON.stringify + TextEncoder, TextDecoder +
 * JSON.parse) on what ftmesh sends: immer patch lists of small transactions,
 * snapshots of a conference-room state of ~10 KiB, ~100 KiB and ~1 MiB, and a
 * state holding binary values. Reports encoded bytes, encode and decode time
 * per op (p50/p99 in µs), the ratio msgpack/JSON from the same run, and which
 * values survive a round trip.
 *
 * The four timed operations of a workload are interleaved op by op, so drift
 * (GC, JIT, frequency) hits both codecs alike.
 */
import { mulberry32 } from '../runtime/transition.ts';
import { inspect, isDeepStrictEqual } from 'node:util';
import { Immer, enableMapSet, enablePatches, type Patch } from 'immer';
import { createValueCodec, type ValueCodec } from '../runtime/codec.ts';
import { columns, stats, type Stats } from './stats.ts';

/** Options of {@link runCodecBench}. */
export type CodecBenchOptions = { quick: boolean };

/** Latency percentiles in µs per op; same shape as the replication benchmark's. */
export type { Stats };

export type CodecFigures = {
  bytes: number;
  encode_us: Stats;
  decode_us: Stats;
  roundtrip: boolean;
};

export type WorkloadReport = {
  label: string;
  msgpack: CodecFigures;
  json: CodecFigures;
  /** msgpack / JSON: below 1, msgpack is smaller or faster. */
  ratio: {
    bytes: number;
    encode_p50: number;
    encode_p99: number;
    decode_p50: number;
    decode_p99: number;
  };
  note?: string;
};

export type CodecReport = {
  timer_overhead_us: number;
  workloads: Record<string, WorkloadReport>;
  /** Per value kind: 'ok' when it survives, else what came back (or what was thrown). */
  fidelity: Record<string, { msgpack: string; json: string }>;
};

type Stream = {
  id: string;
  kind: 'audio' | 'video' | 'screen';
  codec: string;
  bitrateKbps: number;
  active: boolean;
};
type Participant = {
  id: string;
  name: string;
  role: 'host' | 'speaker' | 'listener';
  joinedAt: number;
  muted: boolean;
  handRaised: boolean;
  video: { on: boolean; width: number; height: number; fps: number };
  network: { rttMs: number; jitterMs: number; lossPct: number };
  reactions: Record<string, number>;
  streams: Stream[];
  publicKey?: Uint8Array;
  avatar?: Uint8Array;
};
type ChatMessage = { id: number; from: string; at: number; text: string };
type Room = {
  id: string;
  title: string;
  startedAt: number;
  txCount: number;
  settings: { locked: boolean; maxParticipants: number; recording: boolean };
  participants: Record<string, Participant>;
  chat: ChatMessage[];
  whiteboard?: Uint8Array[];
};

type Rand = () => number;

/** mulberry32 (the runtime's): the same state every run, so sizes are comparable across runs. */
const seeded = (seed: number): Rand => mulberry32(seed);

const WORDS = 'the a slide demo next agenda can you hear me share screen question thanks great \
latency replica standby primary patch snapshot session room mute unmute ok yes no later'.split(' ');
const EMOJI = ['👍', '👏', '😂', '🎉', '❤️'];

const pick = <T>(rand: Rand, xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
const int = (rand: Rand, lo: number, hi: number) => lo + Math.floor(rand() * (hi - lo + 1));
const words = (rand: Rand, n: number) =>
  Array.from({ length: n }, () => pick(rand, WORDS)).join(' ');
const bytes = (rand: Rand, n: number) => Uint8Array.from({ length: n }, () => int(rand, 0, 255));

function stream(rand: Rand, i: number): Stream {
  const kind = pick(rand, ['audio', 'video', 'screen'] as const);
  return {
    id: `s${i}-${Math.floor(rand() * 1e9).toString(36)}`,
    kind,
    codec: kind === 'audio' ? 'opus' : pick(rand, ['vp8', 'vp9', 'h264', 'av1']),
    bitrateKbps: kind === 'audio' ? int(rand, 24, 64) : int(rand, 300, 2500),
    active: rand() < 0.8,
  };
}

function participant(rand: Rand, i: number, binary: boolean): Participant {
  const p: Participant = {
    id: `p${i}`,
    name: `${words(rand, 1)} ${words(rand, 1)}`.replace(/^./, (c) => c.toUpperCase()),
    role: i === 0 ? 'host' : pick(rand, ['speaker', 'listener', 'listener'] as const),
    joinedAt: 1_700_000_000_000 + int(rand, 0, 3_600_000),
    muted: rand() < 0.6,
    handRaised: rand() < 0.1,
    video: { on: rand() < 0.5, width: 1280, height: 720, fps: 30 },
    network: { rttMs: int(rand, 10, 200), jitterMs: int(rand, 0, 30), lossPct: rand() * 2 },
    reactions: Object.fromEntries(
      EMOJI.filter(() => rand() < 0.4).map((e) => [e, int(rand, 1, 9)]),
    ),
    streams: Array.from({ length: int(rand, 1, 3) }, (_, k) => stream(rand, k)),
  };
  if (binary) {
    p.publicKey = bytes(rand, 32);
    p.avatar = bytes(rand, int(rand, 1024, 2048));
  }
  return p;
}

function chat(rand: Rand, id: number, from: string): ChatMessage {
  return { id, from, at: 1_700_000_000_000 + id * 1_000, text: words(rand, int(rand, 3, 20)) };
}

function room(n: number, binary = false): Room {
  const rand = seeded(n);
  const participants: Record<string, Participant> = {};
  for (let i = 0; i < n; i++) participants[`p${i}`] = participant(rand, i, binary);
  const r: Room = {
    id: 'room-42',
    title: 'Weekly sync',
    startedAt: 1_700_000_000_000,
    txCount: n,
    settings: { locked: false, maxParticipants: 500, recording: false },
    participants,
    chat: Array.from({ length: n * 2 }, (_, i) => chat(rand, i, `p${i % n}`)),
  };
  if (binary) r.whiteboard = Array.from({ length: n * 4 }, () => bytes(rand, int(rand, 64, 512)));
  return r;
}

/** A room of about `target` bytes as measured by `size`: scaled from a small one. */
function roomOfSize(target: number, size: (v: unknown) => number, binary = false): Room {
  const n = Math.max(1, Math.round((8 * target) / size(room(8, binary))));
  return room(n, binary);
}

/** Random small transactions (1–5 patches each) on a room, like session handlers would run. */
function patchLists(count: number): Patch[][] {
  const immer = new Immer({ autoFreeze: true });
  const rand = seeded(7);
  let state = room(12);
  let nextId = 12;
  const out: Patch[][] = [];
  const actions: ((d: Room, p: Participant) => void)[] = [
    (_, p) => void (p.muted = !p.muted),
    (_, p) => void (p.handRaised = !p.handRaised),
    (_, p) => {
      const e = pick(rand, EMOJI);
      p.reactions[e] = (p.reactions[e] ?? 0) + 1;
    },
    (_, p) =>
      void (p.network = {
        rttMs: int(rand, 10, 200),
        jitterMs: int(rand, 0, 30),
        lossPct: rand() * 2,
      }),
    (_, p) => {
      p.network.rttMs = int(rand, 10, 200);
      p.network.jitterMs = int(rand, 0, 30);
      p.network.lossPct = rand() * 2;
    },
    (_, p) => {
      p.video.on = !p.video.on;
      p.video.width = p.video.on ? 1280 : 640;
      p.video.height = p.video.on ? 720 : 360;
    },
    (_, p) => {
      const s = p.streams[0];
      if (s) [s.active, s.bitrateKbps] = [!s.active, int(rand, 300, 2500)];
    },
    (_, p) =>
      void (p.streams.length < 4
        ? p.streams.push(stream(rand, p.streams.length))
        : p.streams.pop()),
    (d, p) => void d.chat.push(chat(rand, d.chat.length, p.id)),
    (d, p) => {
      p.role = p.role === 'speaker' ? 'listener' : 'speaker';
      p.muted = p.role === 'listener';
      d.settings.recording = !d.settings.recording;
    },
    (d) => {
      const ids = Object.keys(d.participants);
      if (ids.length < 20) d.participants[`p${nextId}`] = participant(rand, nextId++, false);
      else delete d.participants[pick(rand, ids.slice(1))];
    },
  ];
  while (out.length < count) {
    const action = pick(rand, actions);
    const who = pick(rand, Object.keys(state.participants));
    const [next, patches] = immer.produceWithPatches(state, (d: Room) => {
      action(d, d.participants[who]!);
      d.txCount += 1;
    });
    if (patches.length < 1 || patches.length > 5)
      throw new Error(`bench bug: a transaction made ${patches.length} patches, want 1–5`);
    out.push(patches);
    state = next;
  }
  return out;
}

/** JSON as a codec: stringify + TextEncoder, TextDecoder + parse; optionally base64 for binary. */
function jsonCodec(base64Binary: boolean): ValueCodec {
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  if (!base64Binary)
    return {
      encode: (v) => encoder.encode(JSON.stringify(v)),
      decode: (b) => JSON.parse(decoder.decode(b)),
    };
  // JSON has no bytes: a JSON codec must write them as text and tag them to restore them.
  const replacer = (_k: string, v: unknown) =>
    v instanceof Uint8Array
      ? { $b64: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64') }
      : v;
  const reviver = (_k: string, v: any) => {
    if (typeof v !== 'object' || v === null || typeof v.$b64 !== 'string') return v;
    const b = Buffer.from(v.$b64 as string, 'base64');
    return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  };
  return {
    encode: (v) => encoder.encode(JSON.stringify(v, replacer)),
    decode: (b) => JSON.parse(decoder.decode(b), reviver),
  };
}

/** Runs each op `n` times, interleaved, rotating which goes first; returns µs samples per op. */
function interleaved(n: number, ops: readonly ((i: number) => unknown)[]): number[][] {
  const out = ops.map(() => [] as number[]);
  let keep: unknown; // results stay observable so no call can be optimised away
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < ops.length; k++) {
      const j = (i + k) % ops.length;
      const t = performance.now();
      keep = ops[j]!(i);
      out[j]!.push((performance.now() - t) * 1000);
    }
  }
  if (keep === Symbol.for('never')) console.log(keep);
  return out;
}

const ratio = (a: number, b: number) => Math.round((a / b) * 100) / 100;

function workload(
  label: string,
  inputs: readonly unknown[],
  json: ValueCodec,
  msgpack: ValueCodec,
  n: number,
  warm: number,
  note?: string,
): WorkloadReport {
  // Decode inputs are copies: msgpackr returns views into one shared buffer it keeps reusing.
  const packed = inputs.map((v) => msgpack.encode(v).slice());
  const texts = inputs.map((v) => json.encode(v).slice());
  const m = inputs.length;
  const ops = [
    (i: number) => msgpack.encode(inputs[i % m]),
    (i: number) => json.encode(inputs[i % m]),
    (i: number) => msgpack.decode(packed[i % m]!),
    (i: number) => json.decode(texts[i % m]!),
  ];
  interleaved(warm, ops);
  const [me, je, md, jd] = interleaved(n, ops).map(stats) as [Stats, Stats, Stats, Stats];
  const mean = (bs: Uint8Array[]) =>
    Math.round((bs.reduce((s, b) => s + b.length, 0) / m) * 10) / 10;
  const same = (c: ValueCodec, bs: Uint8Array[]) =>
    bs.every((b, i) => isDeepStrictEqual(c.decode(b), inputs[i]));
  const mp = {
    bytes: mean(packed),
    encode_us: me,
    decode_us: md,
    roundtrip: same(msgpack, packed),
  };
  const js = { bytes: mean(texts), encode_us: je, decode_us: jd, roundtrip: same(json, texts) };
  return {
    label,
    msgpack: mp,
    json: js,
    ratio: {
      bytes: ratio(mp.bytes, js.bytes),
      encode_p50: ratio(me.p50, je.p50),
      encode_p99: ratio(me.p99, je.p99),
      decode_p50: ratio(md.p50, jd.p50),
      decode_p99: ratio(md.p99, jd.p99),
    },
    ...(note ? { note } : {}),
  };
}

/** Round trips one value per kind through both codecs (JSON here is plain, no replacer). */
function fidelity(msgpack: ValueCodec, json: ValueCodec): CodecReport['fidelity'] {
  const immer = new Immer({ autoFreeze: false });
  const base = { users: new Map<string, object>([['a', { n: 1 }]]), tags: new Set(['x']) };
  const [next, patches] = immer.produceWithPatches(base, (d) => {
    d.users.set('b', { roles: new Set(['speaker']), key: new Uint8Array([1, 2]) });
    d.tags.add('y');
  });
  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic.self = cyclic;
  const cases: Record<string, unknown> = {
    Map: new Map<unknown, unknown>([
      [1, 'a'],
      ['k', { x: 1 }],
    ]),
    Set: new Set([1, 'b']),
    Uint8Array: new Uint8Array([1, 2, 3]),
    Float32Array: new Float32Array([1.5]),
    Date: new Date(0),
    'undefined property': undefined,
    'undefined in array': [1, undefined],
    NaN: NaN,
    '-0': -0,
    BigInt: 2n ** 70n,
    'cyclic reference': cyclic,
  };
  const check = (c: ValueCodec, v: unknown): string => {
    try {
      const back = c.decode(c.encode({ x: v }));
      if (isDeepStrictEqual(back, { x: v })) return 'ok';
      return inspect(back, { depth: 2, breakLength: Infinity }).slice(0, 40);
    } catch (err) {
      return `throws ${(err as Error).name}`;
    }
  };
  const applies = (c: ValueCodec): string => {
    try {
      const back = immer.applyPatches(base, c.decode(c.encode(patches)) as Patch[]);
      return isDeepStrictEqual(back, next) ? 'ok' : 'applied state differs';
    } catch (err) {
      return `throws ${(err as Error).name}`;
    }
  };
  const out: CodecReport['fidelity'] = {};
  for (const [k, v] of Object.entries(cases))
    out[k] = { msgpack: check(msgpack, v), json: check(json, v) };
  out['immer patches, Map/Set state'] = { msgpack: applies(msgpack), json: applies(json) };
  return out;
}

/** Runs the codec benchmark; synchronous (CPU only, no server). */
export function runCodecBench(options: CodecBenchOptions): CodecReport {
  enablePatches();
  enableMapSet();
  const q = options.quick;
  const msgpack = createValueCodec();
  const json = jsonCodec(false);
  const jsonB64 = jsonCodec(true);
  const jsonSize = (v: unknown) => json.encode(v).length;
  const packSize = (v: unknown) => msgpack.encode(v).length;
  const snapshot = (state: Room) => ({ actor: 'room', seq: 123_456, epoch: 3, state });

  const timer = interleaved(q ? 10_000 : 100_000, [() => 0]).map(stats)[0]!;
  const lists = patchLists(2_000);
  const perTx = Math.round((lists.reduce((s, p) => s + p.length, 0) / lists.length) * 10) / 10;
  const workloads: Record<string, WorkloadReport> = {
    patches: workload(
      `patches 1-5/tx (avg ${perTx})`,
      lists,
      json,
      msgpack,
      q ? 5_000 : 50_000,
      q ? 1_000 : 5_000,
      'bytes: mean per transaction over 2000 distinct transactions',
    ),
  };
  const sizes = [
    ['snapshot_10k', 'snapshot ~10 KiB', 10 * 1024, q ? 500 : 5_000],
    ['snapshot_100k', 'snapshot ~100 KiB', 100 * 1024, q ? 100 : 1_000],
    ['snapshot_1m', 'snapshot ~1 MiB', 1024 * 1024, q ? 20 : 200],
  ] as const;
  for (const [key, label, target, n] of sizes) {
    const snap = snapshot(roomOfSize(target, jsonSize));
    workloads[key] = workload(
      label,
      [snap],
      json,
      msgpack,
      n,
      Math.ceil(n / 10),
      'sized by JSON bytes',
    );
  }
  const binary = snapshot(roomOfSize(100 * 1024, packSize, true));
  workloads.binary_100k = workload(
    'binary ~100 KiB',
    [binary],
    jsonB64,
    msgpack,
    q ? 100 : 1_000,
    q ? 30 : 100,
    'JSON writes each Uint8Array as {"$b64": base64} (replacer) and restores it (reviver); ' +
      'plain JSON.stringify would write {"0":n,"1":n,...} and decode a plain object. Sized by msgpack bytes',
  );
  return { timer_overhead_us: timer.p50, workloads, fidelity: fidelity(msgpack, json) };
}

/** The human-readable tables of a {@link CodecReport}. */
export function formatCodecReport(r: CodecReport, quick: boolean): string {
  const f = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  const rows = [
    ['workload', 'codec', 'bytes', 'enc p50', 'enc p99', 'dec p50', 'dec p99', 'n', 'round trip'],
  ];
  const notes: string[] = [];
  for (const w of Object.values(r.workloads)) {
    for (const c of ['msgpack', 'json'] as const) {
      const x = w[c];
      rows.push([
        c === 'msgpack' ? w.label : '',
        c,
        String(x.bytes),
        f(x.encode_us.p50),
        f(x.encode_us.p99),
        f(x.decode_us.p50),
        f(x.decode_us.p99),
        String(x.encode_us.n),
        x.roundtrip ? 'equal' : 'DIFFERS',
      ]);
    }
    const q = w.ratio;
    rows.push([
      '',
      'ratio',
      ...[q.bytes, q.encode_p50, q.encode_p99, q.decode_p50, q.decode_p99].map((x) => x.toFixed(2)),
      '',
      '',
    ]);
    if (w.note) notes.push(`${w.label}: ${w.note}.`);
  }
  const fid = [
    ['round trip of', 'msgpack', 'JSON (plain)'],
    ...Object.entries(r.fidelity).map(([k, v]) => [k, v.msgpack, v.json]),
  ];
  return [
    `codec benchmark${quick ? ' (--quick: indicative only)' : ''}: msgpackr (createValueCodec, structuredClone)`,
    'vs JSON (JSON.stringify + TextEncoder / TextDecoder + JSON.parse); µs per op;',
    `ratio = msgpack / JSON (< 1: msgpack smaller or faster); timer overhead ~${f(r.timer_overhead_us)} µs per sample`,
    '',
    columns(rows, 2),
    '',
    ...notes,
    '',
    columns(fid, 3),
  ].join('\n');
}
