import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, openSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { request } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { NatsServerStartError } from './errors.ts';
import { forgetPid, removeTempDir, trackPid } from './process-registry.ts';

/** A running (or exited) nats-server process started by the launcher. */
export interface NatsServerHandle {
  /** Client URL, e.g. `nats://127.0.0.1:41234`; lands in the APP account without credentials. */
  readonly url: string;
  readonly port: number;
  readonly pid: number;
  /** HTTP monitoring base URL, e.g. `http://127.0.0.1:41235` (`/healthz`, `/varz`, `/jsz`). */
  readonly monitorUrl: string;
  /** The server's directory: its config, `nats-server.log` and JetStream store. */
  readonly dir: string;
  /** The configured `server_name` (what JetStream reports as stream and meta leaders). */
  readonly name: string;
  /**
   * Stops the server: SIGTERM (and SIGCONT, so a SIGSTOPped server can act on it), SIGKILL if it
   * has not exited within 5 s, then removes its directory unless a cluster owns it. Resolves once
   * the process is gone. Safe to call any number of times; later calls return the same promise.
   */
  stop(): Promise<void>;
  /** Sends `signal` to the server if it is still running (SIGKILL, SIGSTOP, SIGCONT for chaos tests). */
  kill(signal: NodeJS.Signals): void;
  /** Resolves with the exit code, or null if a signal ended the process. Never rejects. */
  readonly exited: Promise<number | null>;
  /** Same as {@link NatsServerHandle.stop}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void>;
}

/** Everything needed to (re)start one server process from a config already written to disk. */
export interface ServerSpec {
  readonly bin: string;
  readonly name: string;
  readonly port: number;
  readonly httpPort: number;
  readonly dir: string;
  readonly configPath: string;
  /** Where stdout and stderr go (appended); undefined discards them. */
  readonly logPath: string | undefined;
  /** Whether stop() removes `dir`; false when a cluster owns it and may restart the node. */
  readonly ownsDir: boolean;
}

/** A spawned server plus what only the launcher needs. */
export interface ServerProcess {
  readonly handle: NatsServerHandle;
  /**
   * Polls `GET /healthz` until it answers 200. Rejects with NatsServerStartError (log tail, exit
   * code) if the process exits first or the deadline passes. Does not stop the process.
   */
  waitUntilHealthy(timeoutMs: number): Promise<void>;
}

const STOP_TIMEOUT_MS = 5_000;
const HEALTH_PROBE_TIMEOUT_MS = 1_000;
/** Poll interval starts small (a single server is ready in a few ms) and backs off to this. */
const MAX_POLL_INTERVAL_MS = 50;
const LOG_TAIL_BYTES = 65_536;
const LOG_TAIL_LINES = 25;

/** Resolves true if `promise` settles within `ms`, false otherwise; leaves no timer behind. */
export async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  const timer = new AbortController();
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => true,
      ),
      sleep(ms, false, { signal: timer.signal }),
    ]);
  } finally {
    timer.abort();
  }
}

/** Last lines of a log file (minus health-check noise), for error messages; never throws. */
export async function readLogTail(logPath: string | undefined): Promise<string> {
  if (logPath === undefined) return '';
  try {
    const file = await open(logPath, 'r');
    try {
      const { size } = await file.stat();
      const length = Math.min(size, LOG_TAIL_BYTES);
      const buffer = Buffer.alloc(length);
      await file.read(buffer, 0, length, size - length);
      return (
        buffer
          .toString('utf8')
          .split('\n')
          // Our own /healthz polls log a warning each; they would push the real error out.
          .filter((line) => line.trim() !== '' && !line.includes('Healthcheck failed'))
          .slice(-LOG_TAIL_LINES)
          .join('\n')
      );
    } finally {
      await file.close();
    }
  } catch (error) {
    return `(could not read ${logPath}: ${(error as Error).message})`;
  }
}

/** One GET /healthz; resolves with ok or a one-line description of what came back. */
function probeHealth(httpPort: number): Promise<{ ok: boolean; detail: string }> {
  return new Promise((resolve) => {
    // agent: false, so no keep-alive socket outlives the probe and holds the event loop open.
    const req = request(
      {
        host: '127.0.0.1',
        port: httpPort,
        path: '/healthz',
        agent: false,
        timeout: HEALTH_PROBE_TIMEOUT_MS,
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () =>
          resolve({ ok: res.statusCode === 200, detail: `HTTP ${res.statusCode}: ${body.trim()}` }),
        );
        res.on('error', (error) => resolve({ ok: false, detail: error.message }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('/healthz did not answer in time')));
    req.on('error', (error) => resolve({ ok: false, detail: error.message }));
    req.end();
  });
}

/**
 * Spawns nats-server with the spec's config. Resolves as soon as the process exists (not when it
 * is ready: see {@link ServerProcess.waitUntilHealthy}); rejects with NatsServerStartError if the
 * binary cannot be executed at all.
 */
export async function spawnServer(spec: ServerSpec): Promise<ServerProcess> {
  // The child writes straight into the log file, so its output survives our own crash and needs
  // no pipe to drain; the parent's copy of the descriptor is closed once the child has it.
  const output = spec.logPath === undefined ? 'ignore' : openSync(spec.logPath, 'a');
  let child;
  try {
    child = spawn(spec.bin, ['-c', spec.configPath], { stdio: ['ignore', output, output] });
  } finally {
    if (typeof output === 'number') closeSync(output);
  }
  const pid = child.pid;
  if (pid === undefined) {
    const [cause] = (await once(child, 'error')) as [Error];
    throw new NatsServerStartError(
      `could not run ${spec.bin}: ${cause.message}`,
      { logTail: '' },
      { cause },
    );
  }
  trackPid(pid);

  let exitCode: number | null | undefined; // undefined while the process runs
  const exited = new Promise<number | null>((resolve) => {
    child.once('exit', (code) => {
      exitCode = code;
      forgetPid(pid);
      resolve(code);
    });
  });

  const kill = (signal: NodeJS.Signals): void => {
    if (exitCode !== undefined) return;
    try {
      process.kill(pid, signal);
    } catch (error) {
      // ESRCH: it died and the exit event is on its way; anything else is a real problem.
      if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
    }
  };

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      if (exitCode === undefined) {
        kill('SIGTERM');
        kill('SIGCONT');
        if (!(await settlesWithin(exited, STOP_TIMEOUT_MS))) kill('SIGKILL');
        await exited;
      }
      if (spec.ownsDir) await removeTempDir(spec.dir);
    })());

  const handle: NatsServerHandle = {
    url: `nats://127.0.0.1:${spec.port}`,
    port: spec.port,
    pid,
    monitorUrl: `http://127.0.0.1:${spec.httpPort}`,
    dir: spec.dir,
    name: spec.name,
    stop,
    kill,
    exited,
    [Symbol.asyncDispose]: stop,
  };

  const fail = async (reason: string): Promise<never> => {
    throw new NatsServerStartError(reason, {
      exitCode,
      logTail: await readLogTail(spec.logPath),
      logPath: spec.logPath,
    });
  };

  const waitUntilHealthy = async (timeoutMs: number): Promise<void> => {
    const deadline = Date.now() + timeoutMs;
    let interval = 2;
    for (;;) {
      if (exitCode !== undefined) {
        return fail(`${spec.name} (pid ${pid}) exited with ${exitCode ?? 'a signal'}`);
      }
      const probe = await probeHealth(spec.httpPort);
      if (probe.ok) return;
      const left = deadline - Date.now();
      if (left <= 0) {
        return fail(
          `${spec.name} not healthy within ${timeoutMs} ms (last /healthz: ${probe.detail})`,
        );
      }
      // Wakes early when the process dies, so a bad config fails in milliseconds.
      await settlesWithin(exited, Math.min(interval, left));
      interval = Math.min(interval * 2, MAX_POLL_INTERVAL_MS);
    }
  };

  return { handle, waitUntilHealthy };
}
