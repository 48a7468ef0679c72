import { createClient, type FailoverRecord, type MeshClient } from '../runtime/index.ts';
import { firstLine } from './errors.ts';
import { checkNats } from './nats-check.ts';

/**
 * What `status` and `session list` show of the mesh, read through a mesh
 * client: hosts by their membership records, sessions by their ownership
 * records with each copy's seq (asked of primary and standby), failovers as
 * each new primary recorded them. JSON fields are snake_case, as every
 * `--json` output of the CLI.
 */

/** Control requests of the CLI wait this long: a host that does not answer is shown as such. */
const REQUEST_TIMEOUT_MS = 2_000;
/** Sessions inspected at once. */
const INSPECT_CONCURRENCY = 16;

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
}

/** Every host the mesh has a record of, live ones first. */
export function hostRows(mesh: MeshClient): HostRow[] {
  return mesh
    .hosts()
    .map(({ id, view }) => {
      const r = view.record;
      return {
        id,
        live: r.state === 'alive',
        ...(r.state === 'alive' ? {} : { down_cause: r.cause ?? 'unknown' }),
        primaries: r.load.primaries,
        standbys: r.load.standbys,
        capacity: r.load.capacity,
        draining: r.load.draining,
      };
    })
    .sort((a, b) => Number(b.live) - Number(a.live) || a.id.localeCompare(b.id));
}

/** Runs `fn` on every item, `limit` at a time. */
async function eachLimited<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) out[i] = await fn(items[i]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** The seq of a host's copy, or undefined when it does not answer. */
async function seqAt(mesh: MeshClient, host: string, sid: string): Promise<number | undefined> {
  if (!host) return undefined;
  try {
    return (await mesh.inspect(host, sid)).info.seq;
  } catch {
    return undefined;
  }
}

/** Every open session, with the seq of both copies and the standby's lag. */
export async function sessionRows(mesh: MeshClient): Promise<SessionRow[]> {
  const open = mesh
    .sessions()
    .filter(({ record }) => !record.closed)
    .sort((a, b) => a.sid.localeCompare(b.sid));
  return eachLimited(open, INSPECT_CONCURRENCY, async ({ sid, record }) => {
    const [p, s] = await Promise.all([
      seqAt(mesh, record.primary, sid),
      seqAt(mesh, record.standby, sid),
    ]);
    return {
      sid,
      actor: record.actor,
      primary: record.primary,
      standby: record.standby,
      epoch: record.epoch,
      term: record.term,
      ...(p === undefined ? {} : { primary_seq: p }),
      ...(s === undefined ? {} : { standby_seq: s }),
      ...(p === undefined || s === undefined ? {} : { lag: Math.max(0, p - s) }),
    };
  });
}

/** A failover record with its times made relative to its detection. */
export function failoverRow(f: FailoverRecord): FailoverRow {
  const since = (t: number | undefined) =>
    t === undefined ? undefined : Math.round((t - f.detectedAt) * 10) / 10;
  const row: FailoverRow = {
    sid: f.sid,
    from: f.from,
    to: f.to,
    cause: f.cause,
    epoch: f.epoch,
    detected_at: Math.round(f.detectedAt),
    replayed: f.replayed,
  };
  const times = {
    promoted_ms: since(f.promotedAt),
    replayed_ms: since(f.replayedAt),
    first_reply_ms: since(f.firstReplyAt),
    reprotected_ms: since(f.reprotectedAt),
  };
  for (const [k, v] of Object.entries(times)) if (v !== undefined) Object.assign(row, { [k]: v });
  if (f.standby !== undefined) row.standby = f.standby;
  return row;
}

/** The failovers every live host recorded, oldest first; hosts that do not answer are named. */
export async function failoverRows(
  mesh: MeshClient,
): Promise<{ failovers: FailoverRow[]; unanswered: string[] }> {
  const unanswered: string[] = [];
  const lists = await Promise.all(
    mesh.liveHosts().map(async (id) => {
      try {
        return await mesh.failoversOf(id);
      } catch (err) {
        unanswered.push(`${id} (${firstLine(err)})`);
        return [];
      }
    }),
  );
  const failovers = lists
    .flat()
    .sort((a, b) => a.detectedAt - b.detectedAt)
    .map(failoverRow);
  return { failovers, unanswered };
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
  return `${f.sid} ${f.from}→${f.to} ${f.cause}: ${steps.join(', ')}`;
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
