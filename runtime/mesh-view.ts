import type { FailoverRecord } from './failover.ts';
import type { MeshClient } from './mesh-client.ts';

/**
 * The mesh at a glance, read through a mesh client: hosts by their
 * membership records, open sessions by their ownership records with each
 * copy's seq (asked of the hosts), failovers as each new primary recorded
 * them. What `ftmesh status` prints and the gateway's `mesh` frame answers.
 */

/** A host as its membership record shows it. */
export interface HostSummary {
  id: string;
  live: boolean;
  /** How a host that is not live went: leave, heartbeat, advisory, probe (or unknown). */
  downCause?: string;
  primaries: number;
  standbys: number;
  /** Most sessions (primaries + standbys) it takes. */
  capacity: number;
  draining: boolean;
}

/** An open session: its ownership record, and how far each copy is. */
export interface SessionSummary {
  sid: string;
  actor: string;
  primary: string;
  /** Empty while it has none. */
  standby: string;
  epoch: number;
  term: number;
  /** The primary's and the standby's seq; absent when the host did not answer. */
  primarySeq?: number;
  standbySeq?: number;
  /** Commits the standby is behind the primary (primary seq minus standby seq). */
  lag?: number;
}

/** A failover with its steps in ms after its detection. */
export interface FailoverTimeline {
  sid: string;
  from: string;
  to: string;
  cause: string;
  epoch: number;
  /** When it was detected: ms since the epoch, on the new primary's clock. */
  detectedAt: number;
  promotedMs?: number;
  replayedMs?: number;
  firstReplyMs?: number;
  reprotectedMs?: number;
  /** Inputs run again by the new primary. */
  replayed: number;
  /** The new standby; empty when no live host had room. */
  standby?: string;
  /** The trace of the failover, when the host recorded one. */
  traceId?: string;
}

/** Every host the mesh has a record of, live ones first, then by id. */
export function hostSummaries(mesh: MeshClient): HostSummary[] {
  return mesh
    .hosts()
    .map(({ id, view }) => {
      const r = view.record;
      return {
        id,
        live: r.state === 'alive',
        ...(r.state === 'alive' ? {} : { downCause: r.cause ?? 'unknown' }),
        primaries: r.load.primaries,
        standbys: r.load.standbys,
        capacity: r.load.capacity,
        draining: r.load.draining,
      };
    })
    .sort((a, b) => Number(b.live) - Number(a.live) || a.id.localeCompare(b.id));
}

/**
 * Every open session by sid, with the seq of both copies: one status
 * request per live host that holds a copy (a host that does not answer
 * leaves its copies' seqs out).
 */
export async function sessionSummaries(mesh: MeshClient): Promise<SessionSummary[]> {
  const open = mesh
    .sessions()
    .filter(({ record }) => !record.closed)
    .sort((a, b) => a.sid.localeCompare(b.sid));
  const live = new Set(mesh.liveHosts());
  const named = new Set<string>();
  for (const { record } of open)
    for (const h of [record.primary, record.standby]) if (h && live.has(h)) named.add(h);
  /** host → sid → seq of its copy. */
  const seqs = new Map<string, Map<string, number>>();
  await Promise.all(
    [...named].map(async (host) => {
      try {
        const status = await mesh.hostStatus(host);
        seqs.set(host, new Map(status.sessions.map((s) => [s.sid, s.seq])));
      } catch {
        // Not answering (busy, hung, just gone): its copies' seqs are unknown.
      }
    }),
  );
  return open.map(({ sid, record }) => {
    const p = seqs.get(record.primary)?.get(sid);
    const s = record.standby ? seqs.get(record.standby)?.get(sid) : undefined;
    return {
      sid,
      actor: record.actor,
      primary: record.primary,
      standby: record.standby,
      epoch: record.epoch,
      term: record.term,
      ...(p === undefined ? {} : { primarySeq: p }),
      ...(s === undefined ? {} : { standbySeq: s }),
      ...(p === undefined || s === undefined ? {} : { lag: Math.max(0, p - s) }),
    };
  });
}

/** A failover record with its times made relative to its detection (0.1 ms). */
export function failoverTimeline(f: FailoverRecord): FailoverTimeline {
  const since = (t: number | undefined) =>
    t === undefined ? undefined : Math.round((t - f.detectedAt) * 10) / 10;
  const out: FailoverTimeline = {
    sid: f.sid,
    from: f.from,
    to: f.to,
    cause: f.cause,
    epoch: f.epoch,
    detectedAt: Math.round(f.detectedAt),
    replayed: f.replayed,
  };
  const times = {
    promotedMs: since(f.promotedAt),
    replayedMs: since(f.replayedAt),
    firstReplyMs: since(f.firstReplyAt),
    reprotectedMs: since(f.reprotectedAt),
  };
  for (const [k, v] of Object.entries(times)) if (v !== undefined) Object.assign(out, { [k]: v });
  if (f.standby !== undefined) out.standby = f.standby;
  // Empty when the host does not trace (or did not sample this one).
  if (f.traceId) out.traceId = f.traceId;
  return out;
}

/**
 * The failovers every live host recorded as the new primary, oldest first;
 * the hosts that did not answer are named with why.
 */
export async function recentFailovers(
  mesh: MeshClient,
): Promise<{ failovers: FailoverTimeline[]; unanswered: { host: string; error: string }[] }> {
  const unanswered: { host: string; error: string }[] = [];
  const lists = await Promise.all(
    mesh.liveHosts().map(async (host) => {
      try {
        return await mesh.failoversOf(host);
      } catch (err) {
        unanswered.push({ host, error: err instanceof Error ? err.message : String(err) });
        return [];
      }
    }),
  );
  const failovers = lists
    .flat()
    .sort((a, b) => a.detectedAt - b.detectedAt)
    .map(failoverTimeline);
  return { failovers, unanswered };
}
