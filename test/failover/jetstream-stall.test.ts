import { strict as assert } from 'node:assert';
import { jetstreamManager } from '@nats-io/jetstream';
import {
  connectNats,
  createClient,
  createHost,
  type FtmError,
  type MeshClient,
} from '../../runtime/index.ts';
import { exampleActors } from '../../actors/index.ts';
import { useNatsCluster } from '../helpers/nats.ts';
import { spawnNode, type NodeProcess } from '../helpers/processes.ts';
import { until } from '../helpers/until.ts';
import { useOutputMonitors } from '../helpers/output-monitor.ts';

/**
 * A machine that runs both a NATS node and a host can die whole. When that
 * node led the log stream, JetStream writes to the log stall for 5-8 s until
 * an election (NATS-FACTS). Promotion waits only on the verdict and the
 * ownership CAS (the two KV buckets, led elsewhere) and the first replies are
 * released by the new standby, not the log: the session answers long before
 * the log is back.
 */
describe('a NATS node and the primary host die together', function () {
  const nats = useNatsCluster();
  // Connected to every node: the monitor sees the output through the node's death.
  const watchOutput = useOutputMonitors(() => nats.urls.join(','));
  const procs: NodeProcess[] = [];
  let client: MeshClient | undefined;
  afterEach(function () {
    if (this.currentTest?.state === 'failed')
      for (const p of procs)
        console.log(`--- pid ${p.pid} stderr ---\n${p.stderr.slice(-15).join('\n')}`);
  });
  after(async () => {
    await client?.close();
    for (const p of procs) p.signal('SIGKILL');
    await Promise.all(procs.map((p) => p.exited));
  });

  it('the standby answers before the log stream has a leader again', async () => {
    // The test's own parts see the NATS node die: their errors are expected, and printed.
    const errors: FtmError[] = [];
    // The streams and buckets exist (R3) once a host has started.
    const setup = await createHost({
      nats: nats.url,
      actors: exampleActors,
      hostId: 'js-setup',
      capacity: 0,
      jetstreamReplicas: 3,
      onError: (err) => errors.push(err),
    });
    await setup.close();
    const nc = await connectNats(nats.urls.join(','));
    try {
      const jsm = await jetstreamManager(nc);
      const leaderOf = async (stream: string) =>
        (await jsm.streams.info(stream)).cluster?.leader ?? '';
      // Move the log's leadership off the nodes that lead the two buckets.
      const bucketLeaders = async () =>
        new Set([await leaderOf('KV_ftm-owners'), await leaderOf('KV_ftm-hosts')]);
      // Three nodes: the buckets must share a leader for the log to have one of its own.
      for (let i = 0; i < 10 && (await bucketLeaders()).size > 1; i++) {
        await nc.request('$JS.API.STREAM.LEADER.STEPDOWN.KV_ftm-hosts', undefined, {
          timeout: 5_000,
        });
        await until(async () => (await leaderOf('KV_ftm-hosts').catch(() => '')) !== '', {
          timeoutMs: 15_000,
        });
      }
      for (let i = 0; i < 20 && (await bucketLeaders()).has(await leaderOf('FTM_LOG')); i++) {
        await nc.request('$JS.API.STREAM.LEADER.STEPDOWN.FTM_LOG', undefined, { timeout: 5_000 });
        await until(async () => (await leaderOf('FTM_LOG').catch(() => '')) !== '', {
          timeoutMs: 15_000,
        });
      }
      const logLeader = await leaderOf('FTM_LOG');
      assert.ok(!(await bucketLeaders()).has(logLeader), 'the log led apart from the buckets');
      const doomed = nats.cluster.nodes.findIndex((n) => n.name === logLeader);
      assert.ok(doomed >= 0, `node ${logLeader} found`);
      const survivors = nats.urls.filter((_, i) => i !== doomed).join(',');

      for (const id of ['j1', 'j2', 'j3']) {
        procs.push(
          spawnNode('cli/ftmesh.ts', ['host', '--nats', survivors, '--id', id, '--replicas', '3']),
        );
      }
      await Promise.all(procs.map((p, i) => p.waitForLine(new RegExp(`^ready j${i + 1}`), 20_000)));
      client = await createClient({
        nats: survivors,
        jetstreamReplicas: 3,
        onError: (err) => errors.push(err),
      });
      await until(() => ['j1', 'j2', 'j3'].every((id) => client!.liveHosts().includes(id)));
      await client.placeSession('counter', 'js', { primary: 'j1', standby: 'j2' });
      await watchOutput('js');
      for (let i = 0; i < 50; i++) await client.request('js', 'add', 1);

      nats.cluster.nodes[doomed]!.kill('SIGKILL');
      procs[0]!.signal('SIGKILL');
      // The next request must be served by the new primary, not by j1 in its last
      // milliseconds. Asked of the hosts over core NATS: the client's view of the
      // ownership bucket comes through a JetStream consumer, which may be re-created
      // while the cluster elects its new meta leader.
      const tookOver = async (id: string) =>
        (await client!.failoversOf(id).catch(() => [])).some(
          (f) => f.sid === 'js' && f.from === 'j1',
        );
      await until(async () => (await tookOver('j2')) || (await tookOver('j3')), {
        timeoutMs: 30_000,
        message: 'a new primary took over from j1',
      });
      const value = await client
        .request('js', 'add', 1, { timeoutMs: 30_000 })
        .catch(async (err: unknown) => {
          console.log('owner', JSON.stringify(client!.owner('js')), 'live', client!.liveHosts());
          for (const id of ['j2', 'j3'])
            console.log(
              id,
              JSON.stringify(await client!.failoversOf(id).catch((e: Error) => e.message)),
            );
          throw err;
        });
      const repliedAt = performance.now();
      assert.equal(value, 51);
      await until(async () => (await leaderOf('FTM_LOG').catch(() => '')) !== '', {
        timeoutMs: 30_000,
        message: 'the log stream elects a new leader',
      });
      const logBackAt = performance.now();
      console.log(
        `      reply ${(logBackAt - repliedAt).toFixed(0)} ms before the log stream had a leader again`,
      );
      assert.ok(repliedAt < logBackAt, 'the reply did not wait for the log');
      if (errors.length)
        console.log(`      the test's client reported: ${errors.map((e) => e.message).join('; ')}`);
    } finally {
      await nc.close();
    }
  });
});
