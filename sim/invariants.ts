import { createValueCodec } from '../runtime/codec.ts';
import type { FtmError } from '../runtime/errors.ts';
import { parseHostRecord } from '../runtime/membership-record.ts';
import {
  InvariantViolation,
  parseOwnerRecord,
  type OwnerRecord,
} from '../runtime/ownership-record.ts';
import { storeNames } from '../runtime/subjects.ts';
import { AckSource, FrameKind, decodeBatch, decodeFrame } from '../runtime/wire.ts';
import { simActors, type AppliedState } from './actors.ts';
import type { KvWrite } from './kv-store.ts';
import { restoreGraceMs, type Mesh } from './mesh.ts';
import type { Connection, SimMessage } from './network.ts';
import type { World } from './world.ts';

/** A broken invariant, named as in runtime/PROTOCOL.md. */
export type Violation = { invariant: string; detail: string; at: number };

/** A reply a client got: `id` sits at position `pos` of the session's history, released in `epoch`. */
export type Release = { sid: string; id: string; pos: number; epoch: number; at: number };

/** What a serving primary has been checked against so far. */
type PrimaryCheck = { releases: number };
/** A copy's applied list as last checked for duplicates. */
type DupCheck = { state: unknown; seen: Set<string>; length: number; last: string | undefined };

/**
 * Errors a subscription callback may throw: it refused the message and the
 * transport counts it (runtime/dropped-messages.ts). A stale or corrupt
 * frame from a real host is refused so too.
 */
const refusals = new Set([
  'MalformedFrameError',
  'MalformedMessageError',
  'StaleEpochError',
  'CorruptPatchError',
]);
/** What a callback may also throw on garbage: a parser's own refusal of bytes that are not its format. */
const garbageRefusals = new Set(['InvalidArgumentError', 'SyntaxError', 'Error', 'RangeError']);

/** Actors in `standby` mode: a double loss may take replies the standby acknowledged with it. */
const standbyMode = new Set(
  simActors.filter((a) => a.consistency === 'standby').map((a) => a.name),
);

/**
 * Watches a simulated mesh and reports every broken invariant: after every
 * step (one-primary-per-epoch, released-in-history, no-duplicates), at
 * every write to `ftm-owners` (epochs-grow), at every ack and commit the
 * server routes (ack-only-when-named, dead-serve-nothing), and whenever the
 * runtime lets an exception out or reports an InvariantViolation.
 */
export class Checker {
  readonly violations: Violation[] = [];
  /** Things the output must say (a session excluded from a check, and why). */
  readonly notes: string[] = [];
  readonly releases: Release[] = [];
  /** Stop at the first violation (the trace tail then shows it). */
  stopOnViolation = true;
  private readonly bySid = new Map<string, Release[]>();
  private readonly releasedAt = new Map<string, Release>();
  /** sid → releases of epochs below this are exempt (a standby-mode session lost its hot copy). */
  private readonly exemptBelow = new Map<string, number>();
  private readonly primaries = new Map<string, PrimaryCheck>();
  private readonly dups = new Map<string, DupCheck>();
  /** `host/incarnation` → when it was declared dead. */
  private readonly deadAt = new Map<string, number>();
  /** `sid|standby|epoch|term` of every revision that named a standby. */
  private readonly named = new Set<string>();
  /** `sid|epoch` of the epochs begun by a promotion (not a restore). */
  private readonly promotedEpochs = new Set<string>();
  /** sid → the highest epoch whose marker is in the log. */
  private readonly claimed = new Map<string, number>();
  private readonly codec = createValueCodec();

  constructor(
    private readonly world: World,
    private readonly mesh: Mesh,
  ) {
    mesh.onKvWrite = (bucket, w, prev) => this.onKvWrite(bucket, w, prev);
    mesh.network.onRoute = (m, to) => this.onRoute(m, to);
    mesh.network.onThrow = (m, conn, err) => this.onThrow(m, conn, err);
    mesh.onHostError = (host, err) => this.onError(host, err);
    mesh.log.onAppend = (sid, data, seq, by) => this.onAppend(sid, data, seq, by.name);
    const escaped = (err: unknown) =>
      this.fail('no-escaping-exceptions', `a KV watch callback threw: ${describe(err)}`);
    mesh.owners.onThrow = escaped;
    mesh.hostsKv.onThrow = escaped;
  }

  fail(invariant: string, detail: string): void {
    if (this.stopOnViolation && this.violations.length) return;
    this.violations.push({ invariant, detail, at: this.world.now });
    this.world.trace.add(`VIOLATION ${invariant}: ${detail}`);
    if (this.stopOnViolation) this.world.stopped = true;
  }

  note(text: string): void {
    this.notes.push(text);
    this.world.trace.add(`note: ${text}`);
  }

  private decodeOwner(value: Uint8Array | undefined): OwnerRecord | undefined {
    if (!value) return undefined;
    return parseOwnerRecord(this.codec.decode(value));
  }

  private onKvWrite(bucket: string, w: KvWrite, prev: KvWrite | undefined): void {
    if (bucket === storeNames.hosts) return this.onHostWrite(w);
    let next: OwnerRecord | undefined;
    let before: OwnerRecord | undefined;
    try {
      next = this.decodeOwner(w.value);
      before = this.decodeOwner(prev?.value);
    } catch (err) {
      return this.fail(
        'epochs-grow',
        `${w.key}: an ownership record that does not decode: ${describe(err)}`,
      );
    }
    if (!next)
      return this.world.trace.add(`owners ${w.key} r${w.revision}: purged by ${w.by.name}`);
    this.world.trace.add(
      `owners ${w.key} r${w.revision}: epoch ${next.epoch} term ${next.term} primary ${next.primary || '-'} standby ${next.standby || '-'}${next.closed ? ' closed' : ''} (by ${w.by.name})`,
    );
    if (before && next.epoch < before.epoch)
      this.fail(
        'epochs-grow',
        `${w.key}: epoch ${before.epoch} -> ${next.epoch} at revision ${w.revision}`,
      );
    if (next.standby) this.named.add(`${w.key}|${next.standby}|${next.epoch}|${next.term}`);
    if (!before || next.epoch <= before.epoch) return;
    const promoted = this.promoting(w, next);
    if (promoted) this.promotedEpochs.add(`${w.key}|${next.epoch}`);
    // A standby-mode session restored while its hot copies were gone may
    // lose what only they held: the replies a standby acknowledged (and so
    // released). With a standby named, that is its epoch's replies; with an
    // epoch begun by a promotion that never named one, the replies the
    // promoted copy had acknowledged before (its kept frames may never have
    // reached the log). Replies released on the log's ack must survive.
    if (!standbyMode.has(next.actor) || promoted) return;
    const below = before.standby
      ? next.epoch
      : before.term === 0 && this.promotedEpochs.has(`${w.key}|${before.epoch}`)
        ? before.epoch
        : 0;
    if (below > (this.exemptBelow.get(w.key) ?? 0)) {
      this.exemptBelow.set(w.key, below);
      this.note(
        `${w.key} (${next.actor}, standby mode): replies released before epoch ${below} are exempt from released-in-history: restored by ${w.by.name} after epoch ${before.epoch}'s hot copies were lost (primary ${before.primary}, standby ${before.standby || 'none named'})`,
      );
    }
  }

  /** Whether the writer of a new epoch is the standby promoting itself (or taking over), not a restore. */
  private promoting(w: KvWrite, next: OwnerRecord): boolean {
    const h = this.mesh.hosts.get(w.by.hostId);
    if (!h?.host || h.proc !== w.by || next.primary !== w.by.hostId) return false;
    return h.host.info(w.key)?.status === 'promoting';
  }

  private onHostWrite(w: KvWrite): void {
    if (!w.value) return;
    try {
      const r = parseHostRecord(this.codec.decode(w.value));
      if (r.state === 'dead' && !this.deadAt.has(`${w.key}/${r.incarnation}`)) {
        this.deadAt.set(`${w.key}/${r.incarnation}`, w.at);
        this.world.trace.add(
          `hosts ${w.key}: ${r.incarnation} dead (${r.cause}, by ${r.by || 'itself'})`,
        );
      } else if (
        r.state === 'alive' &&
        w.by.hostId === w.key &&
        w.by.incarnation === r.incarnation
      ) {
        // Joins and load reports: only a join is worth a line.
      }
    } catch (err) {
      this.fail(
        'dead-serve-nothing',
        `${w.key}: a host record that does not decode: ${describe(err)}`,
      );
    }
  }

  /**
   * one-writer-per-log: once an epoch's marker is in a session's log, only
   * that epoch (or a newer one, with its own marker) appends. A batch's
   * epoch is its marker's (the kept frames after it are older commits the
   * new epoch writes), else its newest commit's.
   */
  private onAppend(sid: string, data: Uint8Array, seq: number, by: string): void {
    let marker: number | undefined;
    let newest = 0;
    try {
      for (const bytes of decodeBatch(data)) {
        const f = decodeFrame(bytes);
        if (f.kind === FrameKind.epoch) marker ??= f.epoch;
        else if (f.kind === FrameKind.commit) newest = Math.max(newest, f.epoch);
      }
    } catch (err) {
      return this.fail(
        'one-writer-per-log',
        `${by} appended a batch that does not decode to ${sid}: ${describe(err)}`,
      );
    }
    const epoch = marker ?? newest;
    const claimed = this.claimed.get(sid) ?? 0;
    if (epoch < claimed)
      this.fail(
        'one-writer-per-log',
        `${by} appended a batch of epoch ${epoch}${marker !== undefined ? ' (with its marker)' : ''} to ${sid} at stream seq ${seq}, after epoch ${claimed}'s marker`,
      );
    if (marker !== undefined && marker > claimed) this.claimed.set(sid, marker);
  }

  /** Acks and commits as the server routes them. */
  private onRoute(m: SimMessage, to: number): void {
    if (m.garbage || to === 0) return;
    const isAck = m.subject.endsWith('.ack');
    if (!isAck && !m.subject.endsWith('.out')) return;
    const host = m.from.proc?.hostId;
    if (!host) return;
    let f;
    try {
      f = decodeFrame(m.data);
    } catch (err) {
      return this.fail(
        'no-silent-drop',
        `${host} published a malformed frame on ${m.subject}: ${describe(err)}`,
      );
    }
    const sid = m.subject.split('.')[2]!;
    if (f.kind !== FrameKind.ack && f.kind !== FrameKind.commit) return;
    const standbyAck = f.kind === FrameKind.ack && f.source === AckSource.standby;
    if (standbyAck && !this.named.has(`${sid}|${host}|${f.epoch}|${f.term}`))
      this.fail(
        'ack-only-when-named',
        `${host} (${m.from.proc.name}) acked ${sid} epoch ${f.epoch} term ${f.term} seq ${f.seq}; no revision names it standby at that epoch and term`,
      );
    if (!standbyAck && f.kind !== FrameKind.commit) return;
    const dead = this.deadAt.get(`${host}/${m.incarnation}`);
    if (dead !== undefined && m.publishedAt > dead + restoreGraceMs)
      this.fail(
        'dead-serve-nothing',
        `${m.from.proc.name} (incarnation ${m.incarnation}, dead since ${dead.toFixed(3)}) published a ${standbyAck ? 'standby ack' : 'commit'} of ${sid} epoch ${f.epoch} seq ${f.seq} at ${m.publishedAt.toFixed(3)}`,
      );
  }

  private onThrow(m: SimMessage, conn: Connection, err: unknown): void {
    const name = (err as Error)?.name ?? typeof err;
    if (refusals.has(name) || (m.garbage && garbageRefusals.has(name))) return;
    this.fail(
      'no-escaping-exceptions',
      `a callback of ${conn.name} threw on ${m.garbage ? 'garbage' : 'a message'} on ${m.subject}: ${describe(err)}`,
    );
  }

  private onError(host: string, err: FtmError): void {
    this.world.trace.add(`${host} error: ${describe(err)}`);
    for (let e: unknown = err; e; e = (e as Error).cause)
      if (e instanceof InvariantViolation || (e as Error).name === 'InvariantViolation')
        return this.fail('no-invariant-violation', `${host} reported ${describe(e)}`);
  }

  /** A client got a reply. */
  onRelease(r: Release): void {
    const before = this.releasedAt.get(r.id);
    if (before && before.pos !== r.pos && !this.isExempt(before))
      this.fail(
        'released-in-history',
        `${r.id} released at position ${before.pos} (epoch ${before.epoch}) and again at ${r.pos} (epoch ${r.epoch})`,
      );
    this.releasedAt.set(r.id, r);
    this.releases.push(r);
    let list = this.bySid.get(r.sid);
    if (!list) this.bySid.set(r.sid, (list = []));
    list.push(r);
  }

  private isExempt(r: Release): boolean {
    return r.epoch < (this.exemptBelow.get(r.sid) ?? 0);
  }

  /** The checks of every step. */
  check(): void {
    const serving = new Map<string, string>();
    const sids = this.mesh.owners.keys();
    for (const h of this.mesh.hosts.values()) {
      const host = h.host;
      if (!host || h.proc.crashed) continue;
      for (const sid of sids) {
        const info = host.info(sid);
        if (!info) continue;
        const state = host.state(sid) as AppliedState;
        this.checkDuplicates(`${h.proc.name}|${sid}`, sid, state);
        if (info.status !== 'primary' && info.status !== 'handing-off') continue;
        const key = `${sid}|${info.epoch}`;
        const other = serving.get(key);
        if (other)
          this.fail(
            'one-primary-per-epoch',
            `${sid} epoch ${info.epoch}: served by ${other} and ${h.proc.name}`,
          );
        serving.set(key, h.proc.name);
        this.checkHistory(`${h.proc.name}|${sid}|${info.epoch}`, sid, info.epoch, state);
      }
    }
  }

  private checkDuplicates(key: string, sid: string, state: AppliedState): void {
    const applied = state?.applied;
    if (!Array.isArray(applied)) return;
    let d = this.dups.get(key);
    if (d?.state === state) return;
    // The applied list only grows while it is the same history; anything else is checked afresh.
    if (!d || applied.length < d.length || (d.length && applied[d.length - 1] !== d.last))
      this.dups.set(key, (d = { state, seen: new Set(), length: 0, last: undefined }));
    for (let i = d.length; i < applied.length; i++) {
      const id = applied[i]!;
      if (d.seen.has(id))
        this.fail(
          'no-duplicates',
          `${key.split('|')[0]}: ${sid} applied ${id} twice (positions ${applied.indexOf(id) + 1} and ${i + 1})`,
        );
      d.seen.add(id);
    }
    d.state = state;
    d.length = applied.length;
    d.last = applied[applied.length - 1];
  }

  private checkHistory(key: string, sid: string, epoch: number, state: AppliedState): void {
    const list = this.bySid.get(sid);
    if (!list) return;
    let p = this.primaries.get(key);
    if (!p) this.primaries.set(key, (p = { releases: 0 }));
    for (; p.releases < list.length; p.releases++) {
      const r = list[p.releases]!;
      if (r.epoch >= epoch || this.isExempt(r)) continue;
      const at = state.applied?.[r.pos - 1];
      if (at !== r.id)
        this.fail(
          'released-in-history',
          `${key.split('|')[0]} serves ${sid} in epoch ${epoch} with ${state.applied?.length ?? 0} entries, position ${r.pos} holding ${at ?? 'nothing'}; ${r.id} was released there in epoch ${r.epoch} at ${r.at.toFixed(3)}`,
        );
    }
  }
}

function describe(err: unknown): string {
  if (err instanceof Error) {
    const cause = err.cause instanceof Error ? ` (${err.cause.name}: ${err.cause.message})` : '';
    return `${err.name}: ${err.message}${cause}`;
  }
  return String(err);
}
