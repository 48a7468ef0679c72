import type { ValueCodec } from './codec.ts';
import type { FtmError } from './errors.ts';
import type { Clock, Transport } from './ports.ts';
import type { MetaSnapshot } from './session-meta.ts';
import type { SessionTelemetry } from './telemetry.ts';

/** What a replica or a restore needs to start from: a state at a seq, with the runtime's meta. */
export type SessionSnapshot = {
  actor: string;
  state: object;
  seq: number;
  epoch: number;
  meta: MetaSnapshot;
};

/** What every session copy needs from its host. */
export type SessionDeps = {
  transport: Transport;
  codec: ValueCodec;
  clock: Clock;
  onError: (err: FtmError) => void;
  /** A wire message refused (malformed, stale, corrupt): counted, reported at a bounded rate. */
  dropped: (subject: string, err: unknown) => void;
  /**
   * True while the host re-checks its membership after a pause: sessions
   * hold what they would commit or acknowledge (pause-guard.ts).
   */
  suspended: () => boolean;
  /** Tracing and the counters the host's metrics read (telemetry.ts). */
  telemetry: SessionTelemetry;
};

/** Tuning of a primary; the host passes its options down. */
export type PrimaryOptions = {
  /** A snapshot every this many commits (default 1000)... */
  snapshotEvery?: number;
  /** ...or once the commits since the last one reach this many bytes (default 4 MiB). */
  snapshotEveryBytes?: number;
  /** Unacknowledged commits are sent again after this long without a commit (default 20 ms). */
  retransmitAfterMs?: number;
};
