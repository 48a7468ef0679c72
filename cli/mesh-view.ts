import {
  createClient,
  failoverTimeline,
  hostSummaries,
  recentFailovers,
  sessionSummaries,
  type FailoverRecord,
  type FailoverTimeline,
  type MeshClient,
} from '../runtime/index.ts';
import { firstLine } from './errors.ts';
import { checkNats } from './nats-check.ts';

/**
 * What `status` and `session list` show of the mesh: the runtime's mesh view
 * (runtime/mesh-view.ts, which the gateway's `mesh` frame answers with too)
 * as text and rows. JSON fields are snake_case, as every `--json` output of
 * the CLI.
 */

/** Control requests of the CLI wait this long: a host that does not answer is shown as such. */
const REQUEST_TIMEOUT_MS = 2_000;

/** Connects a mesh client after checking NATS (fails in seconds, with what to do). */
export async function openMesh(nats: string): Promise<MeshClient> {
  await checkNats(nats);
  return createClient({ nats, requestTimeoutMs: REQUEST_TIMEOUT_MS });
}

export interface HostRow {
  id: string;
  live: boolean;
  /** How a host that is not live went: leave, heartbeat, advisory, probe. */
  down_cause?: string;
  primaries: number;
  standbys: number;
  capacity: number;
  draining: boolean;
}

export interface SessionRow {
  sid: string;
  actor: string;
  primary: string;
  standby: string;
  epoch: number;
  term: number;
  /** The primary's and the standby's seq; undefined when the host did not answer. */
  primary_seq?: number;
  standby_seq?: number;
  /** How many commits the standby is behind the primary. */
  lag?: number;
}

/** A failover with its times in ms after the detection. */
export interface FailoverRow {
  sid: string;
  from: string;
  to: string;
  cause: string;
  epoch: number;
  /** When it was detected, ms since the epoch (wall clock of the host). */
  detected_at: number;
  promoted_ms?: number;
  replayed_ms?: number;
  first_reply_ms?: number;
  reprotected_ms?: number;
  replayed: number;
  standby?: string;
  /** The failover's trace id, when the new primary traced it (OTEL_EXPORTER_OTLP_ENDPOINT set). */
  trace_id?: string;
}

/** Every host the mesh has a record of, live ones first. */
export function hostRows(mesh: MeshClient): HostRow[] {
  return hostSummaries(mesh).map((h) => ({
    id: h.id,
    live: h.live,
    ...(h.downCause === undefined ? {} : { down_cause: h.downCause }),
    primaries: h.primaries,
    standbys: h.standbys,
    capacity: h.capacity,
    draining: h.draining,
  }));
}

/** Every open session, with the seq of both copies and the standby's lag. */
export async function sessionRows(mesh: MeshClient): Promise<SessionRow[]> {
  return (await sessionSummaries(mesh)).map((s) => ({
    sid: s.sid,
    actor: s.actor,
    primary: s.primary,
    standby: s.standby,
    epoch: s.epoch,
    term: s.term,
    ...(s.primarySeq === undefined ? {} : { primary_seq: s.primarySeq }),
    ...(s.standbySeq === undefined ? {} : { standby_seq: s.standbySeq }),
    ...(s.lag === undefined ? {} : { lag: s.lag }),
  }));
}

/** A failover record with its times made relative to its detection. */
export function failoverRow(f: FailoverRecord): FailoverRow {
  return toRow(failoverTimeline(f));
}

function toRow(t: FailoverTimeline): FailoverRow {
  const row: FailoverRow = {
    sid: t.sid,
    from: t.from,
    to: t.to,
    cause: t.cause,
    epoch: t.epoch,
    detected_at: t.detectedAt,
    replayed: t.replayed,
  };
  const times = {
    promoted_ms: t.promotedMs,
    replayed_ms: t.replayedMs,
    first_reply_ms: t.firstReplyMs,
    reprotected_ms: t.reprotectedMs,
  };
  for (const [k, v] of Object.entries(times)) if (v !== undefined) Object.assign(row, { [k]: v });
  if (t.standby !== undefined) row.standby = t.standby;
  if (t.traceId) row.trace_id = t.traceId;
  return row;
}

/** The failovers every live host recorded, oldest first; hosts that do not answer are named. */
export async function failoverRows(
  mesh: MeshClient,
): Promise<{ failovers: FailoverRow[]; unanswered: string[] }> {
  const { failovers, unanswered } = await recentFailovers(mesh);
  return {
    failovers: failovers.map(toRow),
    unanswered: unanswered.map(({ host, error }) => `${host} (${firstLine(new Error(error))})`),
  };
}

const ms = (v: number | undefined) => (v === undefined ? '-' : `+${v.toFixed(1)} ms`);

/** `sid old→new cause: detected +0 ms, promoted +X ms, first reply +Y ms, re-protected +Z ms`. */
export function timelineLine(f: FailoverRow): string {
  const steps = [`detected +0 ms`, `promoted ${ms(f.promoted_ms)}`];
  if (f.replayed > 0) steps.push(`replayed ${f.replayed} ${ms(f.replayed_ms)}`);
  steps.push(`first reply ${ms(f.first_reply_ms)}`);
  steps.push(
    f.reprotected_ms === undefined
      ? f.standby === ''
        ? 're-protected: no host had room'
        : 're-protected: not yet'
      : `re-protected ${ms(f.reprotected_ms)}${f.standby ? ` (standby ${f.standby})` : ''}`,
  );
  const trace = f.trace_id ? `; trace ${f.trace_id}` : '';
  return `${f.sid} ${f.from}→${f.to} ${f.cause}: ${steps.join(', ')}${trace}`;
}

/** How long ago a wall-clock time in ms was, roughly: `12 s ago`. */
export function ago(at: number, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - at) / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

/** A text table: columns padded to their widest cell. */
export function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

/** The session table of `status` and `session list`. */
export function sessionTable(rows: readonly SessionRow[]): string {
  if (!rows.length) return '(no open session)';
  const n = (v: number | undefined) => (v === undefined ? '?' : String(v));
  return table(
    ['SESSION', 'ACTOR', 'PRIMARY', 'STANDBY', 'EPOCH', 'SEQ', 'LAG'],
    rows.map((r) => [
      r.sid,
      r.actor,
      r.primary,
      r.standby || '(none)',
      String(r.epoch),
      n(r.primary_seq),
      r.standby ? n(r.lag) : '-',
    ]),
  );
}
