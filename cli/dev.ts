import { randomBytes } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { createServer } from 'node:net';
import { dirname } from 'node:path';
import { mintToken } from '../gateway/index.ts';
import { createClient, type MeshClient } from '../runtime/index.ts';
import { OptionCheck, parseCommand, secretOption } from './args.ts';
import { cliCommand } from './child-process.ts';
import { localNats, type LocalNats } from './demo-nats.ts';
import { Supervisor } from './dev-supervisor.ts';
import { FailureError, StartupError } from './errors.ts';
import type { Fleet } from './fleet.ts';
import { isScriptFile, loadActors } from './load-actors.ts';
import { listenForStop } from './stop-signal.ts';

/**
 * `ftmesh dev`: a local mesh for development, every part its own process
 * (fleet.ts), reloaded when the user's actor files change (dev-supervisor.ts:
 * hosts restart one at a time, each drained first and waited on until the
 * mesh sees it live and every session has a standby again, so sessions live
 * through a reload).
 */

const spec = {
  name: 'dev',
  options: {
    actors: { type: 'list' },
    nats: { type: 'string' },
    hosts: { type: 'string' },
    port: { type: 'string' },
    secret: { type: 'string' },
  },
} as const;

const DEFAULT_PORT = 8080;
const TOKEN_TTL_SECONDS = 24 * 3600;
/** Saves come in bursts (an editor writes, renames, touches): one reload per burst. */
const DEBOUNCE_MS = 250;

/** Fails now, before anything starts, when the gateway's port is taken. */
async function assertPortFree(port: number): Promise<void> {
  if (port === 0) return;
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        err.code === 'EADDRINUSE'
          ? new StartupError(
              `--port ${port} is in use on 127.0.0.1: pick another --port, or 0 for any free one`,
            )
          : new StartupError(`--port ${port}: ${err.message}`),
      ),
    );
    server.listen(port, '127.0.0.1', () => server.close(() => resolve()));
  });
}

/**
 * Watches `dirs` for changes of script files and calls `onChange` with their
 * names once a burst of saves is over. Returns the function that stops it.
 */
function watchDirectories(
  dirs: readonly string[],
  onChange: (names: string[]) => void,
): () => void {
  const watchers: FSWatcher[] = [];
  const changed = new Set<string>();
  let timer: NodeJS.Timeout | undefined;
  for (const dir of new Set(dirs)) {
    watchers.push(
      watch(dir, (_event, name) => {
        if (!name || !isScriptFile(name)) return;
        changed.add(name);
        clearTimeout(timer);
        timer = setTimeout(() => {
          const names = [...changed];
          changed.clear();
          onChange(names);
        }, DEBOUNCE_MS);
      }),
    );
  }
  return () => {
    clearTimeout(timer);
    for (const w of watchers) w.close();
  };
}

/** Prints what dev does on stdout, children's stderr on stderr. */
const say = (line: string) => console.log(`ftmesh dev: ${line}`);

/** Runs `ftmesh dev` until SIGINT or SIGTERM. */
export async function dev(argv: readonly string[]): Promise<void> {
  const { values } = parseCommand(spec, argv);
  const check = new OptionCheck(spec.name);
  const hostCount = values.hosts === undefined ? 3 : check.integer('hosts', values.hosts, 1, 9);
  const port = values.port === undefined ? DEFAULT_PORT : check.port('port', values.port);
  const secret =
    values.secret !== undefined || process.env['FTMESH_SECRET']
      ? secretOption(spec.name, values.secret)
      : randomBytes(32).toString('hex');
  const loaded = await loadActors(values.actors ?? []);
  await assertPortFree(port);

  const stop = listenForStop();
  let nats: LocalNats | undefined;
  let mesh: MeshClient | undefined;
  let fleet: Fleet | undefined;
  let unwatch = (): void => undefined;
  let stopping = false;
  try {
    nats = await localNats(values.nats);
    mesh = await createClient({
      nats: nats.url,
      onError: (err) => console.error(`[dev] ${err.name}: ${err.message}`),
    });
    const actorArgs = loaded.files.length ? ['--actors', ...loaded.files] : [];
    const supervisor = new Supervisor(
      mesh,
      hostCount,
      {
        nats: nats.url,
        mesh,
        // The dashboard's kill button crashes a host on request: dev's hosts allow it.
        hostArgs: [...actorArgs, '--allow-crash'],
        gatewayArgs: [...actorArgs, '--udp-port', '0', '--dashboard'],
        env: { FTMESH_SECRET: secret },
        // Once the whole mesh is going, what its hosts say about each other going is noise.
        onStderr: (name, line) => void (stopping || console.error(`[${name}] ${line}`)),
      },
      say,
      () => stopping,
    );
    fleet = supervisor.fleet;
    await supervisor.start(port);
    printBanner({
      nats,
      fleet: supervisor.fleet,
      actors: loaded.actors.map((a) => a.name),
      secret,
      secretGiven: values.secret !== undefined || Boolean(process.env['FTMESH_SECRET']),
      watched: loaded.files,
    });

    unwatch = watchDirectories(
      loaded.files.map((f) => dirname(f)),
      (names) => supervisor.reload(`${names.join(', ')} changed`),
    );

    const ended = await Promise.race([
      stop.requested.then((reason) => ({ reason })),
      nats.exited.then(() => ({ reason: 'nats-server exited' as const })),
    ]);
    stopping = true;
    if (ended.reason === 'nats-server exited')
      throw new FailureError(
        `nats-server (pid ${nats.pid}) exited: stopped everything; run ftmesh dev again`,
      );
    say(
      `${ended.reason}: stopping the gateway and ${hostCount} hosts${nats.pid ? ', then nats-server' : ''}`,
    );
  } finally {
    stopping = true;
    unwatch();
    await fleet?.stopAll();
    await mesh?.close();
    await nats?.stop();
    stop.dispose();
  }
  say('stopped');
}

/** What dev started and what to do with it: URLs, pids, tokens, next commands. */
function printBanner(o: {
  nats: LocalNats;
  fleet: Fleet;
  actors: readonly string[];
  secret: string;
  secretGiven: boolean;
  watched: readonly string[];
}): void {
  const gw = o.fleet.gateway!;
  const ftmesh = cliCommand();
  const token = (sub: string, extra: { sid?: string; actor?: string; role?: 'operator' }) =>
    mintToken({ secret: o.secret, sub, ttlSeconds: TOKEN_TTL_SECONDS, ...extra });
  const hosts = [...o.fleet.hosts.values()].sort((a, b) => a.id.localeCompare(b.id));
  const clientTokens = new Map(
    o.actors.map((actor) => [actor, token('dev-user', { sid: `${actor}-1`, actor })]),
  );
  const operatorToken = token('dev-operator', { role: 'operator' });
  const page = gw.url.replace(/^ws/, 'http');
  const game = clientTokens.get('game');
  const lines = [
    `ftmesh dev: a local mesh, every part its own process`,
    `  nats      ${o.nats.url}${o.nats.pid === undefined ? ' (given)' : ` (nats-server pid ${o.nats.pid})`}`,
    `  hosts     ${hosts.map((h) => `${h.id} (pid ${h.child.pid})`).join(', ')}`,
    `  actors    ${o.actors.join(', ')}`,
    `gateway ${gw.url} (pid ${gw.child.pid})`,
    `secret: ${o.secretGiven ? 'from --secret / FTMESH_SECRET' : 'random for this run (set FTMESH_SECRET to keep tokens valid across runs)'}`,
    `client tokens (24 h; the session opens on the first connect if it does not exist):`,
    ...[...clientTokens].map(
      ([actor, t]) => `client token for ${actor} (session ${actor}-1): ${t}`,
    ),
    `operator token: ${operatorToken}`,
    `dashboard:      ${page}/dashboard/#token=${operatorToken}`,
    `                (hosts, sessions, failover timelines; "kill primary" SIGKILLs a session's host)`,
    ...(game
      ? [
          `demo:           ${page}/demo/#token=${game}`,
          `                (the game room in the browser: arrow keys; kill its primary from the dashboard)`,
        ]
      : []),
    `connect:        connect(['${gw.url}'], { token }) with the SDK: import { connect } from 'ftmesh/client'`,
    `watch:          ${ftmesh} status --nats ${o.nats.url}`,
    `crash a host:   kill -9 ${hosts[0]?.child.pid ?? 'PID'} (dev starts it again; status shows the failover)`,
    `try a failover: ${ftmesh} demo failover   (its own nats-server, hosts and gateway, ~10 s)`,
    o.watched.length
      ? `reloads when a file changes next to: ${o.watched.join(', ')}`
      : `reloads nothing: the example actors run (pass --actors FILE to reload on change)`,
    `stop:           Ctrl-C`,
  ];
  for (const line of lines) console.log(line);
}
