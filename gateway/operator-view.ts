import {
  hostSummaries,
  recentFailovers,
  sessionSummaries,
  type CrashReport,
  type FailoverTimeline,
  type HostSummary,
  type MeshClient,
  type SessionSummary,
} from '../runtime/index.ts';
import { GatewayError } from './errors.ts';
import { ErrorCode } from './protocol.ts';

/**
 * What the operator frames `mesh` and `crash` answer (PROTOCOL.md): the
 * runtime's mesh view (runtime/mesh-view.ts) with the failovers this gateway
 * has seen, and the crash of a session's primary on request.
 */

/** A failover as the `mesh` frame shows it: with the crash that caused it, when this gateway asked for it. */
export interface FailoverAnswer extends FailoverTimeline {
  /** When the host was asked to crash, in ms after the detection (negative: before it). */
  crashMs?: number;
}

/** The answer to a `mesh` frame. */
export interface MeshAnswer {
  /** The gateway's clock when it answered (ms since the epoch): ages are `at - detectedAt`. */
  at: number;
  hosts: HostSummary[];
  sessions: SessionSummary[];
  /** The most recent failovers, oldest first. */
  failovers: FailoverAnswer[];
  /** Live hosts that did not say which failovers they recorded, and why. */
  unanswered: { host: string; error: string }[];
}

/** The answer to a `crash` frame, sent just before the host kills itself. */
export interface CrashAnswer {
  sid: string;
  /** The epoch the session was in: the failover makes the next one. */
  epoch: number;
  host: string;
  pid: number;
  /** When the host answered, on its clock. */
  at: number;
}

/** Failovers a `mesh` answer holds at most (the most recent). */
const KEPT_FAILOVERS = 50;
/** Crashes kept to explain failovers. */
const KEPT_CRASHES = 20;
/** A crash explains the failovers of its host detected within this long after it. */
const CRASH_EXPLAINS_MS = 10_000;

const key = (f: FailoverTimeline) => `${f.sid}/${f.epoch}/${f.detectedAt}`;

/**
 * The gateway's operator side of the mesh. It keeps the failovers it has
 * seen (bounded): a host's record of a failover goes with the host, and the
 * dashboard should still draw it after the next kill.
 */
export class OperatorView {
  private readonly failovers = new Map<string, FailoverTimeline>();
  private readonly crashes: CrashReport[] = [];

  constructor(private readonly mesh: MeshClient) {}

  /** Hosts, open sessions with each copy's seq, and recent failovers; asks every live host. */
  async snapshot(now: number): Promise<MeshAnswer> {
    const [sessions, recent] = await Promise.all([
      sessionSummaries(this.mesh),
      recentFailovers(this.mesh),
    ]);
    // Later answers complete a failover (re-protected after the first look).
    for (const f of recent.failovers) this.failovers.set(key(f), f);
    const all = [...this.failovers.values()].sort((a, b) => a.detectedAt - b.detectedAt);
    for (const f of all.splice(0, Math.max(0, all.length - KEPT_FAILOVERS)))
      this.failovers.delete(key(f));
    return {
      at: now,
      hosts: hostSummaries(this.mesh),
      sessions,
      failovers: all.map((f) => this.explained(f)),
      unanswered: recent.unanswered,
    };
  }

  /**
   * Asks the host serving `sid`'s primary to SIGKILL its process. With
   * `epoch`, only while the session is still in it (a second click, or a
   * frame re-sent after a reconnect, does not kill the new primary).
   * @throws GatewayError `unknown_session`, `stale_epoch`; the host's
   * CrashNotAllowedError (`crash_not_allowed`), RequestTimeoutError, NoResponderError
   */
  async crash(sid: string, epoch?: number): Promise<CrashAnswer> {
    let owner = this.mesh.owner(sid);
    if (!owner || owner.closed) owner = await this.mesh.fetchOwner(sid);
    if (!owner || owner.closed)
      throw new GatewayError(`no open session ${sid}`, { code: ErrorCode.unknownSession });
    if (epoch !== undefined && owner.epoch !== epoch)
      throw new GatewayError(
        `session ${sid} is in epoch ${owner.epoch}, not ${epoch}: it failed over already`,
        { code: ErrorCode.staleEpoch },
      );
    const report = await this.mesh.crashHost(owner.primary);
    this.crashes.push(report);
    if (this.crashes.length > KEPT_CRASHES) this.crashes.shift();
    return { sid, epoch: owner.epoch, host: report.host, pid: report.pid, at: report.at };
  }

  private explained(f: FailoverTimeline): FailoverAnswer {
    const crash = this.crashes.findLast(
      (c) => c.host === f.from && c.at <= f.detectedAt && f.detectedAt - c.at < CRASH_EXPLAINS_MS,
    );
    return crash ? { ...f, crashMs: Math.round((crash.at - f.detectedAt) * 10) / 10 } : f;
  }
}
