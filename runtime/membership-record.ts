import { MalformedMessageError } from './errors.ts';

/** How a host was found gone. */
/**
 * How a host was found gone: the server's disconnect advisory, missed
 * heartbeats, its own goodbye, or an unanswered probe of the background sweep.
 */
export type DownCause = 'advisory' | 'heartbeat' | 'leave' | 'probe';

/** What a host reports about its sessions, for placement. */
export type HostLoad = {
  /** Sessions it is primary of, and standby of. */
  primaries: number;
  standbys: number;
  /** Most sessions (primaries + standbys) it takes; 0 for a host that serves nothing. */
  capacity: number;
  /** A draining host takes no new sessions or standbys. */
  draining: boolean;
};

/**
 * A host's membership record, one per host id in the KV bucket `ftm-hosts`.
 * A verdict of death is written here once, by compare-and-swap, and every
 * host reads it from the same place (Orleans' membership table).
 */
export type HostRecord = {
  /** Random per process start: a verdict names the incarnation it condemns. */
  incarnation: string;
  state: 'alive' | 'dead';
  load: HostLoad;
  /** For a dead host: how it was found gone, and who wrote the verdict. */
  cause?: DownCause;
  by?: string;
};

export type HostChange =
  | { type: 'join'; incarnation: string; load: HostLoad }
  | { type: 'report'; incarnation: string; load: HostLoad }
  | { type: 'declare-dead'; incarnation: string; cause: DownCause; by: string }
  | { type: 'leave'; incarnation: string };

export type HostApplied =
  { refused: false; record: HostRecord } | { refused: true; reason: string };

/** Applies `change` to a host's record (undefined: never joined). Pure. */
export function applyHost(r: HostRecord | undefined, c: HostChange): HostApplied {
  const refuse = (reason: string): HostApplied => ({ refused: true, reason });
  if (c.type === 'join') {
    if (r?.state === 'alive') return refuse(`the host is alive as incarnation ${r.incarnation}`);
    return { refused: false, record: { incarnation: c.incarnation, state: 'alive', load: c.load } };
  }
  if (!r) return refuse('the host never joined');
  if (r.state !== 'alive') return refuse(`the host was declared dead (${r.cause ?? 'unknown'})`);
  if (r.incarnation !== c.incarnation)
    return refuse(`the host is incarnation ${r.incarnation}, not ${c.incarnation}`);
  switch (c.type) {
    case 'report':
      return { refused: false, record: { ...r, load: c.load } };
    case 'declare-dead':
      return { refused: false, record: { ...r, state: 'dead', cause: c.cause, by: c.by } };
    case 'leave':
      return { refused: false, record: { ...r, state: 'dead', cause: 'leave', by: '' } };
  }
}

/**
 * Decodes a host record from the store or the watch: untrusted.
 * @throws MalformedMessageError when it is not one
 */
export function parseHostRecord(value: unknown): HostRecord {
  const r = value as Partial<HostRecord> | null;
  const l = r?.load as Partial<HostLoad> | undefined;
  const count = (x: unknown) => typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
  if (
    !r ||
    typeof r !== 'object' ||
    typeof r.incarnation !== 'string' ||
    (r.state !== 'alive' && r.state !== 'dead') ||
    !l ||
    !count(l.primaries) ||
    !count(l.standbys) ||
    !count(l.capacity) ||
    typeof l.draining !== 'boolean' ||
    (r.cause !== undefined && !['advisory', 'heartbeat', 'leave', 'probe'].includes(r.cause))
  )
    throw new MalformedMessageError(`not a host record: ${JSON.stringify(value)?.slice(0, 200)}`);
  return {
    incarnation: r.incarnation,
    state: r.state,
    load: {
      primaries: l.primaries!,
      standbys: l.standbys!,
      capacity: l.capacity!,
      draining: l.draining,
    },
    ...(r.cause ? { cause: r.cause } : {}),
    ...(r.by !== undefined ? { by: String(r.by) } : {}),
  };
}
