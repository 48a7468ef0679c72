import { strict as assert } from 'node:assert';
import type { NatsConnection } from '@nats-io/transport-node';
import { createValueCodec } from '../../runtime/codec.ts';
import { connectNats } from '../../runtime/nats-connect.ts';
import { natsKv } from '../../runtime/nats-stores.ts';
import { Ownership } from '../../runtime/ownership.ts';
import { useNatsServer } from '../helpers/nats.ts';

/**
 * The ownership record's compare-and-swap on a real KV bucket, with two
 * writers whose views differ: a view only ever speeds a change up, it never
 * decides a refusal.
 */
describe('ownership changes on the KV', function () {
  const nats = useNatsServer();
  const conns: NatsConnection[] = [];
  after(async () => {
    for (const nc of conns) await nc.close();
  });
  const writer = async (bucket: string) => {
    const nc = await connectNats(nats.url, { name: 'ownership-test' });
    conns.push(nc);
    const malformed: string[] = [];
    const o = new Ownership(await natsKv(nc, bucket), createValueCodec(), (key) =>
      malformed.push(key),
    );
    return { o, malformed };
  };

  it('a change its stale view refuses is decided on the stored record: a standby promotes although its view never saw itself named', async () => {
    const a = await writer('ftm-test-owners-1');
    const b = await writer('ftm-test-owners-1');
    const opened = await a.o.change('s1', {
      type: 'open',
      actor: 'counter',
      primary: 'h1',
      standby: '',
    });
    assert.ok(opened.ok);
    // b reads the record now (no standby), then a names b's host: b's view is out of date.
    assert.equal((await b.o.get('s1'))?.record.standby, '');
    const named = await a.o.change('s1', {
      type: 'name-standby',
      primary: 'h1',
      epoch: 1,
      term: opened.owned.record.term,
      standby: 'h2',
    });
    assert.ok(named.ok, named.ok ? '' : named.reason);
    assert.equal(b.o.view.get('s1')?.record.standby, '', 'b has no watch: its view is stale');

    const promoted = await b.o.change('s1', {
      type: 'promote',
      standby: 'h2',
      from: 'h1',
      epoch: 1,
    });
    assert.ok(promoted.ok, promoted.ok ? '' : `refused on a stale view: ${promoted.reason}`);
    assert.equal(promoted.owned.record.primary, 'h2');
    assert.equal(promoted.owned.record.epoch, 2);
    assert.deepEqual(a.malformed.concat(b.malformed), []);
  });

  it('a change the stored record refuses stays refused, with the stored record returned', async () => {
    const a = await writer('ftm-test-owners-2');
    const b = await writer('ftm-test-owners-2');
    assert.ok(
      (await a.o.change('s2', { type: 'open', actor: 'counter', primary: 'h1', standby: 'h2' })).ok,
    );
    await b.o.get('s2');
    // a promotes h2: epoch 2. b, still at epoch 1, tries to promote h2 from h1 again.
    assert.ok(
      (await a.o.change('s2', { type: 'promote', standby: 'h2', from: 'h1', epoch: 1 })).ok,
    );
    const again = await b.o.change('s2', { type: 'promote', standby: 'h2', from: 'h1', epoch: 1 });
    assert.equal(again.ok, false);
    assert.equal(
      again.owned?.record.epoch,
      2,
      'the refusal carries the record read from the store',
    );
    assert.deepEqual(a.malformed.concat(b.malformed), []);
  });
});
