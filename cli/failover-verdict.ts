import type { StreamClient } from './append-stream.ts';
import { checkLedger, type Ledger } from './demo-actors.ts';

/**
 * The verdict of `demo failover`: what the clients were told against the
 * final state, and the failovers as timelines. Pure: the command gathers the
 * facts, this file judges and words them (the `--json` fields are snake_case).
 */

/** One kill and the failover it caused, times in ms after the kill. */
export interface Timeline {
  victim: string;
  to: string;
  cause: string;
  epoch: number;
  detected_ms: number;
  promoted_ms?: number;
  first_reply_ms?: number;
  reprotected_ms?: number;
  /** The longest a client waited between two replies around this kill. */
  max_gap_ms?: number;
  /** The failover's trace id, when the new primary traced it (OTEL_EXPORTER_OTLP_ENDPOINT set). */
  trace_id?: string;
}

/** What the command saw, for {@link judge}. */
export interface Facts {
  actor: string;
  kills: number;
  clients: readonly StreamClient[];
  /** One per failover a kill caused, with the time of its kill. */
  failovers: readonly { timeline: Timeline; killedAt: number }[];
  /** The ledger read at the end; undefined when it could not be read. */
  ledger: Ledger | undefined;
  /** Primary and standby hashed the same at the same seq. */
  stateEqual: boolean;
  /** Children that exited when nobody asked them to. */
  unexpectedExits: readonly string[];
  /** What stopped the run early, if anything. */
  error: string | undefined;
}

export interface Verdict {
  ok: boolean;
  actor: string;
  kills: number;
  failovers: number;
  clients: number;
  acknowledged: number;
  failed_requests: number;
  gap_ms: { p50: number; p99: number; max: number };
  lost: number;
  duplicated: number;
  reconnects: number;
  state_equal: boolean;
  timelines: Timeline[];
  /** The trace id of each failover the hosts traced (empty when tracing was off). */
  trace_ids: string[];
  unexpected_exits?: string[];
  error?: string;
}

/** A failover's gaps are looked for from its kill to this long after it. */
export const GAP_WINDOW_MS = 500;

export const round = (v: number): number => Math.round(v * 10) / 10;

/** Nearest-rank percentile of `values` (0 for none). */
function percentile(values: readonly number[], p: number): number {
  if (!values.length) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/**
 * Each client's longest wait between two replies around a kill: over the
 * pairs of consecutive replies that span any instant from the kill to
 * {@link GAP_WINDOW_MS} after it. (A reply that arrives just after the kill
 * may have been released before it: the wait that follows it counts too.)
 */
export function gapsAround(clients: readonly StreamClient[], killedAt: number): number[] {
  const gaps: number[] = [];
  for (const c of clients) {
    let longest: number | undefined;
    const t = c.replyTimes;
    for (let i = 1; i < t.length; i++) {
      if (t[i]! <= killedAt) continue;
      if (t[i - 1]! >= killedAt + GAP_WINDOW_MS) break;
      longest = Math.max(longest ?? 0, t[i]! - t[i - 1]!);
    }
    if (longest !== undefined) gaps.push(longest);
  }
  return gaps;
}

/** Judges the facts: every guarantee, the gaps, the timelines. */
export function judge(f: Facts): Verdict {
  const gaps: number[] = [];
  const timelines = f.failovers.map(({ timeline, killedAt }) => {
    const around = gapsAround(f.clients, killedAt);
    gaps.push(...around);
    return { ...timeline, max_gap_ms: round(Math.max(0, ...around)) };
  });
  const acked = new Map(f.clients.map((c) => [c.id, c.acked]));
  const { lost, duplicated } = f.ledger
    ? checkLedger(f.ledger, acked)
    : { lost: NaN, duplicated: NaN };
  const sum = (of: (c: StreamClient) => number) => f.clients.reduce((s, c) => s + of(c), 0);
  const reconnects = sum((c) => c.session.reconnects);
  const error = f.error ?? (f.ledger ? undefined : 'the final state could not be read');
  return {
    ok:
      error === undefined &&
      f.unexpectedExits.length === 0 &&
      timelines.length === f.kills &&
      lost === 0 &&
      duplicated === 0 &&
      reconnects === 0 &&
      f.stateEqual,
    actor: f.actor,
    kills: f.kills,
    failovers: timelines.length,
    clients: f.clients.length,
    acknowledged: sum((c) => c.acked.length),
    failed_requests: sum((c) => c.failed),
    gap_ms: {
      p50: round(percentile(gaps, 50)),
      p99: round(percentile(gaps, 99)),
      max: round(Math.max(0, ...gaps)),
    },
    lost,
    duplicated,
    reconnects,
    state_equal: f.stateEqual,
    timelines,
    trace_ids: timelines.flatMap((t) => (t.trace_id ? [t.trace_id] : [])),
    ...(f.unexpectedExits.length ? { unexpected_exits: [...f.unexpectedExits] } : {}),
    ...(error === undefined ? {} : { error }),
  };
}

/** The verdict as a user reads it. */
export function verdictLines(v: Verdict, lastRequestError: string | undefined): string[] {
  const mark = (good: boolean) => (good ? 'ok' : 'BROKEN');
  const ms = (x: number | undefined) => (x === undefined ? '?' : `+${x}`);
  const lines: string[] = [];
  if (v.timelines.length) lines.push('failovers, in ms after each kill:');
  v.timelines.forEach((t, i) =>
    lines.push(
      `  ${i + 1}. ${t.victim}→${t.to} ${t.cause}: detected ${ms(t.detected_ms)}, promoted ${ms(t.promoted_ms)}, ` +
        `first reply ${ms(t.first_reply_ms)}, re-protected ${ms(t.reprotected_ms)}; longest client gap ${t.max_gap_ms} ms` +
        (t.trace_id ? `; trace ${t.trace_id}` : ''),
    ),
  );
  lines.push(
    `verdict: ${v.failovers}/${v.kills} failovers, ${v.acknowledged} appends acknowledged, ${v.failed_requests} failed`,
    `  acknowledged appends lost:        ${v.lost}  ${mark(v.lost === 0)}`,
    `  appends applied twice:            ${v.duplicated}  ${mark(v.duplicated === 0)}`,
    `  client reconnects:                ${v.reconnects}  ${mark(v.reconnects === 0)}`,
    `  primary and standby state equal:  ${v.state_equal ? 'yes' : 'no'}  ${mark(v.state_equal)}`,
    `  longest wait of a client around a kill: p50 ${v.gap_ms.p50} ms, p99 ${v.gap_ms.p99} ms, max ${v.gap_ms.max} ms`,
  );
  if (v.failed_requests) lines.push(`  (last request error: ${lastRequestError})`);
  for (const line of v.unexpected_exits ?? []) lines.push(`  exited unasked: ${line}  BROKEN`);
  if (v.error) lines.push(`  stopped early: ${v.error}  BROKEN`);
  return lines;
}
