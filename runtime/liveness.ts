import { Worker } from 'node:worker_threads';
import type { PhiAccrualOptions } from './phi-accrual.mjs';

/**
 * Heartbeats and their judgement: the port through which a host beats and
 * learns that a host it shares a session with went silent. Production runs
 * it on a worker thread ({@link workerLiveness}); the simulator on its clock.
 * A suspicion is only that: the membership confirms it with a probe before
 * anyone is declared dead.
 */
export interface Liveness {
  start(): Promise<void>;
  /** The hosts to judge: those this host shares a session with. */
  watch(hosts: readonly string[]): void;
  /** Whether this host holds sessions: only then does it beat. */
  setBeating(on: boolean): void;
  /** The incarnation this host's probe answers carry. */
  setIncarnation(incarnation: string): void;
  /**
   * Whether the host's main connection is up. While it is not, the host
   * neither beats nor answers probes: unreachable for its sessions, it is
   * gone for the others.
   */
  setConnected(on: boolean): void;
  /** How long a probe of a silent host waits (the membership's adaptive timeout). */
  setProbeTimeout(ms: number): void;
  /**
   * Called once per silence of a watched host (again only after it beat
   * since). `confirmed`: a probe sent during this silence went unanswered.
   */
  onSuspect: ((host: string, at: number, confirmed: boolean, why: string) => void) | undefined;
  stop(): Promise<void>;
}

/** Options of {@link workerLiveness}. */
export type LivenessOptions = {
  /** Heartbeat period (default 5 ms). */
  heartbeatIntervalMs?: number;
  /** The detector's settings (phi-accrual.mjs has the defaults and why). */
  detector?: PhiAccrualOptions;
  /** The shortest silence that raises a suspicion, whatever phi says (default 15 ms). */
  minSilenceMs?: number;
  /** A main thread that has not run for this long is hung: beats and probe answers stop (default 1,000 ms). */
  mainHangMs?: number;
};

type FromWorker =
  | { type: 'ready' | 'stopped' }
  | { type: 'suspect'; id: string; at: number; confirmed: boolean; why: string };

/**
 * The liveness of a host on a worker thread with its own NATS connection
 * (liveness-worker.mjs). The main thread ticks a shared counter; when it
 * stops ticking for `mainHangMs`, the worker stops beating and answering
 * probes, so a host whose main thread hangs is found out too.
 */
export function workerLiveness(
  servers: string | string[],
  hostId: string,
  connectionName: string,
  options: LivenessOptions = {},
): Liveness {
  let worker: Worker | undefined;
  let ticker: NodeJS.Timeout | undefined;
  const liveness: Liveness = {
    onSuspect: undefined,
    async start() {
      const ticks = new SharedArrayBuffer(4);
      const tick = new Int32Array(ticks);
      // Coarse on purpose: it only has to show within mainHangMs that this thread still runs.
      ticker = setInterval(() => Atomics.add(tick, 0, 1), 100);
      const w = new Worker(new URL('./liveness-worker.mjs', import.meta.url), {
        workerData: {
          servers,
          hostId,
          connectionName,
          intervalMs: options.heartbeatIntervalMs ?? 5,
          // The confirmation probe (membership.ts, 5 ms) stands in for phi's
          // acceptable pause: the same false verdicts, as soon (bench/README.md, detector).
          detector: { acceptablePauseMs: 0, ...options.detector },
          minSilenceMs: options.minSilenceMs ?? 15,
          mainHangMs: options.mainHangMs ?? 1_000,
          ticks,
        },
        execArgv: [],
      });
      worker = w;
      await new Promise<void>((resolve, reject) => {
        w.once('error', reject);
        w.on('message', (m: FromWorker) => {
          if (m.type === 'ready') resolve();
          else if (m.type === 'suspect') liveness.onSuspect?.(m.id, m.at, m.confirmed, m.why);
        });
      });
    },
    watch(hosts) {
      worker?.postMessage({ type: 'watch', ids: [...hosts] });
    },
    setBeating(on) {
      worker?.postMessage({ type: 'fast', on });
    },
    setIncarnation(incarnation) {
      worker?.postMessage({ type: 'incarnation', value: incarnation });
    },
    setConnected(on) {
      worker?.postMessage({ type: 'connected', on });
    },
    setProbeTimeout(ms) {
      worker?.postMessage({ type: 'probe-timeout', ms });
    },
    async stop() {
      clearInterval(ticker);
      const w = worker;
      worker = undefined;
      if (!w) return;
      const stopped = new Promise<void>((resolve) => {
        w.on('message', (m: FromWorker) => m.type === 'stopped' && resolve());
        w.once('exit', () => resolve());
      });
      w.postMessage({ type: 'stop' });
      await Promise.race([stopped, new Promise((r) => setTimeout(r, 500).unref())]);
      await w.terminate();
    },
  };
  return liveness;
}
