import { strict as assert } from 'node:assert';
import fc from 'fast-check';
import {
  apply,
  checkStep,
  parseOwnerRecord,
  InvariantViolation,
  type OwnerChange,
  type OwnerRecord,
} from '../../runtime/ownership-record.ts';
import { applyHost, parseHostRecord } from '../../runtime/membership-record.ts';

const opened = (standby = 'b'): OwnerRecord => {
  const r = apply(undefined, { type: 'open', actor: 'counter', primary: 'a', standby });
  assert.equal(r.refused, false);
  return (r as { record: OwnerRecord }).record;
};
const next = (r: OwnerRecord | undefined, c: OwnerChange): OwnerRecord => {
  const out = apply(r, c);
  if (out.refused) throw new Error(`refused: ${out.reason}`);
  return out.record;
};
const refusal = (r: OwnerRecord | undefined, c: OwnerChange): string => {
  const out = apply(r, c);
  assert.equal(out.refused, true, `expected a refusal of ${c.type}`);
  return (out as { reason: string }).reason;
};

describe('the ownership record (pure changes, no server)', () => {
  it('open: epoch 1, term 0; again only after a close, in a new epoch', () => {
    const r = opened();
    assert.deepEqual(r, { actor: 'counter', primary: 'a', standby: 'b', epoch: 1, term: 0 });
    assert.match(
      refusal(r, { type: 'open', actor: 'counter', primary: 'c', standby: '' }),
      /exists/,
    );
    assert.match(
      refusal(undefined, { type: 'open', actor: 'x', primary: 'a', standby: 'a' }),
      /another host/,
    );
    const closed = next(r, { type: 'close', primary: 'a', epoch: 1 });
    assert.deepEqual(closed, {
      actor: 'counter',
      primary: '',
      standby: '',
      epoch: 1,
      term: 0,
      closed: true,
    });
    const reopened = next(closed, { type: 'open', actor: 'counter', primary: 'c', standby: '' });
    assert.equal(reopened.epoch, 2, 'a reopened session never reuses an epoch');
  });

  it('name and drop a standby: only the primary, with the epoch and term it saw; each raises the term', () => {
    const r = opened('');
    const named = next(r, { type: 'name-standby', primary: 'a', epoch: 1, term: 0, standby: 'b' });
    assert.deepEqual([named.standby, named.term], ['b', 1]);
    assert.match(
      refusal(named, { type: 'name-standby', primary: 'a', epoch: 1, term: 0, standby: 'c' }),
      /term is 1/,
    );
    assert.match(
      refusal(named, { type: 'drop-standby', primary: 'x', epoch: 1, term: 1 }),
      /primary is a/,
    );
    assert.match(
      refusal(named, { type: 'drop-standby', primary: 'a', epoch: 2, term: 1 }),
      /epoch is 1/,
    );
    const dropped = next(named, { type: 'drop-standby', primary: 'a', epoch: 1, term: 1 });
    assert.deepEqual([dropped.standby, dropped.term], ['', 2]);
    assert.match(
      refusal(dropped, { type: 'drop-standby', primary: 'a', epoch: 1, term: 2 }),
      /no standby/,
    );
    assert.match(
      refusal(dropped, { type: 'name-standby', primary: 'a', epoch: 1, term: 2, standby: 'a' }),
      /another host/,
    );
  });

  it('promote: only the named standby, only from the primary it followed; next epoch, no standby', () => {
    const r = opened('b');
    assert.match(
      refusal(r, { type: 'promote', standby: 'c', from: 'a', epoch: 1 }),
      /standby is b/,
    );
    assert.match(
      refusal(r, { type: 'promote', standby: 'b', from: 'x', epoch: 1 }),
      /primary is a/,
    );
    const p = next(r, { type: 'promote', standby: 'b', from: 'a', epoch: 1 });
    assert.deepEqual(p, { actor: 'counter', primary: 'b', standby: '', epoch: 2, term: 0 });
    // The loser of a race sees the record moved on.
    assert.match(refusal(p, { type: 'promote', standby: 'b', from: 'a', epoch: 1 }), /epoch is 2/);
  });

  it('hand off: to the named standby only', () => {
    const r = opened('b');
    assert.match(refusal(r, { type: 'hand-off', from: 'a', to: 'c', epoch: 1 }), /standby is b/);
    assert.equal(next(r, { type: 'hand-off', from: 'a', to: 'b', epoch: 1 }).epoch, 2);
  });

  it('restore: only if the whole record is as judged; the new epoch is above the log too', () => {
    const r = opened('b');
    const judged = { primary: 'a', standby: 'b', epoch: 1, term: 0 };
    assert.match(
      refusal(r, { type: 'restore', by: 'c', judged: { ...judged, standby: 'x' }, logEpoch: 0 }),
      /changed/,
    );
    assert.match(
      refusal(r, { type: 'restore', by: 'c', judged: { ...judged, term: 3 }, logEpoch: 0 }),
      /changed/,
    );
    const restored = next(r, { type: 'restore', by: 'c', judged, logEpoch: 5 });
    assert.deepEqual(
      [restored.primary, restored.standby, restored.epoch, restored.term],
      ['c', '', 6, 0],
    );
  });

  it('nothing changes a closed session but a reopen', () => {
    const closed = next(opened(), { type: 'close', primary: 'a', epoch: 1 });
    for (const c of [
      { type: 'name-standby', primary: 'a', epoch: 1, term: 0, standby: 'b' },
      { type: 'promote', standby: 'b', from: 'a', epoch: 1 },
      {
        type: 'restore',
        by: 'c',
        judged: { primary: '', standby: '', epoch: 1, term: 0 },
        logEpoch: 0,
      },
      { type: 'close', primary: 'a', epoch: 1 },
    ] as OwnerChange[])
      assert.match(refusal(closed, c), /closed/);
  });

  it('checkStep refuses what would break an invariant', () => {
    const r = opened('b');
    assert.throws(() => checkStep(r, { ...r, epoch: 0 }), InvariantViolation);
    assert.throws(() => checkStep({ ...r, epoch: 3 }, { ...r, epoch: 2 }), /epochs-grow/);
    assert.throws(() => checkStep(r, { ...r, primary: 'c' }), /one-primary-per-epoch/);
    assert.throws(() => checkStep(r, { ...r, standby: 'c' }), /term-grows-with-standby/);
    assert.throws(() => checkStep(r, { ...r, standby: 'a' }), /primary-is-not-standby/);
  });

  it('property: any sequence of changes keeps every invariant, and epochs never fall', () => {
    const host = fc.constantFrom('a', 'b', 'c', '');
    const small = fc.nat({ max: 4 });
    const change: fc.Arbitrary<OwnerChange> = fc.oneof(
      fc.record({
        type: fc.constant('open' as const),
        actor: fc.constant('counter'),
        primary: host,
        standby: host,
      }),
      fc.record({
        type: fc.constant('name-standby' as const),
        primary: host,
        epoch: small,
        term: small,
        standby: host,
      }),
      fc.record({
        type: fc.constant('drop-standby' as const),
        primary: host,
        epoch: small,
        term: small,
      }),
      fc.record({ type: fc.constant('promote' as const), standby: host, from: host, epoch: small }),
      fc.record({ type: fc.constant('hand-off' as const), from: host, to: host, epoch: small }),
      fc.record({
        type: fc.constant('restore' as const),
        by: host,
        judged: fc.record({ primary: host, standby: host, epoch: small, term: small }),
        logEpoch: small,
      }),
      fc.record({ type: fc.constant('close' as const), primary: host, epoch: small }),
    );
    // Changes computed from the current record (what a host with a fresh view asks) and blind ones.
    fc.assert(
      fc.property(fc.array(fc.tuple(change, fc.boolean()), { maxLength: 60 }), (steps) => {
        let r: OwnerRecord | undefined;
        for (const [c0, informed] of steps) {
          const c = informed && r ? informedOf(c0, r) : c0;
          const out = apply(r, c);
          if (out.refused) continue;
          checkStep(r, out.record);
          if (r) assert.ok(out.record.epoch >= r.epoch);
          r = out.record;
        }
      }),
      { numRuns: 2_000 },
    );
  });

  it('parses only well-formed records from the wire', () => {
    assert.deepEqual(
      parseOwnerRecord({ actor: 'x', primary: 'a', standby: '', epoch: 2, term: 1 }),
      {
        actor: 'x',
        primary: 'a',
        standby: '',
        epoch: 2,
        term: 1,
      },
    );
    for (const bad of [
      null,
      'x',
      1,
      {},
      { actor: 'x', primary: 'a', standby: '', epoch: -1, term: 0 },
      { actor: 'x', primary: 1, standby: '', epoch: 1 },
    ])
      assert.throws(() => parseOwnerRecord(bad), /not an ownership record/);
  });
});

describe('the membership record (pure changes, no server)', () => {
  const load = { primaries: 0, standbys: 0, capacity: 10, draining: false };
  it('join, report, declare dead once, join again as a new incarnation', () => {
    const joined = applyHost(undefined, { type: 'join', incarnation: 'i1', load });
    assert.equal(joined.refused, false);
    const r = (joined as { record: ReturnType<typeof parseHostRecord> }).record;
    assert.equal(
      applyHost(r, { type: 'join', incarnation: 'i2', load }).refused,
      true,
      'alive: no second join',
    );
    assert.equal(
      applyHost(r, { type: 'report', incarnation: 'i0', load }).refused,
      true,
      'another incarnation',
    );
    const dead = applyHost(r, {
      type: 'declare-dead',
      incarnation: 'i1',
      cause: 'heartbeat',
      by: 'b',
    });
    assert.equal(dead.refused, false);
    const d = (dead as { record: typeof r }).record;
    assert.deepEqual([d.state, d.cause, d.by], ['dead', 'heartbeat', 'b']);
    assert.equal(
      applyHost(d, { type: 'declare-dead', incarnation: 'i1', cause: 'advisory', by: 'c' }).refused,
      true,
      'a death is written once',
    );
    assert.equal(
      applyHost(d, { type: 'report', incarnation: 'i1', load }).refused,
      true,
      'the dead report nothing',
    );
    assert.equal(applyHost(d, { type: 'join', incarnation: 'i2', load }).refused, false);
  });
  it('parses only well-formed host records', () => {
    assert.equal(parseHostRecord({ incarnation: 'i', state: 'alive', load }).state, 'alive');
    for (const bad of [
      null,
      {},
      { incarnation: 'i', state: 'zombie', load },
      { incarnation: 'i', state: 'alive', load: { ...load, capacity: -1 } },
    ])
      assert.throws(() => parseHostRecord(bad), /not a host record/);
  });
});

/** The change `c` with the fields a host reads from `r` filled in from it. */
function informedOf(c: OwnerChange, r: OwnerRecord): OwnerChange {
  switch (c.type) {
    case 'name-standby':
    case 'drop-standby':
      return { ...c, primary: r.primary, epoch: r.epoch, term: r.term };
    case 'promote':
      return { ...c, standby: r.standby, from: r.primary, epoch: r.epoch };
    case 'hand-off':
      return { ...c, from: r.primary, to: r.standby, epoch: r.epoch };
    case 'restore':
      return {
        ...c,
        judged: { primary: r.primary, standby: r.standby, epoch: r.epoch, term: r.term },
      };
    case 'close':
      return { ...c, primary: r.primary, epoch: r.epoch };
    default:
      return c;
  }
}
