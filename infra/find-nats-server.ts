import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { NatsServerNotFoundError } from './errors.ts';

/** Where Debian/Ubuntu and Homebrew/manual installs put the binary, tried after PATH. */
const WELL_KNOWN_PATHS = ['/usr/sbin/nats-server', '/usr/local/bin/nats-server'] as const;

// Keep in step with infra/ensure-nats-server.mjs, which repeats this lookup without TypeScript.
function isExecutableFile(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Finds the nats-server binary: `NATS_SERVER_BIN` if set (authoritative: a wrong value is an
 * error, never silently replaced by another binary), else the first `nats-server` on `PATH`,
 * else /usr/sbin/nats-server, then /usr/local/bin/nats-server.
 *
 * @returns the absolute path of an executable file.
 * @throws NatsServerNotFoundError naming what was tried and how to fix it.
 */
export function findNatsServer(): string {
  const fromEnv = process.env['NATS_SERVER_BIN'];
  if (fromEnv !== undefined && fromEnv !== '') {
    if (isExecutableFile(fromEnv)) return fromEnv;
    throw new NatsServerNotFoundError(`NATS_SERVER_BIN=${fromEnv} is not an executable file`, [
      fromEnv,
    ]);
  }
  const candidates = (process.env['PATH'] ?? '')
    .split(delimiter)
    .filter((dir) => dir !== '')
    .map((dir) => join(dir, 'nats-server'));
  candidates.push(...WELL_KNOWN_PATHS);
  const found = candidates.find(isExecutableFile);
  if (found !== undefined) return found;
  throw new NatsServerNotFoundError('not on PATH, /usr/sbin or /usr/local/bin', candidates);
}
