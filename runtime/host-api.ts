import type { NatsConnection } from '@nats-io/transport-node';
import type { ActorDefinition } from './actor.ts';
import type { Clock } from './clock.ts';
import type { DrainReport } from './drain.ts';
import type { DroppedMessages } from './dropped-messages.ts';
import type { DurableState } from './durable-state.ts';
import type { FtmError } from './errors.ts';
import type { FailoverRecord } from './failover.ts';
import type { Liveness } from './liveness.ts';
import type { HostStatus, MeshClient, SessionInfo } from './mesh-client.ts';
import type { PhiAccrualOptions } from './phi-accrual.mjs';
import type { KvPort, LogPort, Random, SnapshotPort, Transport } from './ports.ts';
import type { MetaSnapshot } from './session-meta.ts';

/** Options of {@link createHost}. */
export interface HostOptions {
  /** A NATS URL (or comma-separated URLs), or a connection the caller owns. */
  nats: string | NatsConnection;
  /** The actor types this host can run, as primary or standby. */
  actors: readonly ActorDefinition<any>[];
  /** Default: a random id. Letters, digits, `_` and `-`. */
  hostId?: string;
  clock?: Clock;
  /** Called with every error the host handled without throwing (refused frames, handler errors). */
  onError?: (err: FtmError) => void;
  /** JetStream replicas of the log stream and the buckets: 1 for one server, 3 for a cluster. */
  jetstreamReplicas?: number;
  /** A snapshot every this many commits of a session (default 1000); the log is purged up to it. */
  snapshotEvery?: number;
  /** Or once a session's commits since its last snapshot reach this many bytes (default 4 MiB). */
  snapshotEveryBytes?: number;
  /** How often pending log frames of async/standby sessions are flushed (default 10 ms). */
  logFlushIntervalMs?: number;
  /** Unacknowledged commits go out again after this long without a commit (default 20 ms). */
  retransmitAfterMs?: number;
  /** Fault injection for tests: drop output frames at this host's standbys. */
  dropAtStandby?: (sid: string, seq: number) => boolean;
  /**
   * Most sessions (primaries + standbys) this host takes when sessions are
   * placed (default 10,000).
   */
  capacity?: number;
  /** Heartbeat period (default 5 ms). */
  heartbeatIntervalMs?: number;
  /**
   * The shortest silence of a host that raises a suspicion (default 15 ms);
   * the phi-accrual detector waits longer when the host's beats are irregular,
   * and a probe confirms it before the host is declared dead.
   */
  heartbeatTimeoutMs?: number;
  /** The detector's other settings (see phi-accrual.mjs). */
  detector?: PhiAccrualOptions;
  /**
   * A probe unanswered this long confirms a suspicion, at the least (default
   * 10 ms); it grows to 3 times the slowest recent probe round trip (100 ms
   * at most) when the machine answers slowly.
   */
  probeTimeoutMs?: number;
  /** Watch the server's disconnect advisories (default true; needs the $SYS import, see infra/). */
  advisories?: boolean;
  /**
   * Take over, restore and re-protect the sessions of hosts found dead
   * (default true). False leaves that to other hosts: tests of a manual
   * restore use it.
   */
  failover?: boolean;
  /** Primary and standby must be dead by verdict this long before a restore (default 1,000 ms). */
  restoreGraceMs?: number;
  /**
   * A drain's hand-off of one primary waits this long for its standby to
   * catch up and take over, then serves here again (default 5,000 ms).
   */
  handOffTimeoutMs?: number;
  /** A copy attached but not named by the record this long is dropped (default 10,000 ms). */
  unnamedCopyMs?: number;
  /**
   * Called with one line per ownership decision this host makes (promoted,
   * restored and from what, standby named or dropped, fenced, verdicts).
   * Off by default.
   */
  trace?: (line: string) => void;
  /**
   * Lets an operator crash this host's process on request (the control op
   * `crash`, sent by `MeshClient.crashHost` and the gateway's dashboard): the
   * host answers, then SIGKILLs its own process, so that a person can cause a
   * failover and watch it. For development and demos (`ftmesh host
   * --allow-crash`, which `ftmesh dev` passes). Default false: a crash request
   * is refused with CrashNotAllowedError.
   */
  allowCrash?: boolean;
}

/** A process's share of the mesh: many sessions, each as primary or standby. It is a mesh client too. */
export interface Host extends MeshClient {
  readonly id: string;
  /**
   * Opens a new session with this host as primary and `standby` (default:
   * a live partner host with room) as its hot standby; resolves once the
   * standby holds the initial state and the primary takes inputs.
   * @throws SessionExistsError when the session exists anywhere on the mesh
   */
  openSession(
    actor: string,
    sid: string,
    options?: { standby?: string; init?: unknown },
  ): Promise<SessionInfo>;
  /**
   * Planned hand-off (a deploy, a scale-down): moves every primary of this
   * host to its standby and every standby to another host, then takes no new
   * sessions. Bounded by `deadlineMs` (default 30 s).
   */
  drain(deadlineMs?: number): Promise<DrainReport>;
  /** The failovers this host took part in as the new primary, oldest first. */
  failovers(): readonly FailoverRecord[];
  /**
   * Restores a session from its snapshot and log (cold restore, when its
   * primary and standby are gone) and serves it here in the next epoch.
   */
  restoreSession(actor: string, sid: string, options?: { standby?: string }): Promise<SessionInfo>;
  /** Writes a snapshot of a session this host is primary of, purging the log up to it; resolves with its seq. */
  snapshotNow(sid: string): Promise<number>;
  /** Flushes a primary session's pending log frames; resolves with the highest logged seq. */
  flushLog(sid: string): Promise<number>;
  /** Reads a session's durable state (snapshot + log) without serving it. */
  readDurable(actor: string, sid: string): Promise<DurableState>;
  /** This host's copy of the session's state (primary or standby). */
  state(sid: string): unknown;
  /** Canonical hash of this host's copy of the state. */
  hash(sid: string): string;
  /** This host's copy of the session's runtime meta: dedup table, armed timers, pending jobs. */
  meta(sid: string): MetaSnapshot;
  info(sid: string): SessionInfo | undefined;
  /** This host's own status (what `hostStatus` asks another host for). */
  status(): HostStatus;
  /** Stops every session and subscription; closes the connection if the host opened it. Safe twice. */
  close(): Promise<void>;
}

/** The ports a host runs on: NATS in production ({@link createHost}), fakes in the simulator. */
export type HostPorts = {
  transport: Transport;
  ownersKv: KvPort;
  hostsKv: KvPort;
  log: LogPort;
  snapshots: SnapshotPort;
  liveness: Liveness;
  clock: Clock;
  random: Random;
  dropped: DroppedMessages;
  /** Called last by close(): the binding lets go of its connection. */
  release?: () => Promise<void>;
  /**
   * How the binding ends this host's process at once, for a crash request
   * (`HostOptions.allowCrash`): `kill` is called once the answer is sent and
   * must let it reach NATS first. Absent: crash requests are refused.
   */
  crash?: { pid: number; kill: () => void };
};

/** How a host reports an error it handled without throwing, when not told otherwise: one line on stderr. */
export const defaultOnError =
  (hostId: string) =>
  (err: FtmError): void =>
    console.error(
      `[ftmesh ${hostId}] ${err.name}: ${err.message}${err.cause instanceof Error ? ` (${err.cause.message})` : ''}`,
    );
