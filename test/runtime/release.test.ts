import { strict as assert } from 'node:assert';
import { createHost, type Host } from '../../runtime/index.ts';
import { exampleActors } from '../../actors/index.ts';
import { useNatsServer, quietDetection } from '../helpers/nats.ts';
import { spawnNode, stopAll } from '../helpers/processes.ts';
import { until } from '../helpers/until.ts';

describe('reply release in standby mode', function () {
  const nats = useNatsServer();
  let primary: Host;

  after(async () => {
    await primary?.close();
    await stopAll();
  });

  it('holds a reply while the standby process is stopped, releases it after SIGCONT', async () => {
    const standby = spawnNode('cli/ftmesh.ts', ['host', '--nats', nats.url, '--id', 'stalled']);
    await standby.waitForLine(/^ready stalled/, 20_000);
    // failover off: this test is about the release rule, not about replacing a hung standby.
    primary = await createHost({
      ...quietDetection,
      nats: nats.url,
      actors: exampleActors,
      hostId: 'live',
      failover: false,
    });
    await primary.openSession('counter', 'stall', { standby: 'stalled' });
    assert.equal(await primary.request('stall', 'add', 1), 1);

    standby.signal('SIGSTOP');
    const client = primary.client('stall');
    let released = false;
    const reply = client.request('add', 41, { timeoutMs: 30_000 }).then((v) => {
      released = true;
      return v;
    });
    // The primary committed seq 2 and its reply reached the client, which holds it.
    await until(() => primary.info('stall')?.seq === 2 && client.heldCount() === 1);
    assert.equal(released, false, 'a reply was released before the standby acknowledged it');

    standby.signal('SIGCONT');
    assert.equal(await reply, 42);
    assert.equal(client.heldCount(), 0);
  });
});
