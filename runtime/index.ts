export { defineActor, isActorDefinition, internalSender } from './actor.ts';
export type {
  ActorDefinition,
  ActorOptions,
  ConsistencyMode,
  EmitOptions,
  Hook,
  LeaveReason,
  ViewFunction,
  DatagramContext,
  DatagramHandler,
  MessageCheck,
  Handler,
  TransitionContext,
} from './actor.ts';
export { defineAdapter } from './adapter.ts';
export type { AdapterOptions } from './adapter.ts';
export { createHost } from './nats-host.ts';
export { startHost } from './host.ts';
export type {
  Host,
  HostOptions,
  HostPorts,
  SessionInfo,
  DrainReport,
  Inspection,
  HostStatus,
} from './host.ts';
export { createClient } from './mesh-client.ts';
export type { MeshClient, ClientOptions, CrashReport } from './mesh-client.ts';
export { failoverTimeline, hostSummaries, recentFailovers, sessionSummaries } from './mesh-view.ts';
export type { FailoverTimeline, HostSummary, SessionSummary } from './mesh-view.ts';
export type { FailoverRecord, FailoverCause } from './failover.ts';
export type { OwnerRecord, OwnerChange } from './ownership-record.ts';
export type { HostRecord, HostLoad, DownCause } from './membership-record.ts';
export { SessionClient } from './session-client.ts';
export type { ReleasedCommit, CommitWatcher } from './session-client.ts';
export { SessionMirror } from './session-mirror.ts';
export { connectNats, natsDefaults } from './nats-connect.ts';
export { stateHash } from './state-hash.ts';
export {
  Attr,
  SpanName,
  Tracing,
  controlPlaneRoots,
  formatTraceparent,
  instrumentationScope,
  isSampled,
  parseTraceparent,
  traceparentOf,
} from './telemetry.ts';
export { failoverTraceBoundMs } from './failover-telemetry.ts';
export type { MetaSnapshot, Effect } from './session-meta.ts';
export { subjects } from './subjects.ts';
export { systemClock } from './clock.ts';
export type { Clock } from './clock.ts';
export type {
  Transport,
  TransportMessage,
  KvPort,
  KvEntry,
  LogPort,
  SnapshotPort,
  Random,
} from './ports.ts';
export {
  FtmError,
  InvalidArgumentError,
  InvalidMessageError,
  CapacityError,
  HandlerError,
  UnknownMessageTypeError,
  UnknownActorError,
  SessionNotFoundError,
  SessionExistsError,
  StaleEpochError,
  CorruptPatchError,
  MalformedFrameError,
  RequestTimeoutError,
  NoResponderError,
  ClosedError,
  KvConflictError,
  LogConflictError,
  MalformedMessageError,
  TelemetryError,
  CrashNotAllowedError,
} from './errors.ts';
export { HostIdInUseError } from './membership.ts';
