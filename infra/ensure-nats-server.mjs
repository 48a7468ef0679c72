#!/usr/bin/env node
// Makes sure a nats-server binary is available before `npm test` / `npm start` (pretest and
// prestart hooks). Plain Node ESM with no dependencies: it must run before anything is built.
//
// Found: exit 0 silently (FTM_VERBOSE=1 prints the path and version).
// Missing, on a Debian-like machine and running as root: installs Debian's package, re-checks.
// Otherwise: exit 1 with the command that installs it.
//
// The lookup repeats infra/find-nats-server.ts (keep them in step): NATS_SERVER_BIN if set
// (authoritative), then PATH, then /usr/sbin/nats-server, then /usr/local/bin/nats-server.
// Note: Debian's package also enables a systemd service on 127.0.0.1:4222. ftmesh never relies
// on that port; the launcher starts its own servers on free ports.
import { spawnSync } from 'node:child_process';
import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';

const WELL_KNOWN_PATHS = ['/usr/sbin/nats-server', '/usr/local/bin/nats-server'];
const INSTALL_HINT =
  'install it with: sudo apt-get install nats-server (Debian/Ubuntu), brew install nats-server (macOS), ' +
  'or download from the NATS releases page; or set NATS_SERVER_BIN=/path/to/nats-server';

function isExecutableFile(path) {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

function onPath(name) {
  return (process.env.PATH ?? '')
    .split(delimiter)
    .filter((dir) => dir !== '')
    .map((dir) => join(dir, name));
}

function findNatsServer() {
  return [...onPath('nats-server'), ...WELL_KNOWN_PATHS].find(isExecutableFile);
}

function found(path) {
  if (process.env.FTM_VERBOSE) {
    const version = spawnSync(path, ['--version'], { encoding: 'utf8' });
    console.log(`nats-server: ${path} (${(version.stdout ?? '').trim() || 'version unknown'})`);
  }
  process.exit(0);
}

function run(command, args) {
  const result = spawnSync(command, args, {
    stdio: 'inherit',
    env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' },
  });
  return result.status === 0;
}

const fromEnv = process.env.NATS_SERVER_BIN;
if (fromEnv) {
  // An explicit choice is never replaced by another binary behind the user's back.
  if (isExecutableFile(fromEnv)) found(fromEnv);
  console.error(`NATS_SERVER_BIN=${fromEnv} is not an executable file: fix or unset it.`);
  console.error(`nats-server not found: ${INSTALL_HINT}`);
  process.exit(1);
}

const existing = findNatsServer();
if (existing) found(existing);

const aptGet = [...onPath('apt-get'), '/usr/bin/apt-get'].find(isExecutableFile);
if (aptGet && process.getuid?.() === 0) {
  console.log(
    "nats-server not found: installing Debian's package with apt-get update && apt-get install -y nats-server",
  );
  // A fresh machine has no package lists, so the update is needed before the install.
  if (run(aptGet, ['update']) && run(aptGet, ['install', '-y', 'nats-server'])) {
    const installed = findNatsServer();
    if (installed) found(installed);
  }
  console.error(`nats-server is still missing after apt-get; ${INSTALL_HINT}`);
  process.exit(1);
}

console.error(`nats-server not found: ${INSTALL_HINT}`);
process.exit(1);
