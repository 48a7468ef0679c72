import { strict as assert } from 'node:assert';
import { createHost, type Host } from '../../runtime/index.ts';
import { exampleActors } from '../../actors/index.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { spawnNode, stopAll, type NodeProcess } from '../helpers/processes.ts';
import { until } from '../helpers/until.ts';
import { exactlyOnce, streamAdds } from '../helpers/stream.ts';

describe('failover: hosts as processes, killed and stopped on purpose', function () {
  const nats = useNatsServer();
  let client: Host;
  const procs = new Map<string, NodeProcess>();

  const startHosts = async (...ids: string[]) => {
    for (const id of ids)
      procs.set(id, spawnNode('cli/ftmesh.ts', ['host', '--nats', nats.url, '--id', id]));
    await Promise.all(
      ids.map((id) => procs.get(id)!.waitForLine(new RegExp(`^ready ${id}`), 20_000)),
    );
    await until(() => ids.every((id) => client.liveHosts().includes(id)), {
      message: `hosts ${ids.join(', ')} heard`,
    });
  };
  const value = async (hostId: string, sid: string) => {
    const i = await client.inspect(hostId, sid);
    return { seq: i.info.seq, hash: i.hash, role: i.info.role, epoch: i.info.epoch, i };
  };

  before(async () => {
    // The test's own host is a client: capacity 0, it never serves a session.
    client = await createHost({
      nats: nats.url,
      actors: exampleActors,
      hostId: 'client',
      capacity: 0,
      onError: () => {},
    });
  });
  after(async () => {
    await client?.close();
    await stopAll();
  });

  it('SIGKILL of the primary under a request stream: the standby takes over, nothing lost or doubled, and a second failover right after works', async () => {
    await startHosts('k1', 'k2', 'k3', 'k4');
    await client.placeSession('counter', 'kill', { primary: 'k1', standby: 'k2' });
    let killed = false;
    let second = false;
    const result = await streamAdds(client, 'kill', 900, {
      onReply: (n) => {
        if (n === 200 && !killed) {
          killed = true;
          procs.get('k1')!.signal('SIGKILL');
        }
        if (n === 600 && !second) {
          second = true;
          // The new primary must have been re-protected by now for this to succeed.
          const owner = client.owner('kill');
          assert.ok(owner?.standby, 'a standby again before the second kill');
          procs.get(owner.primary)!.signal('SIGKILL');
        }
      },
    });
    assert.deepEqual(exactlyOnce(result.replies), { lost: [], doubled: [] });
    const owner = client.owner('kill')!;
    assert.equal(owner.epoch, 3, 'two failovers, one epoch each');
    assert.notEqual(owner.primary, 'k1');
    const primary = await value(owner.primary, 'kill');
    assert.equal(primary.role, 'primary');
    const last = primary.i.failovers.at(-1)!;
    assert.ok(['advisory', 'heartbeat'].includes(last.cause), last.cause);
    assert.ok(last.firstReplyAt! >= last.promotedAt! && last.promotedAt! >= last.detectedAt);
    await until(async () => (await value(owner.standby, 'kill')).seq === primary.seq);
    assert.equal((await value(owner.standby, 'kill')).hash, primary.hash);
    assert.equal(
      await client.request('kill', 'get'),
      900,
      'the state the acknowledged replies imply',
    );
  });
});
