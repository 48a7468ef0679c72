import type { HostState } from './host-state.ts';
import type { ActorDefinition } from './actor.ts';
import type { ValueCodec } from './codec.ts';
import type { ControlChannel } from './control-channel.ts';
import type { DroppedMessages } from './dropped-messages.ts';
import type { FtmError } from './errors.ts';
import type { FailoverRecord } from './failover.ts';
import type { FailoverTelemetry } from './failover-telemetry.ts';
import type { Membership } from './membership.ts';
import type { Ownership } from './ownership.ts';
import type { Placement } from './placement.ts';
import type { Clock, LogPort, Random, SnapshotPort, Transport } from './ports.ts';
import type { PrimaryOptions, SessionDeps } from './session-types.ts';
import type { SerialQueues } from './serial-queue.ts';
import type { SessionCopies } from './session-copies.ts';
import type { WorkerPool } from './worker-pool.ts';

/**
 * What the parts of a host share: its ports, its records, its copies and
 * their queues. Built once in `host.ts`; each part (replicas, protection,
 * promotion, restore, the coordinator, drain) takes it instead of reaching
 * for module-level state.
 */
export type HostContext = {
  readonly hostId: string;
  readonly transport: Transport;
  readonly codec: ValueCodec;
  readonly clock: Clock;
  readonly random: Random;
  readonly log: LogPort;
  readonly snapshots: SnapshotPort;
  readonly ownership: Ownership;
  readonly membership: Membership;
  readonly placement: Placement;
  readonly copies: SessionCopies;
  /** One queue per session: its actions run one at a time (PROTOCOL.md). */
  readonly queues: SerialQueues;
  readonly control: ControlChannel;
  readonly dropped: DroppedMessages;
  readonly actors: ReadonlyMap<string, ActorDefinition>;
  readonly capacity: number;
  readonly primaryOptions: PrimaryOptions;
  readonly tuning: HostTuning;
  /** The failovers this host took part in as the new primary, oldest first. */
  readonly history: FailoverRecord[];
  /** Traces and metrics of those failovers (failover-telemetry.ts). */
  readonly failoverTelemetry: FailoverTelemetry;
  readonly onError: (err: FtmError) => void;
  readonly trace: (line: string) => void;
  /** Fault injection for tests: drop output frames at this host's standbys. */
  readonly dropAtStandby: ((sid: string, seq: number) => boolean) | undefined;
  /** Mutable host-wide state: closed, draining, not a member (starting, declared dead). */
  readonly state: HostState;
  readonly sessionDeps: SessionDeps;
  poolFor(actor: ActorDefinition): WorkerPool | undefined;
  /** Wakes the log flusher: a primary has frames to log or retransmit. */
  wake: () => void;
  /** Queues a reconcile of `sid` (coalesced): the coordinator decides what to do. */
  reconcile(sid: string): void;
  /** The actor of `sid` asked to end it (`ctx.close()`): its primary here closes it. */
  requestClose(sid: string): void;
};

/** Timings of the control plane; defaults in `host.ts`. */
export type HostTuning = {
  /** Primary and standby must be dead by verdict this long before a restore (default 1,000 ms). */
  restoreGraceMs: number;
  /** A copy attached but not named this long is dropped (default 10,000 ms). */
  unnamedCopyMs: number;
  /** Timeout of control requests between hosts (default 5,000 ms). */
  requestTimeoutMs: number;
  /** A hand-off waits this long for the standby to catch up and take over (default 5,000 ms). */
  handOffTimeoutMs: number;
  /** Whether this host takes over sessions of dead hosts (default true). */
  failover: boolean;
};
