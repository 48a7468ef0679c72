import { strict as assert } from 'node:assert';
import { createHost, SessionNotFoundError, type Host } from '../../runtime/index.ts';
import { exampleActors } from '../../actors/index.ts';
import { useNatsServer, quietDetection } from '../helpers/nats.ts';
import { until } from '../helpers/until.ts';
import { collectErrors } from '../helpers/errors.ts';

describe('closing a session', function () {
  const reported = collectErrors();
  afterEach(() => reported.assertNone());
  const nats = useNatsServer();
  const hosts: Host[] = [];
  after(async () => {
    for (const h of hosts) await h.close();
  });
  const host = async (hostId: string) => {
    const h = await createHost({
      ...quietDetection,
      nats: nats.url,
      actors: exampleActors,
      hostId,
      onError: reported.onError,
    });
    hosts.push(h);
    return h;
  };

  it('ends it everywhere: the record closed, both copies gone, log and snapshot deleted; a reopen starts anew in the next epoch', async () => {
    const a = await host('cl-a');
    const b = await host('cl-b');
    await a.openSession('counter', 'cl', { standby: 'cl-b' });
    for (let i = 1; i <= 5; i++) assert.equal(await a.request('cl', 'add', 1), i);
    await a.snapshotNow('cl');
    await a.request('cl', 'add', 1);
    await a.flushLog('cl');
    assert.equal((await a.readDurable('counter', 'cl')).logged, 1, 'a commit after the snapshot');

    await b.closeSession('cl'); // from any host (or client): the primary does it
    const record = await a.fetchOwner('cl');
    assert.deepEqual(record, {
      actor: 'counter',
      primary: '',
      standby: '',
      epoch: 1,
      term: 0,
      closed: true,
    });
    assert.equal(a.info('cl'), undefined, 'the primary copy is gone');
    await until(() => b.info('cl') === undefined, { message: 'the standby dropped its copy' });
    const durable = await a.readDurable('counter', 'cl');
    assert.deepEqual(
      [durable.seq, durable.logged, durable.read.messages],
      [0, 0, 0],
      'no snapshot and an empty log',
    );
    await assert.rejects(a.closeSession('cl'), SessionNotFoundError);

    // The id may be used again: a new life in epoch 2, from the initial state.
    await a.openSession('counter', 'cl', { standby: 'cl-b' });
    assert.equal(a.owner('cl')?.epoch, 2);
    assert.equal(await a.request('cl', 'add', 10), 10);
  });
});
