import type { ValueCodec } from './codec.ts';
import { compareAndSwap } from './compare-and-swap.ts';
import { FtmError, InvalidArgumentError, NoResponderError } from './errors.ts';
import type { Clock, KvPort, Random, Transport } from './ports.ts';
import {
  applyHost,
  parseHostRecord,
  type DownCause,
  type HostChange,
  type HostLoad,
  type HostRecord,
} from './membership-record.ts';
import { subjects } from './subjects.ts';
import { rendezvous } from './failover.ts';
import { backoffMs, retryPolicies, sleep } from './retry.ts';
import type { DroppedMessages } from './dropped-messages.ts';

export type { DownCause, HostLoad, HostRecord };

/** A host as this host's view holds it. */
export type HostView = {
  record: HostRecord;
  revision: number;
  /** When this host first saw the record in its current state (its clock). */
  since: number;
};

/** The NATS connection names of a host: the advisories name the client, this maps it back. */
export const connectionName = (hostId: string) => `ftm-host-${hostId}`;
export const livenessConnectionName = (hostId: string) => `ftm-live-${hostId}`;
const namePattern = /^ftm-(?:host|live)-([A-Za-z0-9_-]{1,128})$/;

export type MembershipDeps = {
  kv: KvPort;
  transport: Transport;
  codec: ValueCodec;
  clock: Clock;
  random: Random;
  dropped: DroppedMessages;
  onError: (err: FtmError) => void;
  trace: (line: string) => void;
};

export type MembershipOptions = {
  /** Watch the server's disconnect advisories (default true; needs the $SYS import, see infra/). */
  advisories?: boolean;
  /**
   * A probe unanswered this long confirms a suspicion, at the least (default
   * 10 ms: on this 2-core VM, an idle host's threads were seen stalled for
   * 20 ms, so no verdict comes before 25 ms of silence). The timeout grows with the round trips of recent probes (3 times
   * the longest of the last 16, at most 100 ms): on a machine so busy that a
   * live host answers late, a late answer is not a death. The liveness
   * worker sends its probe early in a silence, so the wait mostly overlaps
   * the detector's own.
   */
  probeTimeoutMs?: number;
  /** A host that does not watch the advisory's host waits this long before it confirms (default 200 ms). */
  advisoryBackupMs?: number;
};

/** A suspicion's probe waits this long at most, however slow recent probes were. */
const maxProbeTimeoutMs = 100;
/** Round trips of answered probes kept for {@link Membership.probeTimeoutMs}. */
const rttWindow = 16;

/** Another process runs with this host id. */
export class HostIdInUseError extends FtmError {
  override name = 'HostIdInUseError';
  override readonly code = 'host_id_in_use';
}

/**
 * Which hosts are alive, by verdict: the membership records (KV
 * `ftm-hosts`), one per host id, changed only by compare-and-swap through
 * the pure {@link applyHost}. A host joins with a fresh incarnation, reports
 * its load, and leaves; any host may declare another dead, but only after
 * confirming its suspicion with a probe, and the verdict is written once.
 * Every host acts on the record, never on its own suspicion; the host that
 * reads its own death stops serving (PROTOCOL.md, "Detection and verdicts").
 */
export class Membership {
  readonly hosts = new Map<string, HostView>();
  incarnation: string;
  /** A host's record changed (joined, load, verdict). */
  onChange: ((host: string) => void) | undefined;
  /** This host's own verdict: it must stop serving at once. */
  onSelfDead: (() => void) | undefined;
  /** Suspicions a probe answered: a live host taken for silent. */
  falseSuspicions = 0;
  /**
   * Told of each of them: `host` suspected (`cause`) at `at`, probed at
   * `probedAt`, answered by `answeredAt` (failover-telemetry.ts traces it).
   */
  onFalseSuspicion:
    | ((host: string, cause: DownCause, at: number, probedAt: number, answeredAt: number) => void)
    | undefined;
  /** The probe timeout changed (a new round trip sample): the liveness worker's early probes use it. */
  onProbeTimeout: ((ms: number) => void) | undefined;
  private readonly confirming = new Set<string>();
  /** When each host was first suspected (since it was last seen alive): a failover's detection time. */
  private readonly suspected = new Map<string, number>();
  private stopWatch: (() => void) | undefined;
  private sweepTimer: unknown;
  private stopped = false;
  private advisories: { unsubscribe(): void } | undefined;
  private started = 0;
  private lastLoad: string | undefined;
  private loadTimer: unknown;
  /** Round trips of the latest answered probes, ms (at most {@link rttWindow}). */
  private readonly probeRtts: number[] = [];
  /** Suspicions' probes in flight, by host: settles one early with the answer of a re-probe. */
  private readonly probing = new Map<string, (answered: boolean) => void>();

  constructor(
    private readonly deps: MembershipDeps,
    readonly hostId: string,
    private readonly options: MembershipOptions = {},
    /** Hosts this one watches: an advisory about them is confirmed at once. */
    private readonly watches: (host: string) => boolean = () => false,
    /** Whether this host is a member now (joined, not declared dead): only then does it sweep. */
    private readonly member: () => boolean = () => true,
  ) {
    this.incarnation = deps.random.hex(6);
  }

  /**
   * Watches the records (resolves once the existing ones are in the view),
   * claims the host id and joins with `load`. `beforeJoin` runs in between:
   * a host whose earlier incarnation is still named in ownership records
   * waits there until they moved on.
   * @throws HostIdInUseError when a live process answers for this host id
   */
  async start(
    load: () => HostLoad,
    beforeJoin: () => Promise<void> = () => Promise.resolve(),
  ): Promise<void> {
    await this.watchOnly();
    await this.claimId();
    await beforeJoin();
    await this.join(load());
    if (this.options.advisories ?? true) {
      this.advisories = this.deps.transport.subscribe(subjects.disconnectAdvisory, (m) =>
        this.onAdvisory(m.data),
      );
    }
    this.sweep();
  }

  /**
   * An earlier process under this host id that is still recorded alive: if
   * it answers a probe, the id is taken; if not, it is declared dead here
   * (its standbys take over) before this process joins.
   * @throws HostIdInUseError
   */
  private async claimId(): Promise<void> {
    const known = await this.read(this.hostId);
    if (known?.record.state !== 'alive' || known.record.incarnation === this.incarnation) return;
    if (await this.answers(this.hostId, known.record.incarnation))
      throw new HostIdInUseError(
        `host id ${this.hostId} is in use by a live process: pick another id`,
      );
    await this.write(this.hostId, {
      type: 'declare-dead',
      incarnation: known.record.incarnation,
      cause: 'advisory',
      by: this.hostId,
    });
  }

  /** Watches the records without joining (a client); resolves once the existing ones are in the view. */
  async watchOnly(): Promise<void> {
    this.started = this.deps.clock.now();
    const w = await this.deps.kv.watch(
      (e) => this.onEntry(e.key, e.value, e.revision),
      (err) =>
        this.deps.onError(new FtmError(`membership watch ended: ${err.message}`, { cause: err })),
    );
    this.stopWatch = () => w.stop();
  }

  private onEntry(key: string, value: Uint8Array | undefined, revision: number): void {
    const known = this.hosts.get(key);
    if (known && known.revision >= revision) return;
    if (!value) {
      this.hosts.delete(key);
      this.onChange?.(key);
      return;
    }
    let record: HostRecord;
    try {
      record = parseHostRecord(this.deps.codec.decode(value));
    } catch (err) {
      return this.deps.dropped.drop(`$KV.ftm-hosts.${key}`, err);
    }
    const sameState =
      known &&
      known.record.state === record.state &&
      known.record.incarnation === record.incarnation;
    this.hosts.set(key, {
      record,
      revision,
      since: sameState ? known.since : this.deps.clock.now(),
    });
    if (record.state === 'alive' && !sameState) this.suspected.delete(key);
    if (key === this.hostId && record.state === 'dead' && record.incarnation === this.incarnation) {
      this.deps.trace(`this host was declared dead (${record.cause}, by ${record.by || 'itself'})`);
      this.onSelfDead?.();
    }
    this.onChange?.(key);
  }

  /** Joins (again) as `incarnation` with `load`. */
  async join(load: HostLoad, incarnation = this.incarnation): Promise<void> {
    this.incarnation = incarnation;
    if (!(await this.write(this.hostId, { type: 'join', incarnation, load })))
      throw new FtmError(
        `host ${this.hostId} could not join: ${JSON.stringify(this.hosts.get(this.hostId)?.record)}`,
      );
    this.lastLoad = JSON.stringify(load);
  }

  /**
   * Reads this host's own record from the store (not the watch): after a
   * pause, the verdict may be there and the watch not delivered yet. A
   * verdict found so calls {@link onSelfDead} like the watch would.
   */
  async refreshSelf(): Promise<void> {
    await this.read(this.hostId);
  }

  /** Reports a changed load, at most every 100 ms (placement needs it soon, not at once). */
  reportLoad(load: HostLoad): void {
    const json = JSON.stringify(load);
    if (json === this.lastLoad || this.loadTimer !== undefined) return;
    this.loadTimer = this.deps.clock.setTimeout(() => {
      this.loadTimer = undefined;
      const latest = this.latestLoad?.() ?? load;
      const now = JSON.stringify(latest);
      if (now === this.lastLoad) return;
      this.lastLoad = now;
      this.write(this.hostId, {
        type: 'report',
        incarnation: this.incarnation,
        load: latest,
      }).catch((err: unknown) =>
        this.deps.onError(new FtmError('load report failed', { cause: err })),
      );
    }, 100);
  }

  /** Where {@link reportLoad} reads the load when its timer fires. */
  latestLoad: (() => HostLoad) | undefined;

  /** Marks this host dead (cause `leave`): its watchers take over at once. */
  async leave(): Promise<void> {
    await this.write(this.hostId, { type: 'leave', incarnation: this.incarnation });
  }

  isAlive(id: string): boolean {
    return this.hosts.get(id)?.record.state === 'alive';
  }

  /**
   * How long `id` has been dead by verdict, in ms; undefined while it is
   * alive. A host with no record is taken as dead since this host started.
   */
  deadFor(id: string): number | undefined {
    const v = this.hosts.get(id);
    if (v?.record.state === 'alive') return undefined;
    return this.deps.clock.now() - (v?.since ?? this.started);
  }

  /** Live hosts, this one included. */
  liveHosts(): string[] {
    return [...this.hosts]
      .filter(([, v]) => v.record.state === 'alive')
      .map(([id]) => id)
      .sort();
  }

  /**
   * A suspicion (silence, the server's disconnect advisory, the sweep): probe
   * the suspect, and when it does not answer within `probeTimeoutMs`,
   * declare it dead by compare-and-swap. A store that does not answer is
   * tried again (the failover policy). Resolves whether this call wrote the verdict.
   */
  async confirm(
    id: string,
    cause: DownCause,
    at = this.deps.clock.now(),
    probeTimeoutMs = this.probeTimeoutMs(),
    /** A probe sent during this silence already went unanswered (the liveness worker's). */
    probed = false,
  ): Promise<boolean> {
    const v = this.hosts.get(id);
    if (id === this.hostId || v?.record.state !== 'alive' || this.confirming.has(id)) return false;
    this.confirming.add(id);
    try {
      const probedAt = this.deps.clock.now();
      if (!probed && (await this.answers(id, v.record.incarnation, probeTimeoutMs, true))) {
        if (cause !== 'probe') {
          this.falseSuspicions++;
          this.deps.trace(`host ${id} suspected (${cause}) but answered its probe`);
          this.onFalseSuspicion?.(id, cause, at, probedAt, this.deps.clock.now());
        }
        return false;
      }
      if (!this.suspected.has(id)) this.suspected.set(id, at);
      const verdict: HostChange = {
        type: 'declare-dead',
        incarnation: v.record.incarnation,
        cause,
        by: this.hostId,
      };
      for (let attempt = 0; ; attempt++) {
        try {
          const wrote = await this.write(id, verdict);
          if (wrote) this.deps.trace(`host ${id} declared dead (${cause})`);
          return wrote;
        } catch (err) {
          const policy = retryPolicies.failover;
          if (this.stopped || attempt + 1 >= policy.attempts) throw err;
          await sleep(this.deps.clock, backoffMs(policy, attempt));
        }
      }
    } finally {
      this.confirming.delete(id);
    }
  }

  /**
   * Once a second, probes one host recorded alive, at random, with a
   * generous timeout: a host that died while nobody watched it (it held no
   * session, or those who shared one died with it) is found and declared
   * dead here, so no record stays "alive" for a process that is gone.
   */
  private sweep(): void {
    this.sweepTimer = this.deps.clock.setTimeout(() => {
      if (this.stopped) return;
      const others = [...this.hosts].filter(
        ([id, v]) => id !== this.hostId && v.record.state === 'alive',
      );
      const pick = others[Math.floor(this.deps.random.next() * others.length)];
      if (pick && this.member()) void this.sweepProbe(pick[0]);
      // A probe of itself: a round trip through the server to its own
      // liveness worker, a sample of how fast probes come back now.
      else if (this.member())
        void this.answers(this.hostId, this.incarnation, 1_000).catch(() => false);
      this.sweep();
    }, 1_000);
  }

  /** Two unanswered probes in a row (a second chance after a short cut-off), then a verdict. */
  private async sweepProbe(id: string): Promise<void> {
    try {
      const v = this.hosts.get(id);
      if (!v || (await this.answers(id, v.record.incarnation, 1_000))) return;
      if (this.member()) await this.confirm(id, 'probe', this.deps.clock.now(), 1_000);
    } catch (err) {
      this.deps.onError(new FtmError(`probing ${id}`, { cause: err }));
    }
  }

  /**
   * How long a suspicion's probe waits: the configured floor, or 3 times the
   * longest recent round trip when probes come back slower (a busy machine).
   */
  probeTimeoutMs(): number {
    const floor = this.options.probeTimeoutMs ?? 10;
    const slowest = this.probeRtts.length ? Math.max(...this.probeRtts) : 0;
    return Math.max(floor, Math.min(maxProbeTimeoutMs, 3 * slowest));
  }

  /**
   * Whether `id`'s liveness worker answers a probe as `incarnation` within the
   * probe timeout. A suspicion's probe (`settleable`) ends early when a
   * re-probe answers first: see {@link onAdvisory}.
   */
  private async answers(
    id: string,
    incarnation: string,
    timeoutMs = this.probeTimeoutMs(),
    settleable = false,
  ): Promise<boolean> {
    const sent = this.deps.clock.now();
    const probe = this.deps.transport
      .request(subjects.probe(id), new Uint8Array(0), timeoutMs)
      .then(
        (answer) => {
          const before = this.probeTimeoutMs();
          this.probeRtts.push(this.deps.clock.now() - sent);
          if (this.probeRtts.length > rttWindow) this.probeRtts.shift();
          const after = this.probeTimeoutMs();
          if (after !== before) this.onProbeTimeout?.(after);
          return new TextDecoder().decode(answer) === incarnation;
        },
        (err: unknown) => {
          if (err instanceof NoResponderError || (err as FtmError).code === 'request_timeout')
            return false;
          throw err;
        },
      );
    if (!settleable) return probe;
    // Settled early, the probe's own end is nobody's business.
    probe.catch(() => undefined);
    const early = new Promise<boolean>((resolve) => this.probing.set(id, resolve));
    try {
      return await Promise.race([probe, early]);
    } finally {
      this.probing.delete(id);
    }
  }

  /** When `id` was first suspected before its verdict (this host's clock); undefined if never here. */
  suspectedAt(id: string): number | undefined {
    return this.suspected.get(id);
  }

  private onAdvisory(data: Uint8Array): void {
    // Untrusted: anything but the server's JSON naming one of our connections is dropped.
    const parsed = JSON.parse(new TextDecoder().decode(data)) as {
      client?: { name?: unknown };
    } | null;
    if (!parsed || typeof parsed !== 'object')
      throw new InvalidArgumentError('an advisory that is not a JSON object');
    // An unnamed client (a tool, a test) is none of ours.
    const name = parsed.client?.name;
    if (typeof name !== 'string') return;
    const id = namePattern.exec(name.trim())?.[1];
    if (!id || id === this.hostId || !this.isAlive(id)) return;
    const at = this.deps.clock.now();
    // A suspicion's probe is waiting (a crash seen first by its silence, the
    // process not reaped yet): probe again now. The server has dropped the
    // dead process's subscriptions, so no responders comes back at once; a
    // live host answers (a forged advisory changes nothing).
    const settle = this.probing.get(id);
    if (settle) {
      const v = this.hosts.get(id)!;
      void this.answers(id, v.record.incarnation).then(settle, () => undefined);
      return;
    }
    // Those who watch the host, and one host chosen by rendezvous, confirm at
    // once; the others only if the verdict has not come after a while.
    const first =
      rendezvous(
        id,
        this.liveHosts().filter((h) => h !== id),
      ) === this.hostId;
    const confirm = () => {
      this.confirm(id, 'advisory', at).catch((err: unknown) =>
        this.deps.onError(new FtmError(`confirming ${id} gone`, { cause: err })),
      );
    };
    if (first || this.watches(id)) confirm();
    else
      this.deps.clock.setTimeout(
        () => this.isAlive(id) && confirm(),
        this.options.advisoryBackupMs ?? 200,
      );
  }

  private async read(id: string): Promise<HostView | undefined> {
    const e = await this.deps.kv.get(id);
    if (!e?.value) return undefined;
    const record = parseHostRecord(this.deps.codec.decode(e.value));
    const view = { record, revision: e.revision, since: this.deps.clock.now() };
    const known = this.hosts.get(id);
    if (!known || known.revision < e.revision) this.onEntry(id, e.value, e.revision);
    return view;
  }

  /** Applies `change` to `id`'s record by compare-and-swap; resolves whether it landed. */
  private async write(id: string, change: HostChange): Promise<boolean> {
    const r = await compareAndSwap(
      this.deps.kv,
      id,
      this.hosts.get(id),
      () => this.read(id),
      (record) => applyHost(record, change),
      (record) => this.deps.codec.encode(record),
    );
    if (r.ok) this.onEntry(id, r.bytes, r.stored.revision);
    return r.ok;
  }

  /** Stops the timers (sweep, load reports): the host is closing. */
  quiet(): void {
    this.stopped = true;
    if (this.sweepTimer !== undefined) this.deps.clock.clearTimeout(this.sweepTimer);
    if (this.loadTimer !== undefined) this.deps.clock.clearTimeout(this.loadTimer);
  }

  stop(): void {
    this.quiet();
    this.stopWatch?.();
    this.advisories?.unsubscribe();
    if (this.loadTimer !== undefined) this.deps.clock.clearTimeout(this.loadTimer);
  }
}
