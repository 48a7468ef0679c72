import { metrics, type BatchObservableResult } from '@opentelemetry/api';
import type { Clock } from './clock.ts';
import { Attr, instrumentationScope, type SessionTelemetry, type Tracing } from './telemetry.ts';
import type { SessionCopies } from './session-copies.ts';

/** What a host's metrics read: counters and views it keeps anyway. */
export type HostMetricSources = {
  hostId: string;
  clock: Clock;
  copies: SessionCopies;
  telemetry: SessionTelemetry;
  /** Suspicions of live hosts that a probe answered (membership.ts). */
  falseSuspicions: () => number;
  tracing: Tracing;
};

/**
 * A host's metrics through `@opentelemetry/api` (no-op without an SDK set
 * up before the host starts): observable instruments that read, when the
 * SDK collects, what the host counts anyway. Nothing is added to the hot
 * path beyond two counter increments per commit (telemetry.ts).
 *
 * - `ftmesh.transactions`: commits made by this host's primaries (a counter: its rate is transactions/s)
 * - `ftmesh.patch.bytes`: bytes of patches (and effects) those commits replicated
 * - `ftmesh.sessions`: copies held, by `ftmesh.role` (primary, standby)
 * - `ftmesh.replication.lag`: the most commits a standby of this host's primaries is behind
 * - `ftmesh.replication.lag.time`: the age of the oldest commit a standby has not acknowledged, ms
 * - `ftmesh.false_suspicions`: suspicions of live hosts a probe answered
 *
 * (failover-telemetry.ts adds `ftmesh.failovers` and `ftmesh.failover.first_reply`.)
 * Returns the function that stops the observations (the host's close).
 */
export function observeHost(src: HostMetricSources): () => void {
  const meter = metrics.getMeter(instrumentationScope);
  const transactions = meter.createObservableCounter('ftmesh.transactions', {
    description: "Transactions committed by this host's primaries",
    unit: '{transaction}',
  });
  const patchBytes = meter.createObservableCounter('ftmesh.patch.bytes', {
    description: 'Bytes of changes (patches and effects) replicated by those transactions',
    unit: 'By',
  });
  const sessions = meter.createObservableGauge('ftmesh.sessions', {
    description: 'Session copies this host holds, by role',
    unit: '{session}',
  });
  const lag = meter.createObservableGauge('ftmesh.replication.lag', {
    description: "Most commits a standby of this host's primaries has not acknowledged",
    unit: '{commit}',
  });
  const lagTime = meter.createObservableGauge('ftmesh.replication.lag.time', {
    description: 'Age of the oldest commit a standby has not acknowledged',
    unit: 'ms',
  });
  const falseSuspicions = meter.createObservableCounter('ftmesh.false_suspicions', {
    description: 'Suspicions of a live host that its probe answered (no failover)',
    unit: '{suspicion}',
  });
  const host = { [Attr.host]: src.hostId };
  const primaryAttrs = { ...host, [Attr.role]: 'primary' };
  const standbyAttrs = { ...host, [Attr.role]: 'standby' };
  const observe = (r: BatchObservableResult) =>
    void src.tracing.safely(() => {
      const { counters } = src.telemetry;
      r.observe(transactions, counters.commits, host);
      r.observe(patchBytes, counters.patchBytes, host);
      const load = src.copies.load(0, false);
      r.observe(sessions, load.primaries, primaryAttrs);
      r.observe(sessions, load.standbys, standbyAttrs);
      const now = src.clock.now();
      let behind = 0;
      let oldest = now;
      for (const copy of src.copies.values()) {
        const p = copy.primary;
        if (!p || p.isStopped || !p.standbyHost) continue;
        behind = Math.max(behind, p.seq - p.standbyAcked);
        const at = p.oldestUnackedAt;
        if (at !== undefined && at < oldest) oldest = at;
      }
      r.observe(lag, behind, host);
      r.observe(lagTime, now - oldest, host);
      r.observe(falseSuspicions, src.falseSuspicions(), host);
    });
  const observables = [transactions, patchBytes, sessions, lag, lagTime, falseSuspicions];
  meter.addBatchObservableCallback(observe, observables);
  return () => meter.removeBatchObservableCallback(observe, observables);
}
