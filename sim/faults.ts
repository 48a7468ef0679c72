import { garbagePayload, garbageTargets } from './garbage.ts';
import type { Mesh } from './mesh.ts';
import type { Prng } from './prng.ts';
import type { World } from './world.ts';

/** The kinds of fault a seed mixes. */
export const faultKinds = [
  'crash',
  'crash-restart',
  'double-crash',
  'hang',
  'partition',
  'delay',
  'loss',
  'reorder',
  'kv-outage',
  'log-outage',
  'garbage',
  'false-suspicion',
] as const;

export type FaultKind = (typeof faultKinds)[number];

/** How often each kind is drawn (relative). */
const weights: Record<FaultKind, number> = {
  crash: 3,
  'crash-restart': 3,
  'double-crash': 1.5,
  hang: 3,
  partition: 3,
  delay: 1.5,
  loss: 1.5,
  reorder: 1.5,
  'kv-outage': 1.5,
  'log-outage': 1.5,
  garbage: 2,
  'false-suspicion': 2,
};

/**
 * Seeded faults: a plan of a few faults at random times of the faulted
 * window, each acting on the mesh when its time comes (a fault whose target
 * is gone by then is skipped), and each ending on its own or at
 * {@link endAll}. A crash never leaves fewer than one running host.
 */
export class Faults {
  readonly counts: Partial<Record<FaultKind, number>> = {};
  private readonly rng: Prng;
  private readonly outages = new Set<{ setOutage(on: boolean): void }>();

  constructor(
    private readonly world: World,
    private readonly mesh: Mesh,
    /**
     * Hangs and partitions may outlast the restore grace. The protocol
     * assumes a host declared dead learns it within the grace; a longer
     * pause breaks that assumption (dead-serve-nothing then fails).
     */
    private readonly longPauses = false,
  ) {
    this.rng = world.rng.fork();
  }

  private draw(): FaultKind {
    let total = 0;
    for (const k of faultKinds) total += weights[k];
    let x = this.rng.range(0, total);
    for (const k of faultKinds) if ((x -= weights[k]) < 0) return k;
    return 'crash';
  }

  /** Schedules `n` faults in [start, start + windowMs). */
  plan(start: number, windowMs: number, n: number): void {
    for (let i = 0; i < n; i++) {
      const kind = this.draw();
      const at = start + this.rng.range(0, windowMs);
      this.world.at(at, () => {
        if (this.inject(kind)) this.counts[kind] = (this.counts[kind] ?? 0) + 1;
      });
    }
  }

  private log(text: string): void {
    this.world.trace.add(`FAULT ${text}`);
  }

  private running(): string[] {
    return this.mesh.running().map((h) => h.id);
  }

  /** A duration: mostly short, sometimes longer than the restore grace. */
  private duration(short: [number, number], long: [number, number], pLong: number): number {
    return this.rng.chance(pLong) ? this.rng.range(...long) : this.rng.range(...short);
  }

  private inject(kind: FaultKind): boolean {
    const { mesh, world, rng } = this;
    const running = this.running();
    switch (kind) {
      case 'crash':
      case 'crash-restart': {
        if (running.length < 2) return false;
        const id = rng.pick(running);
        this.log(`${kind} ${id}`);
        mesh.crash(id);
        if (kind === 'crash-restart') {
          const after = rng.range(50, 700);
          world.schedule(after, () => {
            this.log(`restart ${id}`);
            mesh.restart(id);
          });
        }
        return true;
      }
      case 'double-crash': {
        const pairs = mesh.owners
          .keys()
          .map((sid) => mesh.record(sid))
          .filter(
            (r) =>
              r &&
              !r.closed &&
              r.standby &&
              running.includes(r.primary) &&
              running.includes(r.standby),
          );
        if (!pairs.length || running.length < 3) return false;
        const r = rng.pick(pairs)!;
        this.log(
          `double-crash ${r.primary} and ${r.standby} (primary and standby of epoch ${r.epoch})`,
        );
        mesh.crash(r.primary);
        mesh.crash(r.standby);
        if (rng.chance(0.5)) {
          const id = rng.pick([r.primary, r.standby]);
          world.schedule(rng.range(100, 900), () => {
            this.log(`restart ${id}`);
            mesh.restart(id);
          });
        }
        return true;
      }
      case 'hang': {
        const id = rng.pick(running);
        if (!mesh.hang(id)) return false;
        const ms = this.duration([2, 300], [1_050, 1_600], this.longPauses ? 0.2 : 0);
        this.log(`hang ${id} for ${ms.toFixed(1)} ms`);
        world.schedule(ms, () => mesh.resume(id) && this.log(`resume ${id}`));
        return true;
      }
      case 'partition': {
        const id = rng.pick(running);
        if (!mesh.partition(id)) return false;
        const ms = this.duration([2, 300], [1_050, 1_600], this.longPauses ? 0.2 : 0);
        this.log(`partition ${id} for ${ms.toFixed(1)} ms`);
        world.schedule(ms, () => mesh.heal(id) && this.log(`heal ${id}`));
        return true;
      }
      case 'delay':
      case 'loss':
      case 'reorder': {
        const c = mesh.network.conditions;
        const ms = rng.range(30, 300);
        if (kind === 'delay') c.delayFactor = rng.range(5, 40);
        if (kind === 'loss') c.loss = rng.range(0.02, 0.3);
        if (kind === 'reorder') c.reorder = true;
        this.log(
          `${kind} for ${ms.toFixed(1)} ms (factor ${c.delayFactor.toFixed(1)}, loss ${c.loss.toFixed(2)})`,
        );
        world.schedule(ms, () => {
          if (kind === 'delay') c.delayFactor = 1;
          if (kind === 'loss') c.loss = 0;
          if (kind === 'reorder') c.reorder = false;
          this.log(`${kind} ends`);
        });
        return true;
      }
      case 'kv-outage':
      case 'log-outage': {
        const servers =
          kind === 'log-outage'
            ? [mesh.log.server, mesh.snapshots.server]
            : [rng.chance(0.5) ? mesh.owners.server : mesh.hostsKv.server];
        const ms = rng.range(30, 700);
        this.log(`${kind} (${servers.map((s) => s.name).join(', ')}) for ${ms.toFixed(1)} ms`);
        for (const s of servers) {
          s.setOutage(true);
          this.outages.add(s);
        }
        world.schedule(ms, () => {
          this.log(`${kind} ends`);
          for (const s of servers) {
            s.setOutage(false);
            this.outages.delete(s);
          }
        });
        return true;
      }
      case 'garbage': {
        const { publish, requests } = garbageTargets(mesh.owners.keys(), [...mesh.hosts.keys()]);
        const n = rng.int(2, 6);
        this.log(`garbage: ${n} messages on each of ${publish.length + requests.length} subjects`);
        const server = mesh.network.server;
        for (const subject of publish)
          for (let i = 0; i < n; i++)
            mesh.network.publish(server, subject, garbagePayload(rng), undefined, true);
        for (const subject of requests)
          for (let i = 0; i < n; i++)
            mesh.network.publish(server, subject, garbagePayload(rng), `_INBOX.garbage.${i}`, true);
        return true;
      }
      case 'false-suspicion': {
        const pair = mesh.liveness.falseSuspicion();
        if (!pair) return false;
        this.log(`false suspicion ${pair}`);
        return true;
      }
    }
  }

  /**
   * Ends every fault still on: hung hosts resume, partitions heal, outages
   * and network faults end, and crashed hosts restart until two run.
   */
  endAll(): void {
    const { mesh } = this;
    for (const h of mesh.hosts.values()) {
      if (h.proc.hung) mesh.resume(h.id);
      if (h.proc.partitioned) mesh.heal(h.id);
    }
    const crashed = [...mesh.hosts.values()].filter((h) => h.proc.crashed).map((h) => h.id);
    for (let running = mesh.running().length; running < 2 && crashed.length; running++) {
      const id = crashed.shift()!;
      this.log(`restart ${id} (the mesh needs two hosts)`);
      mesh.restart(id);
    }
    for (const s of this.outages) s.setOutage(false);
    this.outages.clear();
    Object.assign(mesh.network.conditions, { delayFactor: 1, loss: 0, reorder: false });
    this.log('all faults end');
  }
}
