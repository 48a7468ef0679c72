/**
 * gateway: what the gateway adds to a request, how much it carries, and how
 * long client traffic takes to reach a new primary after a crash.
 *
 * Every role is its own process (bench/gateway-roles.ts): a nats-server
 * (infra's launcher, free ports), three hosts, one gateway, an echo
 * responder; this process is the client (the SDK, raw UDP sockets) and holds
 * a capacity-0 host to place sessions and read failover records.
 *
 * 1. Latency, sequential requests of ~100 B: a direct NATS request/reply to
 *    the echo process, then client → gateway → actor → client through the SDK
 *    for an actor of each consistency mode (`async`, `standby`, `durable`).
 * 2. Messages per second through the one gateway (`standby` and `async`),
 *    with a window of outstanding requests.
 * 3. Re-routing after SIGKILL of the primary's host, repeated, each kill on
 *    a fresh mesh (nats-server, three hosts, gateway) with one session: a
 *    `room` getting a UDP datagram every ~1 ms (through the SDK's UDP) that
 *    the primary forwards to a second client, or a `counter` getting `add 1`
 *    every ~1 ms over the WebSocket. Measured from the kill and from the
 *    promotion (the new primary's failover record, `failoversOf(newPrimary)`)
 *    to the first datagram the new primary forwarded (one sent after the
 *    kill) or the first reply it committed (a value above the seq it started
 *    from), as received by the client. A round whose session failed over
 *    before the kill (a live host taken for dead) is repeated and counted.
 *
 * Times are `performance.timeOrigin + performance.now()`, the clock of the
 * runtime's failover records, comparable across the processes of one machine.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { loadavg } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { startNatsServer } from '../infra/index.ts';
import { connect, mintToken, type Session } from '../gateway/index.ts';
import { connectNats, createClient, type FtmError, type MeshClient } from '../runtime/index.ts';
import { ECHO_SUBJECT } from './gateway-actors.ts';
import { stats, timeEach, type Stats } from './stats.ts';

/** Percentiles in ms; NaN (null in JSON) without samples. */
export type { Stats };

export type GatewayReport = {
  load_before: number;
  payload_bytes: number;
  raw_request_reply_ms: Stats;
  async_ms: Stats;
  standby_ms: Stats;
  durable_ms: Stats;
  /** Gateway round trip p50 over the direct NATS request/reply p50, same run. */
  async_ratio_p50: number;
  standby_ratio_p50: number;
  durable_ratio_p50: number;
  throughput: { window: number; standby_msgs_per_s: number; async_msgs_per_s: number };
  reroute: {
    kills: number;
    udp_from_kill_ms: Stats;
    udp_from_promotion_ms: Stats;
    ws_from_kill_ms: Stats;
    ws_from_promotion_ms: Stats;
    detect_from_kill_ms: Stats;
    promotion_from_kill_ms: Stats;
    /** Datagrams sent between the kill and the first one forwarded by the new primary, dropped. */
    udp_dropped: Stats;
    /** The WebSocket never moved: reconnects of the clients during the kill rounds. */
    ws_reconnects: number;
    /** Rounds repeated because the session failed over before the kill (a live host taken for dead). */
    spurious_failovers: number;
    /** How the new primaries took over: advisory, heartbeat, or restore (from the log). */
    causes: Record<string, number>;
    /** Over the whole WebSocket stream: adds no reply carried, and adds applied twice. */
    requests: number;
    lost: number;
    duplicated: number;
  };
};

const REPO_ROOT = fileURLToPath(new URL('../', import.meta.url));
const SECRET = 'gateway-bench-secret-0123456789abcdef';
const now = (): number => performance.timeOrigin + performance.now();
const log = (s: string) => process.stderr.write(`[gateway bench] ${s}\n`);

async function poll<T>(
  fn: () => T | undefined | Promise<T | undefined>,
  timeoutMs: number,
  what: string,
): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (performance.now() >= deadline)
      throw new Error(`gateway bench: timed out waiting for ${what}`);
    await sleep(2);
  }
}

/** A child process of bench/gateway-roles.ts, stopped by its pid. */
class Role {
  private readonly lines: string[] = [];
  private readonly waiters = new Set<() => void>();
  readonly exited: Promise<void>;
  constructor(
    readonly name: string,
    readonly child: ChildProcess,
  ) {
    let partial = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      const parts = (partial + chunk).split('\n');
      partial = parts.pop() ?? '';
      this.lines.push(...parts);
      for (const w of this.waiters) w();
    });
    child.stderr!.resume();
    this.exited = new Promise((r) => child.once('exit', () => r()));
  }
  static start(args: string[], env: Readonly<Record<string, string>> = {}): Role {
    const child = spawn(process.execPath, ['--import', 'tsx', 'bench/gateway-roles.ts', ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, ...env },
      // stdin: a pipe the child watches, so that it exits when this process dies.
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    return new Role(args.slice(0, 2).join(' '), child);
  }
  async ready(timeoutMs = 30_000): Promise<string> {
    const line = () => this.lines.find((l) => l.startsWith('ready'));
    return poll(
      () =>
        line() ??
        new Promise<undefined>((resolve) => {
          const w = () => {
            this.waiters.delete(w);
            resolve(undefined);
          };
          this.waiters.add(w);
          setTimeout(w, 50);
        }),
      timeoutMs,
      `${this.name} ready`,
    );
  }
  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.child.exitCode === null && this.child.signalCode === null && this.child.pid)
      process.kill(this.child.pid, signal);
  }
}

export async function throughput(session: Session, total: number, window: number): Promise<number> {
  let next = 0;
  const t = performance.now();
  const worker = async () => {
    while (next++ < total) await session.request('inc', 'y');
  };
  await Promise.all(Array.from({ length: window }, worker));
  return Math.round(total / ((performance.now() - t) / 1000));
}

/** A nats-server, host processes, a gateway process and a control host (capacity 0) here. */
export type Mesh = {
  url: string;
  control: MeshClient;
  hosts: Map<string, Role>;
  /** The pids of every role process (hosts, gateway, extras). */
  pids: number[];
  /** Connects an SDK session (closed with the mesh). */
  open(sub: string, sid: string, udp?: boolean): Promise<Session>;
  stop(): Promise<void>;
};

/** Starts a mesh; `env` goes to every role process (the tracing-overhead runs set OTEL_* there). */
export async function startMesh(
  hostIds: string[],
  extra: string[][] = [],
  env: Readonly<Record<string, string>> = {},
): Promise<Mesh> {
  const server = await startNatsServer();
  const roles: Role[] = [];
  const sessions: Session[] = [];
  let control: MeshClient | undefined;
  const stop = async () => {
    for (const s of sessions) await s.close().catch(() => undefined);
    await control?.close().catch(() => undefined);
    for (const r of roles) r.kill();
    await Promise.all(roles.map((r) => r.exited));
    await server.stop();
  };
  try {
    const hosts = new Map(
      hostIds.map((id) => [id, Role.start(['host', '--nats', server.url, '--id', id], env)]),
    );
    const gw = Role.start(
      ['gateway', '--nats', server.url, '--id', 'gb-gw', '--secret', SECRET],
      env,
    );
    roles.push(
      ...hosts.values(),
      gw,
      ...extra.map((args) => Role.start([...args, '--nats', server.url])),
    );
    const url = (await gw.ready()).split(' ')[3]!;
    await Promise.all(roles.map((r) => r.ready()));
    const c = await createClient({
      nats: server.url,
      onError: (err: FtmError) => console.error(`control: ${err.name}: ${err.message}`),
    });
    control = c;
    await poll(
      () => (hostIds.every((h) => c.liveHosts().includes(h)) ? true : undefined),
      10_000,
      'hosts heard',
    );
    return {
      url: server.url,
      control: c,
      hosts,
      pids: roles.flatMap((r) => (r.child.pid === undefined ? [] : [r.child.pid])),
      async open(sub, sid, udp = false) {
        const s = await connect(url, { token: mintToken({ secret: SECRET, sub, sid }), udp });
        sessions.push(s);
        return s;
      },
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** One kill: when the client saw the new primary's traffic, from the kill and from the promotion. */
type KillFigures = {
  /** How the new primary took over (advisory, heartbeat; restore: from the log, no standby). */
  cause: string;
  fromKill: number;
  fromPromotion: number;
  detect: number;
  promote: number;
  /** Datagrams dropped (UDP), or requests sent (WebSocket). */
  count: number;
  lost: number;
  duplicated: number;
  reconnects: number;
};

const sentAtOf = (p: Uint8Array) => new DataView(p.buffer, p.byteOffset).getFloat64(4);
const seqOf = (p: Uint8Array) => new DataView(p.buffer, p.byteOffset).getUint32(0);

/**
 * A fresh mesh (three hosts: primary, standby, one for the new standby) and
 * one session on it: `room` with a UDP datagram every ~1 ms that the primary
 * forwards to a second client, or `counter` with `add 1` every ~1 ms over the
 * WebSocket; then SIGKILL of the primary's host. One session per round: two
 * sessions failing over in one process queue behind each other.
 */
async function killRound(kind: 'udp' | 'ws', k: number): Promise<KillFigures | undefined> {
  const mesh = await startMesh(['gk1', 'gk2', 'gk3']);
  const c = mesh.control;
  const sid = `gb-${kind}`;
  try {
    await c.placeSession(kind === 'udp' ? 'room' : 'counter', sid, {
      primary: 'gk1',
      standby: 'gk2',
    });
    // Datagrams by UDP through the SDK; requests over the WebSocket.
    const sender = await mesh.open('sender', sid, kind === 'udp');
    const receiver = kind === 'udp' ? await mesh.open('receiver', sid, true) : undefined;
    const received: { payload: Uint8Array; at: number }[] = [];
    receiver?.onDatagram((payload) => received.push({ payload, at: now() }));
    const replies: { value: number; at: number; index: number }[] = [];
    const failures: string[] = [];
    const inflight = new Set<Promise<unknown>>();
    let sent = 0;
    const ticker = setInterval(() => {
      if (kind === 'udp') {
        const d = new DataView(new ArrayBuffer(12));
        d.setUint32(0, sent++);
        d.setFloat64(4, now());
        sender.sendDatagram(new Uint8Array(d.buffer));
        return;
      }
      const index = sent++;
      const p = sender.request('add', 1).then(
        (v) => void replies.push({ value: v as number, at: now(), index }),
        (err: Error) => void failures.push(`#${index} ${err.name}: ${err.message}`),
      );
      inflight.add(p);
      void p.then(() => inflight.delete(p));
    }, 1);
    let figures: Pick<KillFigures, 'fromKill' | 'fromPromotion' | 'detect' | 'promote'>;
    let dropped = 0;
    let killedAt = 0;
    let cause = '';
    try {
      const seen = kind === 'udp' ? received : replies;
      await poll(() => (seen.length > 100 ? true : undefined), 10_000, 'traffic before the kill');
      const owner = c.owner(sid);
      // A live primary taken for dead under load (a spurious failover): this round measures nothing.
      if (owner?.primary !== 'gk1' || owner.epoch !== 1) return undefined;
      killedAt = now();
      mesh.hosts.get('gk1')!.kill();
      const lastBefore = received.at(-1);
      const record = await poll(
        async () => {
          const owner = c.owner(sid);
          if (!owner || owner.primary === 'gk1') return undefined;
          return (await c.failoversOf(owner.primary)).find((f) => f.sid === sid && f.epoch === 2);
        },
        10_000,
        'the failover record',
      );
      // The view lags under load: a failover before the kill shows in its record.
      if (record.promotedAt! < killedAt || record.from !== 'gk1') return undefined;
      cause = record.cause;
      // A datagram sent after the kill, or a reply above the seq the new primary started from:
      // only the new primary can have forwarded or committed it.
      const first = await poll(
        () =>
          kind === 'udp'
            ? received.find((d) => sentAtOf(d.payload) > killedAt)
            : replies.find((r) => r.value > record.seq && r.at > killedAt),
        10_000,
        'traffic through the new primary',
      );
      if (kind === 'udp' && lastBefore && 'payload' in first)
        dropped = Math.max(0, seqOf(first.payload) - seqOf(lastBefore.payload) - 1);
      figures = {
        fromKill: first.at - killedAt,
        fromPromotion: first.at - record.promotedAt!,
        detect: record.detectedAt - killedAt,
        promote: record.promotedAt! - killedAt,
      };
      // A little more traffic after the failover, then stop and count.
      await sleep(100);
    } finally {
      clearInterval(ticker);
    }
    await Promise.all([...inflight]);
    let lost = 0;
    let duplicated = 0;
    if (kind === 'ws') {
      const times = new Map<number, number>();
      for (const r of replies) times.set(r.value, (times.get(r.value) ?? 0) + 1);
      for (let v = 1; v <= sent; v++) if (!times.has(v)) lost++;
      duplicated = [...times.values()].filter((x) => x > 1).length;
      if (lost || duplicated || failures.length) {
        const twice = replies.filter((r) => times.get(r.value)! > 1);
        log(
          `kill ${k} (ws) anomaly: ${lost} lost, ${duplicated} duplicated; failed requests: ` +
            `${failures.join('; ') || 'none'}; replies sharing a value: ` +
            twice.map((r) => `#${r.index}=${r.value}@${(r.at - killedAt).toFixed(0)}ms`).join(' '),
        );
      }
    }
    log(
      `kill ${k} (${kind}): first ${kind === 'udp' ? 'datagram' : 'reply'} through the new primary ` +
        `${figures.fromKill.toFixed(1)} ms after the kill, ${figures.fromPromotion.toFixed(1)} ms after the promotion`,
    );
    return {
      ...figures,
      cause,
      count: kind === 'udp' ? dropped : sent,
      lost,
      duplicated,
      reconnects: sender.reconnects + (receiver?.reconnects ?? 0),
    };
  } finally {
    await mesh.stop();
  }
}

/** Runs the benchmark and returns its figures (progress goes to stderr). */
export async function runGatewayBench(quick: boolean): Promise<GatewayReport> {
  const load = loadavg()[0]!;
  // ---- 1. latency and 2. throughput: one mesh --------------------------------------------
  const mesh = await startMesh(['gb1', 'gb2'], [['echo']]);
  const payload = new Uint8Array(100);
  let raw: Stats;
  const modes: Record<string, Stats> = {};
  const window = 256;
  let standbyRate: number;
  let asyncRate: number;
  try {
    const n = quick ? 1_000 : 10_000;
    const warm = quick ? 300 : 2_000;
    const rounds = 5;
    const nc = await connectNats(mesh.url);
    const tag = 'x'.repeat(90); // ~100 B request frames, like the direct request
    const bySession: Record<string, Session> = {};
    const samples: Record<string, number[]> = { raw: [], async: [], standby: [], durable: [] };
    try {
      for (const mode of ['async', 'standby', 'durable'] as const) {
        const sid = `gb-${mode}`;
        await mesh.control.placeSession(`gw-bench-${mode}`, sid, {
          primary: 'gb1',
          standby: 'gb2',
        });
        bySession[mode] = await mesh.open(`lat-${mode}`, sid);
        await timeEach(warm, () => bySession[mode]!.request('inc', tag));
      }
      await timeEach(warm, () => nc.request(ECHO_SUBJECT, payload));
      // Interleaved rounds, so that a slow spell of the machine hits every figure alike.
      for (let r = 0; r < rounds; r++) {
        samples.raw!.push(...(await timeEach(n / rounds, () => nc.request(ECHO_SUBJECT, payload))));
        for (const mode of ['async', 'standby', 'durable'] as const)
          samples[mode]!.push(
            ...(await timeEach(n / rounds, () => bySession[mode]!.request('inc', tag))),
          );
      }
    } finally {
      await nc.close();
    }
    raw = stats(samples.raw!);
    log(`direct NATS request/reply: p50 ${raw.p50} ms, p99 ${raw.p99} ms`);
    for (const mode of ['async', 'standby', 'durable'] as const) {
      modes[mode] = stats(samples[mode]!);
      log(`${mode}: p50 ${modes[mode].p50} ms, p99 ${modes[mode].p99} ms`);
    }
    const total = quick ? 10_000 : 50_000;
    standbyRate = await throughput(bySession.standby!, total, window);
    asyncRate = await throughput(bySession.async!, total, window);
    log(`throughput: standby ${standbyRate}/s, async ${asyncRate}/s (window ${window})`);
  } finally {
    await mesh.stop();
  }

  // ---- 3. re-routing after a kill: a fresh mesh per kill ------------------------------------
  const kills = quick ? 3 : 10;
  const udp: KillFigures[] = [];
  const ws: KillFigures[] = [];
  let spurious = 0;
  for (let k = 1; k <= kills; k++) {
    for (const [kind, into] of [
      ['udp', udp],
      ['ws', ws],
    ] as const) {
      for (let attempt = 0; ; attempt++) {
        const figures = await killRound(kind, k);
        if (figures) {
          into.push(figures);
          break;
        }
        spurious++;
        log(`kill ${k} (${kind}): a spurious failover before the kill; round repeated`);
        if (attempt >= 2) throw new Error('gateway bench: spurious failovers in every attempt');
      }
    }
  }
  type Figure = Exclude<keyof KillFigures, 'cause'>;
  const col = (rounds: KillFigures[], key: Figure) => rounds.map((r) => r[key]);
  const causes: Record<string, number> = {};
  for (const r of [...udp, ...ws]) causes[r.cause] = (causes[r.cause] ?? 0) + 1;
  const sum = (rounds: KillFigures[], key: Figure) => col(rounds, key).reduce((a, b) => a + b, 0);
  const ratio = (m: Stats) => Math.round((m.p50 / raw.p50) * 100) / 100;
  return {
    load_before: Math.round(load * 100) / 100,
    payload_bytes: payload.length,
    raw_request_reply_ms: raw,
    async_ms: modes.async!,
    standby_ms: modes.standby!,
    durable_ms: modes.durable!,
    async_ratio_p50: ratio(modes.async!),
    standby_ratio_p50: ratio(modes.standby!),
    durable_ratio_p50: ratio(modes.durable!),
    throughput: { window, standby_msgs_per_s: standbyRate, async_msgs_per_s: asyncRate },
    reroute: {
      kills,
      udp_from_kill_ms: stats(col(udp, 'fromKill')),
      udp_from_promotion_ms: stats(col(udp, 'fromPromotion')),
      ws_from_kill_ms: stats(col(ws, 'fromKill')),
      ws_from_promotion_ms: stats(col(ws, 'fromPromotion')),
      detect_from_kill_ms: stats([...col(udp, 'detect'), ...col(ws, 'detect')]),
      promotion_from_kill_ms: stats([...col(udp, 'promote'), ...col(ws, 'promote')]),
      udp_dropped: stats(col(udp, 'count')),
      ws_reconnects: sum(ws, 'reconnects') + sum(udp, 'reconnects'),
      spurious_failovers: spurious,
      causes,
      requests: sum(ws, 'count'),
      lost: sum(ws, 'lost'),
      duplicated: sum(ws, 'duplicated'),
    },
  };
}

const f = (s: Stats) =>
  `p50 ${s.p50.toFixed(3)}  p99 ${s.p99.toFixed(3)}  max ${s.max.toFixed(3)}  (n ${s.n})`;

/** The report as a table. */
export function formatGatewayReport(r: GatewayReport): string {
  const rr = r.reroute;
  return [
    `gateway benchmark (load average before: ${r.load_before}; ~${r.payload_bytes} B requests; every role its own process)`,
    '',
    'round trip, ms                                   ',
    `  direct NATS request/reply      ${f(r.raw_request_reply_ms)}`,
    `  client→gateway→actor, async    ${f(r.async_ms)}   x${r.async_ratio_p50} p50`,
    `  client→gateway→actor, standby  ${f(r.standby_ms)}   x${r.standby_ratio_p50} p50`,
    `  client→gateway→actor, durable  ${f(r.durable_ms)}   x${r.durable_ratio_p50} p50`,
    '',
    `through one gateway (window ${r.throughput.window}): standby ${r.throughput.standby_msgs_per_s} msg/s, async ${r.throughput.async_msgs_per_s} msg/s`,
    '',
    `re-routing after SIGKILL of the primary's host (${rr.kills} kills, a fresh mesh each), ms   (FTMesh paper: UDP 50.43 ms average)`,
    `  UDP, from the kill             ${f(rr.udp_from_kill_ms)}`,
    `  UDP, from the promotion        ${f(rr.udp_from_promotion_ms)}`,
    `  WebSocket, from the kill       ${f(rr.ws_from_kill_ms)}`,
    `  WebSocket, from the promotion  ${f(rr.ws_from_promotion_ms)}`,
    `  detected, from the kill        ${f(rr.detect_from_kill_ms)}`,
    `  promoted, from the kill        ${f(rr.promotion_from_kill_ms)}`,
    `  datagrams dropped per kill     ${f(rr.udp_dropped)}`,
    `  WebSocket stream: ${rr.requests} requests, lost ${rr.lost}, duplicated ${rr.duplicated}; ` +
      `client reconnects ${rr.ws_reconnects}; rounds repeated after a spurious failover ${rr.spurious_failovers}`,
    `  failover causes: ${JSON.stringify(rr.causes)}`,
  ].join('\n');
}

/**
 * `npm run bench -- gateway [--quick] [--json]`: prints the table, or with
 * `--json` one JSON object as the last line.
 */
export async function gatewayBench(args: { quick: boolean; json: boolean }): Promise<void> {
  const report = await runGatewayBench(args.quick);
  if (args.json) console.log(JSON.stringify({ bench: 'gateway', quick: args.quick, ...report }));
  else console.log(formatGatewayReport(report));
}
