import { strict as assert } from 'node:assert';
import { randomBytes } from 'node:crypto';
import type { NatsConnection } from '@nats-io/transport-node';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { Base64UrlPaddedCodec, Objm, type ObjectStore } from '@nats-io/obj';
import { FtmError, InvalidArgumentError } from '../../runtime/errors.ts';
import { connectNats } from '../../runtime/nats-connect.ts';
import { SnapshotMissingError, SnapshotStore } from '../../runtime/snapshot-store.ts';
import { storeNames } from '../../runtime/subjects.ts';
import { useNatsServer } from '../helpers/nats.ts';

const KiB = 1024;
const MiB = 1024 * KiB;

function random(size: number): Uint8Array {
  return new Uint8Array(randomBytes(size));
}

describe('the snapshot store', function () {
  const nats = useNatsServer();
  let nc: NatsConnection;
  let jsm: JetStreamManager;
  /** Default options: 512 KiB inline limit. */
  let store: SnapshotStore;
  /** 1 KiB inline limit and a short stall timeout, so large-path tests stay small and quick. */
  let tiny: SnapshotStore;
  /** The object store as a client of the library sees it, to check what is stored. */
  let objects: ObjectStore;
  const errors: FtmError[] = [];

  before(async () => {
    nc = await connectNats(nats.url);
    jsm = await jetstreamManager(nc);
    store = await SnapshotStore.open(nc, { onError: (err) => errors.push(err) });
    tiny = await SnapshotStore.open(nc, {
      inlineLimit: KiB,
      readStallMs: 200,
      onError: (err) => errors.push(err),
    });
    objects = await new Objm(nc).open(storeNames.largeSnapshots);
  });

  after(async () => {
    await nc?.close();
  });

  afterEach(() => {
    assert.deepEqual(errors, [], 'no error was reported to onError');
  });

  const objectsOf = async (sid: string): Promise<string[]> =>
    (await objects.list()).filter((o) => o.name.startsWith(`${sid}.`)).map((o) => o.name);

  it('keeps a small snapshot inline: it round-trips and the object store holds nothing for it', async () => {
    const bytes = random(64 * KiB);
    await store.put('small', bytes);
    assert.deepEqual(await store.get('small'), bytes);
    assert.deepEqual(await objectsOf('small'), []);
    // Exactly at the limit is still inline.
    const atLimit = random(512 * KiB);
    await store.put('small', atLimit);
    assert.deepEqual(await store.get('small'), atLimit);
    assert.deepEqual(await objectsOf('small'), []);
  });

  it('round-trips 20 MiB of random bytes through the object store', async () => {
    const bytes = random(20 * MiB);
    await store.put('huge', bytes);
    const back = await store.get('huge');
    assert.ok(back, 'a snapshot is found');
    assert.equal(back.length, bytes.length);
    assert.ok(Buffer.from(back).equals(Buffer.from(bytes)), 'the bytes come back identical');
    const names = await objectsOf('huge');
    assert.equal(names.length, 1);
    assert.equal((await objects.info(names[0]!))?.size, 20 * MiB);
  });

  it('overwriting large, small, large keeps only the latest object and no tombstone', async () => {
    const first = random(MiB);
    await store.put('swap', first);
    const [firstName] = await objectsOf('swap');
    assert.ok(firstName, 'the first large snapshot is an object');
    assert.deepEqual(await store.get('swap'), first);

    const small = random(64 * KiB);
    await store.put('swap', small);
    assert.deepEqual(await store.get('swap'), small);
    assert.deepEqual(await objectsOf('swap'), [], 'the replaced object is deleted');
    const tombstone = await jsm.streams.getMessage(`OBJ_${storeNames.largeSnapshots}`, {
      last_by_subj: `$O.${storeNames.largeSnapshots}.M.${Base64UrlPaddedCodec.encode(firstName)}`,
    });
    assert.equal(tombstone, null, 'the deleted object leaves no meta message behind');

    const second = random(MiB + 1);
    await store.put('swap', second);
    assert.deepEqual(await store.get('swap'), second);
    const names = await objectsOf('swap');
    assert.equal(names.length, 1);
    assert.notEqual(names[0], firstName, 'every large write gets a fresh object name');
  });

  it('get of an unknown sid resolves undefined', async () => {
    assert.equal(await store.get('never-written'), undefined);
  });

  it('delete removes the entry and the object; a later put works again', async () => {
    await tiny.put('gone', random(4 * KiB));
    assert.equal((await objectsOf('gone')).length, 1);
    await tiny.delete('gone');
    assert.equal(await tiny.get('gone'), undefined);
    assert.deepEqual(await objectsOf('gone'), []);
    await tiny.delete('gone'); // nothing left to delete: a no-op
    await tiny.delete('never-written');

    // The delete marker has a revision: the next put must expect it.
    const again = random(100);
    await tiny.put('gone', again);
    assert.deepEqual(await tiny.get('gone'), again);
  });

  it('a pointer to a deleted object throws SnapshotMissingError', async () => {
    await tiny.put('dangling', random(4 * KiB));
    const [name] = await objectsOf('dangling');
    assert.ok(name);
    await objects.delete(name);
    await assert.rejects(tiny.get('dangling'), (err: unknown) => {
      assert.ok(err instanceof SnapshotMissingError);
      assert.ok(err instanceof FtmError);
      assert.equal(err.code, 'snapshot_missing');
      assert.equal(err.retryable, false);
      assert.match(err.message, /"dangling"/);
      assert.match(err.message, /put\(\)|delete\(/);
      return true;
    });
    // delete() clears the dangling entry.
    await tiny.delete('dangling');
    assert.equal(await tiny.get('dangling'), undefined);
  });

  it('a pointer to an object whose chunks were purged throws instead of hanging', async () => {
    await tiny.put('purged', random(4 * KiB));
    const [name] = await objectsOf('purged');
    const info = await objects.info(name!);
    assert.ok(info);
    await jsm.streams.purge(`OBJ_${storeNames.largeSnapshots}`, {
      filter: `$O.${storeNames.largeSnapshots}.C.${info.nuid}`,
    });
    await assert.rejects(tiny.get('purged'), SnapshotMissingError);
    await tiny.delete('purged');
  });

  it('concurrent puts of one sid leave exactly the object of the last switch', async () => {
    const versions = Array.from({ length: 6 }, () => random(4 * KiB));
    await Promise.all(versions.map((v) => tiny.put('race', v)));
    const back = await tiny.get('race');
    assert.ok(back);
    assert.ok(
      versions.some((v) => Buffer.from(v).equals(Buffer.from(back))),
      'the snapshot is one of the written versions, whole',
    );
    assert.equal((await objectsOf('race')).length, 1, 'every displaced object was deleted');
  });

  it('an ordered put never replaces a snapshot of the same or a higher order', async () => {
    const at5 = random(4 * KiB);
    assert.equal(await tiny.put('ordered', at5, { order: 5 }), true);
    // A lagging writer's older state (and one at the same seq) stays out; its object is deleted.
    assert.equal(await tiny.put('ordered', random(4 * KiB), { order: 3 }), false);
    assert.equal(await tiny.put('ordered', random(8), { order: 5 }), false);
    assert.deepEqual(await tiny.get('ordered'), at5);
    assert.equal((await objectsOf('ordered')).length, 1, 'only the stored object is left');
    const at9 = random(8);
    assert.equal(await tiny.put('ordered', at9, { order: 9 }), true);
    assert.deepEqual(await tiny.get('ordered'), at9);
    assert.deepEqual(await objectsOf('ordered'), [], 'the replaced object was deleted');
    // Concurrent ordered puts: the highest order is what stays.
    const versions = [12, 17, 14, 11].map((order) => ({ order, bytes: random(4 * KiB) }));
    await Promise.all(versions.map((v) => tiny.put('ordered', v.bytes, { order: v.order })));
    assert.deepEqual(await tiny.get('ordered'), versions[1]!.bytes);
    assert.equal((await objectsOf('ordered')).length, 1);
    await assert.rejects(tiny.put('ordered', random(8), { order: NaN }), InvalidArgumentError);
    await tiny.delete('ordered');
  });

  it('rejects a bad sid, bad bytes and an inline limit over max_payload with InvalidArgumentError', async () => {
    await assert.rejects(store.put('no spaces', random(1)), InvalidArgumentError);
    await assert.rejects(store.get('a.b'), InvalidArgumentError);
    await assert.rejects(store.put('ok', 'text' as unknown as Uint8Array), /Uint8Array/);
    await assert.rejects(
      SnapshotStore.open(nc, { inlineLimit: 8 * MiB }),
      (err: unknown) => err instanceof InvalidArgumentError && /max_payload/.test(err.message),
    );
  });
});
