import { strict as assert } from 'node:assert';
import { legalMoves, move, type CopyStatus } from '../../runtime/copy-status.ts';
import { InvariantViolation } from '../../runtime/ownership-record.ts';
import { SerialQueues } from '../../runtime/serial-queue.ts';

describe("a copy's status and a session's queue (no server)", () => {
  const statuses: CopyStatus[] = [
    { type: 'attaching' },
    { type: 'standby', term: 1 },
    { type: 'promoting' },
    { type: 'primary', standby: 'b', term: 1 },
    { type: 'handing-off', to: 'b' },
    { type: 'fenced', reason: 'test' },
    { type: 'closed' },
  ];

  it('moves only along the legal moves, and every status can reach closed', () => {
    for (const from of statuses)
      for (const to of statuses) {
        const legal = legalMoves[from.type].includes(to.type);
        if (legal) assert.equal(move('s', from, to), to);
        else
          assert.throws(
            () => move('s', from, to),
            InvariantViolation,
            `${from.type} -> ${to.type}`,
          );
      }
    // A standby never serves without its compare-and-swap (promoting) in between.
    assert.throws(() =>
      move('s', { type: 'standby', term: 1 }, { type: 'primary', standby: '', term: 0 }),
    );
    // A fenced copy never serves again.
    assert.deepEqual(legalMoves.fenced, ['closed']);
    const reaches = (t: CopyStatus['type'], seen = new Set<string>()): boolean =>
      t === 'closed' ||
      (!seen.has(t) && (seen.add(t), legalMoves[t].some((n) => reaches(n, seen))));
    for (const s of statuses) assert.ok(reaches(s.type), `${s.type} reaches closed`);
  });

  it('runs a session’s actions one at a time, in order, none dropped; other sessions run alongside', async () => {
    const q = new SerialQueues();
    const log: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const first = q.run('s', async () => {
      log.push('s1 start');
      await gate;
      log.push('s1 end');
    });
    const second = q.run('s', () => void log.push('s2'));
    const other = q.run('t', () => void log.push('t1'));
    await other;
    assert.deepEqual(log, ['s1 start', 't1'], 'the other session did not wait');
    assert.equal(q.busy('s'), true);
    release();
    await Promise.all([first, second]);
    assert.deepEqual(log, ['s1 start', 't1', 's1 end', 's2']);
    await q.idle();
    assert.equal(q.busy('s'), false);
  });

  it('a failing action does not stop the next; coalesced reconciles run once for a burst', async () => {
    const q = new SerialQueues();
    const failed = q.run('s', () => Promise.reject(new Error('boom')));
    const after = q.run('s', () => 'ran');
    await assert.rejects(failed, /boom/);
    assert.equal(await after, 'ran');
    let runs = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const busy = q.run('s', () => gate);
    const bursts = [1, 2, 3, 4].map(() => q.coalesce('s', () => Promise.resolve(void runs++)));
    release();
    await busy;
    await Promise.all(bursts);
    assert.equal(runs, 1, 'four triggers while busy: one reconcile, which sees all of them');
    await q.coalesce('s', () => Promise.resolve(void runs++));
    assert.equal(runs, 2, 'a trigger after it ran runs again');
  });
});
