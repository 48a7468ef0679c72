import { strict as assert } from 'node:assert';
import { createHost, type Host } from '../../runtime/index.ts';
import { exampleActors } from '../../actors/index.ts';
import { useNatsServer, quietDetection } from '../helpers/nats.ts';
import { until } from '../helpers/until.ts';
import { collectErrors, type ExpectedError } from '../helpers/errors.ts';

/** What the runtime may report here, and why. */
const expectedErrors: ExpectedError[] = [];

describe('the durable log', function () {
  const reported = collectErrors();
  afterEach(() => reported.assertNone(expectedErrors));
  const nats = useNatsServer();
  const hosts: Host[] = [];
  const dropped = new Set<number>();

  after(async () => {
    for (const h of hosts) await h.close();
  });

  const host = async (
    hostId: string,
    extra: Parameters<typeof createHost>[0] extends infer O ? Partial<O> : never = {},
  ) => {
    const h = await createHost({
      ...quietDetection,
      nats: nats.url,
      actors: exampleActors,
      hostId,
      onError: reported.onError,
      // The restores here are manual: no host takes over on its own.
      failover: false,
      ...extra,
    });
    hosts.push(h);
    return h;
  };

  it('fills a dropped commit from the log and the standby ends equal', async () => {
    const a = await host('log-a');
    const b = await host('log-b', {
      dropAtStandby: (sid, seq) =>
        sid === 'gap' && seq === 5 && !dropped.has(seq) && dropped.add(seq) !== undefined,
    });
    await a.openSession('counter', 'gap', { standby: 'log-b' });
    // Concurrent: a dropped commit is noticed when the next one arrives (see the closing note).
    const replies = await Promise.all(Array.from({ length: 10 }, () => a.request('gap', 'add', 1)));
    assert.deepEqual(
      [...replies].sort((x, y) => Number(x) - Number(y)),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    );
    await until(() => b.info('gap')?.seq === 10, { message: 'standby fills seq 5 from the log' });
    assert.ok(dropped.has(5), 'the fault was injected');
    assert.equal(b.hash('gap'), a.hash('gap'));
  });

  it('a cold restore from snapshot + log equals the live state, and the log is purged up to the snapshot', async () => {
    const a = await host('cold-a');
    const b = await host('cold-b');
    await a.openSession('counter', 'cold', { standby: 'cold-b' });
    for (let i = 0; i < 150; i++) await a.request('cold', 'add', i);
    const snapSeq = await a.snapshotNow('cold');
    assert.equal(snapSeq, 150);
    for (let i = 0; i < 75; i++) await a.request('cold', 'add', 1000 + i);
    await a.flushLog('cold');
    const live = a.hash('cold');

    const c = await host('cold-c');
    const durable = await c.readDurable('counter', 'cold');
    assert.equal(durable.seq, 225);
    assert.equal(durable.logged, 75, 'only the commits after the snapshot are read from the log');
    await a.close();
    await b.close();

    const d = await host('cold-d');
    await c.restoreSession('counter', 'cold', { standby: 'cold-d' });
    assert.equal(c.hash('cold'), live);
    assert.equal(c.info('cold')?.epoch, 2);
    assert.equal(await c.request('cold', 'add', 0), (c.state('cold') as { value: number }).value);
    await until(() => d.info('cold')?.seq === 226);
    assert.equal(d.hash('cold'), c.hash('cold'));
  });

  it('snapshots also by bytes: commits beyond snapshotEveryBytes trigger one and purge the log', async () => {
    const a = await host('bytes-a', { snapshotEvery: 1_000_000, snapshotEveryBytes: 4_000 });
    await host('bytes-b');
    await a.openSession('counter', 'bytes', { standby: 'bytes-b' });
    for (let i = 0; i < 200; i++) await a.request('bytes', 'add', i);
    await a.flushLog('bytes');
    const durable = await a.readDurable('counter', 'bytes');
    assert.equal(durable.seq, 200);
    assert.ok(
      durable.logged < 200,
      `a snapshot covers part of the log (${durable.logged} logged after it)`,
    );
    assert.equal(JSON.stringify(durable.state), JSON.stringify(a.state('bytes')));
  });
});
