import { strict as assert, AssertionError } from 'node:assert';
import type { NatsConnection } from '@nats-io/transport-node';
import { connectNats, subjects } from '../../runtime/index.ts';
import { CommitFlag, ConsistencyCode, encodeCommit, encodeRefusal } from '../../runtime/wire.ts';
import { useNatsServer } from './nats.ts';
import { monitorOutput, type OutputMonitor } from './output-monitor.ts';
import { until } from './until.ts';

const flags = ConsistencyCode.standby | CommitFlag.hasReply;
const bytes = (...b: number[]) => new Uint8Array(b);

describe('helpers: monitorOutput', function () {
  const nats = useNatsServer({ jetstream: false });
  let nc: NatsConnection;
  let monitor: OutputMonitor | undefined;

  before(async () => {
    nc = await connectNats(nats.url);
  });
  afterEach(() => monitor?.close());
  after(async () => {
    await nc?.close();
  });

  /** Publishes the frames on the session's output subject; resolves once the monitor saw them all. */
  const publish = async (sid: string, m: OutputMonitor, frames: Uint8Array[]) => {
    const before = m.stats().messages;
    for (const f of frames) nc.publish(subjects.output(sid), f);
    await until(() => m.stats().messages === before + frames.length, {
      message: `the monitor sees ${frames.length} frames`,
    });
  };

  it('catches two different payloads at one (epoch, seq): two histories', async () => {
    monitor = monitorOutput(nc, 'mon-conflict');
    await nc.flush();
    await publish('mon-conflict', monitor, [
      encodeCommit(flags, { epoch: 1, term: 0, seq: 1 }, 'r1', bytes(1), bytes(0x90)),
      encodeCommit(flags, { epoch: 1, term: 0, seq: 2 }, 'r2', bytes(2), bytes(0x90)),
      // A second primary in epoch 1 committing another request at seq 2.
      encodeCommit(flags, { epoch: 1, term: 0, seq: 2 }, 'other', bytes(7), bytes(0x91, 1)),
      // The same seq in another epoch is another history: not a conflict.
      encodeCommit(flags, { epoch: 2, term: 0, seq: 1 }, 'r3', bytes(3), bytes(0x90)),
    ]);
    assert.deepEqual(
      monitor.conflicts().map((c) => [c.epoch, c.seq, c.payloads.map((p) => p.requestId)]),
      [[1, 2, ['r2', 'other']]],
    );
    assert.throws(
      () => monitor!.assertOnePayloadPerSeq(),
      (err: unknown) =>
        err instanceof AssertionError &&
        /epoch 1 seq 2: \[r2\] .* \| \[other\] /.test(err.message) &&
        !/seq 1:/.test(err.message),
    );
    assert.equal(monitor.stats().conflicts, 1);
  });

  it('catches the same request id with another reply or other patches at one (epoch, seq)', async () => {
    monitor = monitorOutput(nc, 'mon-bytes');
    await nc.flush();
    await publish('mon-bytes', monitor, [
      encodeCommit(flags, { epoch: 3, term: 0, seq: 5 }, 'r', bytes(1), bytes(0x90)),
      encodeCommit(flags, { epoch: 3, term: 0, seq: 5 }, 'r', bytes(2), bytes(0x90)),
      encodeCommit(flags, { epoch: 3, term: 0, seq: 6 }, 'q', bytes(1), bytes(0x90)),
      encodeCommit(flags, { epoch: 3, term: 0, seq: 6 }, 'q', bytes(1), bytes(0x91, 0)),
    ]);
    assert.deepEqual(
      monitor.conflicts().map((c) => [c.epoch, c.seq]),
      [
        [3, 5],
        [3, 6],
      ],
    );
    assert.throws(() => monitor!.assertOnePayloadPerSeq(), AssertionError);
  });

  it('accepts byte-identical retransmissions, and ignores duplicates, refusals and malformed frames', async () => {
    monitor = monitorOutput(nc, 'mon-ok');
    await nc.flush();
    const commit = encodeCommit(flags, { epoch: 1, term: 0, seq: 1 }, 'r1', bytes(1), bytes(0x90));
    await publish('mon-ok', monitor, [
      commit,
      commit,
      commit,
      // A retransmission may carry other flags (released); the payload is what counts.
      encodeCommit(
        flags | CommitFlag.released,
        { epoch: 1, term: 0, seq: 1 },
        'r1',
        bytes(1),
        bytes(0x90),
      ),
      // A repeat answered from the dedup table: no patches, flagged duplicate.
      encodeCommit(
        flags | CommitFlag.duplicate,
        { epoch: 1, term: 0, seq: 1 },
        'r1',
        bytes(1),
        new Uint8Array(0),
      ),
      encodeRefusal({ epoch: 1, term: 0, seq: 1 }, 'r9', bytes(0xc0)),
      encodeCommit(flags, { epoch: 1, term: 0, seq: 2 }, 'r2', bytes(2), bytes(0x90)),
      bytes(2),
      new TextEncoder().encode('not json'),
    ]);
    monitor.assertOnePayloadPerSeq();
    assert.deepEqual(monitor.stats(), {
      messages: 9,
      commits: 5,
      seqs: 2,
      retransmissions: 3,
      duplicates: 1,
      refusals: 1,
      otherKinds: 0,
      malformed: 2,
      conflicts: 0,
    });
    assert.equal(monitor.errors.length, 2);
    assert.equal(monitor.errors[0]?.name, 'MalformedFrameError');
  });

  it('stops recording once closed; close() twice is safe', async () => {
    const m = monitorOutput(nc, 'mon-close');
    await nc.flush();
    await publish('mon-close', m, [
      encodeCommit(flags, { epoch: 1, term: 0, seq: 1 }, 'a', bytes(1), bytes(0x90)),
    ]);
    m.close();
    m.close();
    nc.publish(
      subjects.output('mon-close'),
      encodeCommit(flags, { epoch: 1, term: 0, seq: 1 }, 'b', bytes(2), bytes(0x90)),
    );
    await nc.flush();
    assert.equal(m.stats().messages, 1);
    m.assertOnePayloadPerSeq();
  });
});
