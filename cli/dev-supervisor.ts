import type { MeshClient } from '../runtime/index.ts';
import type { Child, ChildExit } from './child-process.ts';
import { firstLine } from './errors.ts';
import { Fleet, unexpectedExitLine, type FleetOptions } from './fleet.ts';
import { waitUntil } from './wait.ts';

/** A child that dies this often within {@link CRASH_WINDOW_MS} is not started again. */
const MAX_CRASHES = 3;
const CRASH_WINDOW_MS = 30_000;

/**
 * Owns the fleet of `dev`: starts it, restarts a child that died (unless it
 * keeps dying), and reloads the hosts one at a time. Every change of the
 * fleet runs in one queue, so that a reload and a restart never interleave.
 */
export class Supervisor {
  readonly fleet: Fleet;
  private queue: Promise<void> = Promise.resolve();
  private readonly crashes = new Map<string, number[]>();
  private readonly ids: string[];
  private gatewayPort = 0;
  private reloadPending: string | undefined;
  private reloading = false;

  constructor(
    private readonly mesh: MeshClient,
    hostCount: number,
    options: Omit<FleetOptions, 'onUnexpectedExit'>,
    private readonly say: (line: string) => void,
    private readonly stopping: () => boolean,
  ) {
    this.ids = Array.from({ length: hostCount }, (_, i) => `dev-h${i + 1}`);
    this.fleet = new Fleet({
      ...options,
      onUnexpectedExit: (name, exit, child) => this.onCrash(name, exit, child),
    });
  }

  private serial(task: () => Promise<void>): void {
    this.queue = this.queue.then(task).catch((err: unknown) => {
      // A start cut short by the stop is no news.
      if (!this.stopping()) this.say(firstLine(err));
    });
  }

  async start(port: number): Promise<void> {
    const [gw] = await Promise.all([
      this.fleet.startGateway('dev-gw', port),
      ...this.ids.map((id) => this.fleet.startHost(id)),
    ]);
    this.gatewayPort = gw.port;
  }

  private onCrash(name: string, exit: ChildExit, child: Child): void {
    if (this.stopping()) return;
    const now = Date.now();
    const recent = (this.crashes.get(name) ?? []).filter((t) => now - t < CRASH_WINDOW_MS);
    recent.push(now);
    this.crashes.set(name, recent);
    const line = unexpectedExitLine(name, exit, child);
    if (recent.length >= MAX_CRASHES) {
      this.say(
        `${line}; it died ${recent.length} times in ${CRASH_WINDOW_MS / 1000} s: not starting it again (save an actor file to retry)`,
      );
      return;
    }
    this.say(`${line}; starting it again`);
    this.serial(async () => {
      if (this.stopping()) return;
      if (name.startsWith('gateway ')) {
        const gw = await this.fleet.startGateway('dev-gw', this.gatewayPort, true);
        this.say(`gateway ${gw.url} is back (pid ${gw.child.pid})`);
      } else {
        const id = name.replace(/^host /, '');
        const h = await this.fleet.startHost(id, true);
        this.say(`host ${id} is back (pid ${h.child.pid})`);
      }
    });
  }

  /** Restarts every host, one at a time, drained; then the gateway if the actors changed. */
  reload(why: string): void {
    if (this.reloading) {
      this.reloadPending = why;
      return;
    }
    this.reloading = true;
    this.serial(async () => {
      try {
        await this.reloadNow(why);
      } finally {
        this.reloading = false;
        const again = this.reloadPending;
        this.reloadPending = undefined;
        if (again !== undefined && !this.stopping()) this.reload(again);
      }
    });
  }

  private async reloadNow(why: string): Promise<void> {
    const started = Date.now();
    this.crashes.clear();
    this.say(`${why}: restarting ${this.ids.length} hosts one at a time (drain, start, live)`);
    let surface = '';
    for (const id of this.ids) {
      if (this.stopping()) return;
      const exit = await this.fleet.drain(id);
      try {
        const h = await this.fleet.startHost(id, true);
        surface = h.surface;
        this.say(
          `host ${id} reloaded (pid ${h.child.pid})${exit?.code ? `; the old one exited with ${exit.code}` : ''}`,
        );
      } catch (err) {
        this.say(
          `reload stopped: host ${id} did not start (${firstLine(err)}); the others keep the previous code, save again to retry`,
        );
        return;
      }
      await this.waitProtected();
    }
    const gw = this.fleet.gateway;
    if (gw && surface && surface !== gw.surface) {
      await this.fleet.drainGateway();
      const next = await this.fleet.startGateway('dev-gw', this.gatewayPort, true);
      this.say(
        `the actors changed: gateway restarted on ${next.url} (pid ${next.child.pid}); clients reconnect by themselves`,
      );
    }
    this.say(
      `reloaded in ${((Date.now() - started) / 1000).toFixed(1)} s; ${this.openSessions()} sessions kept`,
    );
  }

  private openSessions(): number {
    return this.mesh.sessions().filter((s) => !s.record.closed).length;
  }

  /**
   * Waits (10 s at most) until every open session's primary and standby are
   * live hosts: the next host drained must have a standby to hand over to.
   */
  private async waitProtected(): Promise<void> {
    if (this.ids.length < 2) return;
    const live = () => new Set(this.mesh.liveHosts());
    await waitUntil(() => {
      const hosts = live();
      return this.mesh
        .sessions()
        .every(
          ({ record }) => record.closed || (hosts.has(record.primary) && hosts.has(record.standby)),
        );
    }, 'every session to have a live standby').catch(() =>
      this.say('some sessions have no standby yet; reloading on'),
    );
  }
}
