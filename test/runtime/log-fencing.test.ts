import { strict as assert } from 'node:assert';
import type { NatsConnection } from '@nats-io/transport-node';
import { systemClock } from '../../runtime/clock.ts';
import { SessionLog } from '../../runtime/durable-log.ts';
import type { LogConflictError } from '../../runtime/errors.ts';
import { connectNats } from '../../runtime/nats-connect.ts';
import { natsLog } from '../../runtime/nats-stores.ts';
import type { LogPort } from '../../runtime/ports.ts';
import { encodeCommit } from '../../runtime/wire.ts';
import { useNatsServer } from '../helpers/nats.ts';

/**
 * one-writer-per-log (runtime/PROTOCOL.md) where the data is stored: once a
 * newer epoch's marker is in JetStream, JetStream itself refuses the older
 * epoch's appends; nothing is voided after the fact.
 */
describe('the log is fenced at the store', function () {
  const nats = useNatsServer();
  let nc: NatsConnection;
  let port: LogPort;
  before(async () => {
    nc = await connectNats(nats.url, { name: 'log-fencing-test' });
    port = await natsLog(nc);
  });
  after(async () => {
    await nc.close();
  });

  const commit = (epoch: number, seq: number) =>
    encodeCommit(
      0,
      { epoch, term: 0, seq },
      `r${epoch}.${seq}`,
      new Uint8Array([seq]),
      new Uint8Array(),
    );

  const writer = (sid: string, epoch: number, from: number, expectLast?: number) => {
    const fenced: LogConflictError[] = [];
    const errors: Error[] = [];
    const log = new SessionLog(
      port,
      sid,
      epoch,
      {
        type: 'new-epoch',
        from,
        logged: from,
        kept: [],
        ...(expectLast === undefined ? {} : { expectLast }),
      },
      `w${epoch}`,
      systemClock,
      () => undefined,
      (err) => fenced.push(err),
      (err) => errors.push(err),
    );
    return { log, fenced, errors };
  };

  it("an old epoch's append after a newer marker is refused by JetStream: the old writer is fenced, the log holds only the new epoch after its marker", async () => {
    const sid = 'fence1';
    const old = writer(sid, 1, 0);
    old.log.append(commit(1, 1));
    old.log.append(commit(1, 2));
    assert.equal(await old.log.flush(), 2);

    // Epoch 2 takes over from seq 2 (its marker reads the log's last message first).
    const next = writer(sid, 2, 2);
    next.log.append(commit(2, 3));
    assert.equal(await next.log.flush(), 3);

    // The old primary, not fenced yet, appends: JetStream refuses it.
    old.log.append(commit(1, 3));
    await old.log.flush();
    assert.equal(old.fenced.length, 1, 'the old writer learns it is fenced');
    assert.ok(old.log.isDiscarded, 'and writes nothing more');
    old.log.append(commit(1, 4));
    await old.log.flush();

    const stored = await port.read(sid);
    assert.deepEqual(
      stored.map((m) => m.epoch),
      [1, 2],
      'one batch of epoch 1, then epoch 2 (its marker and commit); neither late batch of epoch 1',
    );
    assert.deepEqual(next.fenced, []);
    assert.deepEqual(old.errors.concat(next.errors), []);
  });

  it('a new epoch whose expectation is stale reads again: its marker lands after everything the old epoch managed to write', async () => {
    const sid = 'fence2';
    const old = writer(sid, 1, 0);
    old.log.append(commit(1, 1));
    await old.log.flush();
    const seen = (await port.last(sid)).seq;
    // The old primary writes more after the new one looked.
    old.log.append(commit(1, 2));
    await old.log.flush();

    const next = writer(sid, 2, 2, seen);
    next.log.append(commit(2, 3));
    assert.equal(await next.log.flush(), 3);
    assert.deepEqual(
      next.fenced,
      [],
      'a refused first batch is not a fence: the marker had not landed',
    );

    const stored = await port.read(sid);
    assert.deepEqual(
      stored.map((m) => m.epoch),
      [1, 1, 2],
      "epoch 2's marker and frames come after both of epoch 1's batches",
    );
    assert.deepEqual(old.errors.concat(next.errors), []);
  });
});
