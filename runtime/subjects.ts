import { InvalidArgumentError } from './errors.ts';

/**
 * NATS subjects of ftmesh. One place, so that the runtime, the gateway and
 * the tools agree on them.
 *
 * - `ftm.s.<sid>.in`   inputs (requests, each with an id); primary and standby subscribe
 * - `ftm.s.<sid>.out`  committed transactions: reply + piggybacked patches
 * - `ftm.s.<sid>.ack`  standby applied seq n / log holds seq n
 * - `ftm.s.<sid>.ctl.<epoch>` control requests to the session's primary of that epoch (snapshot, flush)
 * - `ftm.s.<sid>.evt`  events the actor emits for its clients (released like replies)
 * - `ftm.s.<sid>.dg.in`, `.dg.out`  datagrams to the primary, and forwarded to clients
 * - `ftm.h.<host>.ctl` control requests to a host (attach a standby, ...)
 * - `ftm.h.<host>.probe` a probe, answered by the host's liveness worker with its incarnation
 * - `ftm.log.<sid>`    durable log of patch batches (JetStream)
 * - `ftm.hb.<host>`    a host's heartbeat (while it holds sessions; watched by the hosts it shares them with)
 * - `$SYS.ACCOUNT.APP.DISCONNECT`  the server's disconnect advisory, imported into the app account
 */
export const subjects = {
  input: (sid: string) => `ftm.s.${sid}.in`,
  output: (sid: string) => `ftm.s.${sid}.out`,
  ack: (sid: string) => `ftm.s.${sid}.ack`,
  control: (sid: string, epoch: number) => `ftm.s.${sid}.ctl.${epoch}`,
  events: (sid: string) => `ftm.s.${sid}.evt`,
  datagramIn: (sid: string) => `ftm.s.${sid}.dg.in`,
  datagramOut: (sid: string) => `ftm.s.${sid}.dg.out`,
  hostControl: (hostId: string) => `ftm.h.${hostId}.ctl`,
  probe: (hostId: string) => `ftm.h.${hostId}.probe`,
  log: (sid: string) => `ftm.log.${sid}`,
  logAll: 'ftm.log.>',
  heartbeat: (hostId: string) => `ftm.hb.${hostId}`,
  heartbeatAll: 'ftm.hb.*',
  disconnectAdvisory: '$SYS.ACCOUNT.APP.DISCONNECT',
} as const;

/** Names of the JetStream stream and buckets the runtime uses. */
export const storeNames = {
  logStream: 'FTM_LOG',
  owners: 'ftm-owners',
  snapshots: 'ftm-snapshots',
  largeSnapshots: 'ftm-snapshots-large',
  hosts: 'ftm-hosts',
} as const;

const idPattern = /^[A-Za-z0-9_-]{1,128}$/;

/**
 * Session and host ids become NATS subject tokens and KV keys, so they are
 * restricted to letters, digits, `_` and `-`.
 * @throws InvalidArgumentError naming the argument and the rule
 */
export function assertId(what: 'sid' | 'hostId', value: unknown): asserts value is string {
  if (typeof value !== 'string' || !idPattern.test(value)) {
    throw new InvalidArgumentError(
      `${what} ${JSON.stringify(value)} is invalid: use 1-128 characters of A-Z, a-z, 0-9, _ or -`,
    );
  }
}
