import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import { findNatsServer } from '../../infra/index.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { until } from '../helpers/until.ts';
import { stopAll } from '../helpers/processes.ts';
import { assertOneLineError, DEMO_ACTORS, runCli } from './cli-helpers.ts';

/**
 * Start-up failures that need something on the network: each prints one line
 * that says what to do, exits 3, and leaves no process running (the run
 * must end by itself, within seconds).
 */

const SECRET = 'startup-errors-test-secret-0123456789abcdef';

/** A TCP server on a free loopback port; `silent` accepts and never answers (a black hole). */
async function listen(silent: boolean): Promise<{ port: number; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    if (!silent) socket.end();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (address === null || typeof address === 'string') throw new Error('no port');
  return {
    port: address.port,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('cli: start-up failures', function () {
  this.timeout(60_000);
  after(stopAll);

  describe('against a nats-server without JetStream (started without -js, as Debian runs it)', () => {
    let server: ChildProcess | undefined;
    const plain = { url: '' };
    before(async () => {
      const free = await listen(false);
      await free.close();
      server = spawn(findNatsServer(), ['-a', '127.0.0.1', '-p', String(free.port)], {
        stdio: 'ignore',
      });
      plain.url = `nats://127.0.0.1:${free.port}`;
      await until(
        () =>
          new Promise<boolean>((resolve) => {
            const s = tcpConnect(free.port, '127.0.0.1', () => {
              s.destroy();
              resolve(true);
            });
            s.on('error', () => resolve(false));
          }),
        { message: 'the plain nats-server to listen' },
      );
    });
    after(async () => {
      if (server && server.exitCode === null && server.signalCode === null) {
        const exited = once(server, 'exit');
        server.kill('SIGKILL');
        await exited;
      }
    });

    it('host says JetStream is missing and how to get it, exit 3', async () => {
      const run = await runCli(['host', '--nats', plain.url, '--actors', DEMO_ACTORS]);
      assertOneLineError(run, 3, /has no JetStream .*ftmesh nats prints a config/);
    });

    it('session list says the same', async () => {
      assertOneLineError(
        await runCli(['session', 'list', '--nats', plain.url]),
        3,
        /has no JetStream/,
      );
    });
  });

  describe('against a single JetStream server', () => {
    const nats = useNatsServer();

    it('host --replicas 3 explains that JetStream refuses R3 on one server', async () => {
      const run = await runCli([
        'host',
        '--nats',
        nats.url,
        '--replicas',
        '3',
        '--actors',
        DEMO_ACTORS,
      ]);
      assertOneLineError(run, 3, /--replicas 3 needs a JetStream cluster .*use --replicas 1/);
    });

    it('gateway on a port in use: said once, exit 3', async () => {
      const busy = await listen(false);
      try {
        const run = await runCli(
          ['gateway', '--nats', nats.url, '--port', String(busy.port), '--udp-port', 'off'],
          { env: { FTMESH_SECRET: SECRET } },
        );
        assertOneLineError(
          run,
          3,
          new RegExp(`--port ${busy.port} is in use on 127.0.0.1: pick another port`),
        );
      } finally {
        await busy.close();
      }
    });

    it('dev on a port in use fails before it starts anything', async () => {
      const busy = await listen(false);
      try {
        const run = await runCli(['dev', '--port', String(busy.port), '--nats', nats.url]);
        assertOneLineError(run, 3, new RegExp(`--port ${busy.port} is in use`));
      } finally {
        await busy.close();
      }
    });
  });

  it('a NATS URL where nothing listens: exit 3 at once', async () => {
    const gone = await listen(false);
    await gone.close();
    const run = await runCli(['status', '--nats', `nats://127.0.0.1:${gone.port}`]);
    assertOneLineError(run, 3, /cannot reach NATS at .* \(connection refused\)/);
  });

  it('a NATS URL that accepts and never answers: exit 3 within seconds, no hang', async () => {
    const hole = await listen(true);
    try {
      const run = await runCli([
        'host',
        '--nats',
        `nats://127.0.0.1:${hole.port}`,
        '--actors',
        DEMO_ACTORS,
      ]);
      assertOneLineError(run, 3, /cannot reach NATS at .*: start one with JetStream/);
      assert.ok(run.ms < 10_000, `gave up after ${run.ms} ms`);
    } finally {
      await hole.close();
    }
  });
});
