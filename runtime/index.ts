export { defineActor } from './actor.ts';
export type {
  ActorDefinition,
  ActorOptions,
  ConsistencyMode,
  DatagramContext,
  DatagramHandler,
  MessageCheck,
  Handler,
  TransitionContext,
} from './actor.ts';
export { defineAdapter } from './adapter.ts';
export type { AdapterOptions } from './adapter.ts';
export { createHost } from './host.ts';
export type { Host, HostOptions, SessionInfo, DrainReport, Inspection } from './host.ts';
export type { FailoverRecord, FailoverCause } from './failover.ts';
export type { OwnerRecord } from './ownership.ts';
export { SessionClient } from './session-client.ts';
export { connectNats, natsDefaults } from './nats-connect.ts';
export { stateHash } from './state-hash.ts';
export type { MetaSnapshot, Effect } from './session-meta.ts';
export { subjects } from './subjects.ts';
export { systemClock } from './clock.ts';
export type { Clock } from './clock.ts';
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
} from './errors.ts';
