import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { connectNats } from '../../runtime/index.ts';
import { findNatsServer } from '../../infra/index.ts';
import { stopAll } from '../helpers/processes.ts';
import { until } from '../helpers/until.ts';
import { DEMO_ACTORS, runCli, startCli, useTempDir } from './cli-helpers.ts';

/**
 * `ftmesh nats`: the config it prints is one a nats-server starts with, and
 * one a host runs on without a warning (JetStream on, disconnect advisories
 * delivered).
 */

/** Two ports that were free a moment ago. */
async function freePorts(): Promise<[number, number]> {
  const servers = [createServer(), createServer()];
  await Promise.all(
    servers.map((s) => new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return [ports[0]!, ports[1]!];
}

describe('cli: ftmesh nats', function () {
  this.timeout(60_000);
  const tmp = useTempDir('cli-nats');
  let server: ChildProcess | undefined;
  after(async () => {
    await stopAll();
    if (server && server.exitCode === null && server.signalCode === null) {
      const exited = once(server, 'exit');
      server.kill('SIGKILL');
      await exited;
    }
  });

  it('prints a commented config with JetStream and the advisory import, and the command to start it', async () => {
    const run = await runCli(['nats']);
    assert.equal(run.code, 0, run.stderr.join('\n'));
    const text = run.stdout.join('\n');
    assert.match(text, /^# Start it with: {2}nats-server -c ftmesh-nats\.conf$/m);
    assert.match(text, /^jetstream \{\n(?:\s*#.*\n)?\s*enabled: true$/m);
    assert.match(
      text,
      /imports: \[\{ stream: \{ account: SYS, subject: "\$SYS\.ACCOUNT\.APP\.>" \} \}\]/,
    );
    assert.match(text, /^no_auth_user: app$/m);
    assert.ok(!text.includes('{{'), 'every placeholder filled');
  });

  it('--cluster --node 2 routes to the two other nodes', async () => {
    const run = await runCli(['nats', '--cluster', '--node', '2']);
    assert.equal(run.code, 0, run.stderr.join('\n'));
    const text = run.stdout.join('\n');
    assert.match(text, /^server_name: "ftm-n2"$/m);
    assert.match(
      text,
      /routes: \["nats-route:\/\/127\.0\.0\.1:6222", "nats-route:\/\/127\.0\.0\.1:6224"\]/,
    );
    assert.match(text, /--replicas 3/);
  });

  it('--out writes a config that nats-server runs and a host joins without a warning', async () => {
    const [port, httpPort] = await freePorts();
    const file = join(tmp.path, 'ftmesh-nats.conf');
    const run = await runCli([
      'nats',
      '--out',
      file,
      '--port',
      String(port),
      '--http-port',
      String(httpPort),
      '--store',
      join(tmp.path, 'js'),
    ]);
    assert.equal(run.code, 0, run.stderr.join('\n'));
    assert.deepEqual(run.stdout.slice(0, 2), [
      `wrote ${file}`,
      `Start it with:  nats-server -c ${file}`,
    ]);
    assert.match(await readFile(file, 'utf8'), new RegExp(`listen: "127\\.0\\.0\\.1:${port}"`));

    server = spawn(findNatsServer(), ['-c', file], { stdio: 'ignore' });
    const url = `nats://127.0.0.1:${port}`;
    await until(
      async () => (await connectNats(url, { reconnect: false })).close().then(() => true),
      {
        timeoutMs: 10_000,
        message: 'the configured nats-server to answer',
      },
    );
    const host = startCli(['host', '--nats', url, '--id', 'nc1', '--actors', DEMO_ACTORS]);
    await host.waitForLine(/^ready nc1$/, 30_000);
    host.signal('SIGTERM');
    const exit = await host.exited;
    assert.equal(exit.code, 0);
    assert.deepEqual(
      host.stderr.filter((l) => l.trim()),
      [],
      'no warning: advisories arrive',
    );
  });
});
