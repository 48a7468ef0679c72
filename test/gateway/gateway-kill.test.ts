import { strict as assert } from 'node:assert';
import { connect, mintToken, type ConnectionEvent } from '../../gateway/index.ts';
import type { MeshClient } from '../../runtime/index.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { spawnNode, stopAll, useProcessesPerTest, createTestClient } from '../helpers/processes.ts';
import { exactlyOnce } from '../helpers/stream.ts';
import { until } from '../helpers/until.ts';

const secret = 'gateway-kill-test-secret-0123456789abcdef';

describe('gateway: a gateway killed mid-stream', function () {
  const nats = useNatsServer();
  let client: MeshClient;
  const procs = useProcessesPerTest();

  /** Starts `ftmesh gateway` and resolves with its WebSocket URL (from its ready line). */
  const startGateway = async (id: string): Promise<string> => {
    const p = spawnNode('cli/ftmesh.ts', ['gateway', '--nats', nats.url, '--id', id], {
      env: { FTMESH_SECRET: secret },
    });
    procs.set(id, p);
    const line = await p.waitForLine(new RegExp(`^ready gateway ${id} `), 20_000);
    return line.split(' ')[3]!;
  };

  before(async () => {
    client = await createTestClient(nats.url);
  });
  after(async () => {
    await client?.close();
    await stopAll();
  });

  it('SIGKILL of the gateway under a request stream: the SDK reconnects to the second gateway, re-sends under the same ids, nothing acknowledged is lost or applied twice', async () => {
    for (const id of ['gk1', 'gk2'])
      procs.set(id, spawnNode('cli/ftmesh.ts', ['host', '--nats', nats.url, '--id', id]));
    const [urlA, urlB] = await Promise.all([startGateway('gk-gw-a'), startGateway('gk-gw-b')]);
    await Promise.all(
      ['gk1', 'gk2'].map((id) => procs.get(id)!.waitForLine(new RegExp(`^ready ${id}`), 20_000)),
    );
    await until(() => ['gk1', 'gk2'].every((id) => client.liveHosts().includes(id)));
    await client.placeSession('counter', 'gk', { primary: 'gk1', standby: 'gk2' });

    const changes: (ConnectionEvent & { at: number })[] = [];
    const session = await connect([urlA, urlB], {
      token: mintToken({ secret, sub: 'streamer', sid: 'gk' }),
      onConnectionChange: (e) => changes.push({ ...e, at: performance.now() }),
    });
    try {
      assert.equal(session.gateway, 'gk-gw-a');
      const total = 400;
      const replies = new Array<number>(total);
      let answered = 0;
      let next = 0;
      let killedAt = 0;
      const worker = async () => {
        for (let i = next++; i < total; i = next++) {
          replies[i] = await session.request<number>('add', 1);
          if (++answered === 150) {
            killedAt = performance.now();
            procs.get('gk-gw-a')!.signal('SIGKILL');
          }
        }
      };
      await Promise.all(Array.from({ length: 8 }, worker));
      assert.deepEqual(exactlyOnce(replies), { lost: [], doubled: [] });
      assert.equal(await session.request('get'), total, 'the state the replies imply');
      assert.equal(session.reconnects, 1);
      assert.equal(session.gateway, 'gk-gw-b');
      assert.deepEqual(
        changes.map((c) => c.type),
        ['connected', 'disconnected', 'connected'],
      );
      console.log(
        `      connection lost ${(changes[1]!.at - killedAt).toFixed(1)} ms after the kill, ` +
          `welcomed by gk-gw-b ${(changes[2]!.at - killedAt).toFixed(1)} ms after it; ` +
          `${session.resent} requests re-sent under their ids`,
      );
    } finally {
      await session.close();
    }
  });
});
