import { strict as assert } from 'node:assert';
import { connectNats, defineActor, type Host } from '../../runtime/index.ts';
import { connectionName } from '../../runtime/membership.ts';
import { openOwnership } from '../helpers/records.ts';
import { SnapshotStore } from '../../runtime/snapshot-store.ts';
import { subjects } from '../../runtime/subjects.ts';
import { createValueCodec } from '../../runtime/codec.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { until } from '../helpers/until.ts';
import { useHosts } from '../helpers/hosts.ts';
import { useOutputMonitors } from '../helpers/output-monitor.ts';
import { exactlyOnce, streamAdds } from '../helpers/stream.ts';
import { collectErrors, type ExpectedError } from '../helpers/errors.ts';

/** What the runtime may report here, and why. */
const expectedErrors: ExpectedError[] = [
  {
    pattern: /hand-off to dd-b failed; serving it here again/,
    why: 'two drains at once: the host handing off may not have seen the other drain yet, which refuses',
  },
];

describe('ownership races and planned handoff (hosts in this process)', function () {
  const reported = collectErrors();
  afterEach(() => reported.assertNone(expectedErrors));
  const nats = useNatsServer();
  const watchOutput = useOutputMonitors(() => nats.url);
  const host = useHosts(() => nats.url, reported);

  it('several candidates racing to restore one session: exactly one wins, in the next epoch', async () => {
    const manual = { failover: false };
    const a = await host('race-a', manual);
    const b = await host('race-b', manual);
    await a.openSession('counter', 'race', { standby: 'race-b' });
    for (let i = 0; i < 20; i++) await a.request('race', 'add', 1);
    await a.close();
    await b.close();
    const candidates = await Promise.all(
      ['race-c', 'race-d', 'race-e'].map((id) => host(id, manual)),
    );
    const outcomes = await Promise.allSettled(
      candidates.map((h, i) =>
        h.restoreSession('counter', 'race', { standby: candidates[(i + 1) % 3]!.id }),
      ),
    );
    const winners = outcomes.flatMap((o, i) => (o.status === 'fulfilled' ? [candidates[i]!] : []));
    assert.equal(winners.length, 1, `one winner, got ${winners.map((w) => w.id).join(', ')}`);
    const winner = winners[0]!;
    for (const o of outcomes)
      if (o.status === 'rejected') assert.match(String(o.reason), /first|exists/);
    const owner = winner.owner('race')!;
    assert.equal(owner.primary, winner.id);
    assert.equal(owner.epoch, 2);
    assert.equal(await winner.request('race', 'add', 1), 21);
    for (const h of candidates) if (h !== winner) assert.notEqual(h.info('race')?.role, 'primary');
  });

  it('drain() moves every primary to its standby and every standby away, losing no request', async () => {
    const client = await host('dr-client', { capacity: 0 });
    const d1 = await host('dr-1');
    await host('dr-2');
    await host('dr-3');
    await until(() => ['dr-1', 'dr-2', 'dr-3'].every((id) => client.liveHosts().includes(id)));
    const sids = ['dr-a', 'dr-b', 'dr-c', 'dr-d', 'dr-e'];
    for (const [i, sid] of sids.entries()) {
      if (i < 4)
        await client.placeSession('counter', sid, {
          primary: 'dr-1',
          standby: i % 2 ? 'dr-2' : 'dr-3',
        });
      else await client.placeSession('counter', sid, { primary: 'dr-2', standby: 'dr-1' });
      await watchOutput(sid);
    }
    let drained: Promise<Awaited<ReturnType<Host['drain']>>> | undefined;
    const streams = sids.map((sid) =>
      streamAdds(client, sid, 300, {
        window: 2,
        onReply: (n) => {
          if (sid === 'dr-a' && n === 100) drained ??= d1.drain();
        },
      }),
    );
    const results = await Promise.all(streams);
    const report = await drained!;
    for (const [i, r] of results.entries()) {
      assert.deepEqual(exactlyOnce(r.replies), { lost: [], doubled: [] }, sids[i]);
      assert.equal(await client.request(sids[i]!, 'get'), 300);
    }
    assert.equal(report.primaries, 4);
    assert.equal(report.standbys, 1);
    for (const sid of sids) {
      assert.equal(d1.info(sid), undefined, `${sid} left dr-1`);
      const owner = client.owner(sid)!;
      assert.ok(owner.primary !== 'dr-1' && owner.standby !== 'dr-1', JSON.stringify(owner));
    }
    const gaps = results.map((r) =>
      Math.max(...r.arrivals.slice(1).map((t, i) => t - r.arrivals[i]!)),
    );
    // Reported, not asserted (a shared machine): the handoff time and the longest reply gap.
    console.log(
      `      handoff ms: ${report.handoffMs.map((m) => m.toFixed(2)).join(' ')}; longest reply gap per session ms: ${gaps.map((g) => g.toFixed(1)).join(' ')}`,
    );
  });

  it('two hosts draining at once: no session is handed to the other draining host; it moves to a host that stays, or stays where it was', async () => {
    const client = await host('dd-client', { capacity: 0 });
    const a = await host('dd-a');
    const b = await host('dd-b');
    await host('dd-c');
    await until(() => ['dd-a', 'dd-b', 'dd-c'].every((id) => client.liveHosts().includes(id)));
    await client.placeSession('counter', 'dd-s', { primary: 'dd-a', standby: 'dd-b' });
    await watchOutput('dd-s');
    for (let i = 1; i <= 20; i++) assert.equal(await client.request('dd-s', 'add', 1), i);
    // b drains with no time left: it is draining, and its standby copy stays for now.
    const bReport = await b.drain(0);
    assert.deepEqual(bReport, { primaries: 0, standbys: 0, handoffMs: [], kept: 0 });
    assert.equal(client.owner('dd-s')!.standby, 'dd-b');
    const aReport = await a.drain();
    const owner = (await client.fetchOwner('dd-s'))!;
    assert.notEqual(owner.primary, 'dd-b', `handed to a draining host: ${JSON.stringify(owner)}`);
    assert.equal(aReport.primaries + aReport.kept, 1, JSON.stringify(aReport));
    if (aReport.primaries) assert.equal(owner.primary, 'dd-c');
    assert.equal(await client.request('dd-s', 'add', 1), 21);
  });

  it('a promoted standby writes to the log first what the old primary never logged: the log has no hole', async () => {
    // The primary's own connection, so that the test can drop it the way a crash does:
    // no goodbye, no last flush. Its log flushes only every hour: it logs nothing.
    const ncA = await connectNats(nats.url, { name: connectionName('lg-a') });
    const a = await host('lg-a', { nats: ncA, logFlushIntervalMs: 3_600_000 });
    const b = await host('lg-b');
    const client = await host('lg-client', { capacity: 0 });
    await a.openSession('counter', 'lg', { standby: 'lg-b' });
    await watchOutput('lg');
    // Released on the standby's ack alone (standby mode).
    for (let i = 1; i <= 20; i++) assert.equal(await client.request('lg', 'add', 1), i);
    assert.equal(
      (await a.readDurable('counter', 'lg')).logged,
      0,
      'the old primary logged nothing',
    );

    await ncA.close(); // the server's disconnect advisory tells lg-b
    await until(() => b.info('lg')?.role === 'primary', { message: 'lg-b promoted' });
    // No standby left: the log stands in, so this reply waits for the log's ack.
    assert.equal(await client.request('lg', 'add', 1), 21);

    // The log alone (no snapshot was written) now holds every commit, the old primary's first.
    const durable = await b.readDurable('counter', 'lg');
    assert.deepEqual(
      [durable.seq, durable.logged, (durable.state as { value: number }).value],
      [21, 21, 21],
    );
  });

  it('a primary logs what its standby acknowledged before the record stops naming the standby', async () => {
    // The primary's flusher runs once an hour: only the standby's copy holds the ten released adds.
    const a = await host('wk-a', { logFlushIntervalMs: 3_600_000 });
    const b = await host('wk-b', { failover: false });
    await a.openSession('counter', 'wk', { standby: 'wk-b' });
    for (let i = 1; i <= 10; i++) assert.equal(await a.request('wk', 'add', 1), i);
    assert.equal((await a.readDurable('counter', 'wk')).logged, 0, 'the primary logged nothing');

    // The standby leaves (declared dead by its own goodbye): the primary drops it from the record.
    await b.close();
    await until(() => a.owner('wk')?.standby === '', { message: 'the record names no standby' });
    // At the moment the record stops naming it, the log already holds what it acknowledged.
    assert.equal((await a.readDurable('counter', 'wk')).logged, 10, 'the ten adds are in the log');
  });

  it('a primary replaced before it knows stores no snapshot of commits nobody acknowledged', async () => {
    // The standby loses every frame after seq 10: it never acknowledges more.
    const a = await host('sn-a', { failover: false });
    await host('sn-b', { dropAtStandby: (sid, seq) => sid === 'sn' && seq > 10 });
    await a.openSession('counter', 'sn', { standby: 'sn-b' });
    for (let i = 1; i <= 10; i++) assert.equal(await a.request('sn', 'add', 1), i);
    // Committed, never released: their replies wait for an ack that does not come.
    for (let i = 0; i < 5; i++) a.request('sn', 'add', 1).catch(() => undefined);
    await until(() => a.info('sn')?.seq === 15, { message: 'sn-a committed 15' });
    const snapshotting = a.snapshotNow('sn');

    // Another host takes the session over from seq 10, the last one released; sn-a
    // learns of it only from the record.
    const nc = await connectNats(nats.url);
    try {
      const ownership = await openOwnership(nc);
      const current = (await ownership.get('sn'))!;
      const taken = await ownership.change('sn', {
        type: 'restore',
        by: 'sn-x',
        judged: current.record,
        logEpoch: 0,
      });
      assert.ok(taken.ok, 'sn-x owns epoch 2');
      await snapshotting;
      assert.equal(a.info('sn'), undefined, 'sn-a stopped serving');
      // Seqs 11 to 15 of epoch 1 are not the session's history: no snapshot may hold them.
      const stored = await (await SnapshotStore.open(nc)).get('sn');
      const seq = stored ? (createValueCodec().decode(stored) as { seq: number }).seq : 0;
      assert.ok(seq <= 10, `the stored snapshot is at seq ${seq}`);
      reported.assertNone([
        { pattern: /sn: this host stopped serving epoch 1/, why: 'the test took epoch 2' },
      ]);
    } finally {
      await nc.close();
    }
  });

  it('a copy attached but not yet named in the record releases no reply', async () => {
    // nm-b, the recorded standby, acknowledges nothing above seq 3.
    const a = await host('nm-a', { failover: false });
    await host('nm-b', { dropAtStandby: (sid, seq) => sid === 'nm' && seq > 3 });
    const c = await host('nm-c');
    await a.openSession('counter', 'nm', { standby: 'nm-b' });
    for (let i = 1; i <= 3; i++) assert.equal(await a.request('nm', 'add', 1), i);

    // nm-c attached the way a re-protection does it, before the record would name it.
    const nc = await connectNats(nats.url);
    try {
      const codec = createValueCodec();
      const { revision } = (await (await openOwnership(nc)).get('nm'))!;
      const sync = { op: 'sync', sid: 'nm', actor: 'counter', after: revision, epoch: 1 };
      const answer = codec.decode(
        (await nc.request(subjects.hostControl('nm-c'), codec.encode(sync), { timeout: 5_000 }))
          .data,
      ) as { ok?: boolean };
      assert.equal(answer.ok, true, JSON.stringify(answer));
    } finally {
      await nc.close();
    }
    await until(() => c.info('nm')?.seq === 3, { message: 'nm-c holds the state' });

    // nm-c applies the fourth add, but only the recorded standby's ack may release it.
    const fourth = a.request('nm', 'add', 1, { timeoutMs: 1_000 });
    await until(() => c.info('nm')?.seq === 4, { message: 'nm-c applied the fourth add' });
    await assert.rejects(fourth, (err: unknown) => /reply held, no ack/.test(String(err)));
  });

  it('a state too big for one NATS message still gets a standby: opened so, re-protected, restored', async () => {
    // 24 commits of 100 KiB: each frame fits a NATS message, the 2.4 MiB state does not.
    const blob = defineActor({
      name: 'blob',
      initialState: (init) => ({ parts: (init as string[] | undefined) ?? [] }),
      handlers: {
        put: (state, n: number) => void state.parts.push(String(n % 10).repeat(100 * 1024)),
        size: (state) => state.parts.length,
      },
    });
    const a = await host('big-a', { actors: [blob] });
    const b = await host('big-b', { actors: [blob] });
    // Opened with a 2.4 MiB initial state: the standby takes it from the snapshot store.
    const parts = Array.from({ length: 24 }, (_, i) => String(i % 10).repeat(100 * 1024));
    await a.openSession('blob', 'big-init', { standby: 'big-b', init: parts });
    assert.equal(await a.request('big-init', 'size'), 24);
    await until(() => b.info('big-init')?.seq === a.info('big-init')?.seq, {
      message: 'big-b holds the initial state',
    });
    assert.equal(b.hash('big-init'), a.hash('big-init'));

    await a.openSession('blob', 'big', { standby: 'big-b' });
    for (let i = 0; i < 24; i++) await a.request('big', 'put', i);
    const c = await host('big-c', { actors: [blob] });
    await until(() => a.liveHosts().includes('big-c'));
    await b.close(); // its goodbye: big-a re-protects on big-c, which syncs the 2.4 MiB state
    await until(() => a.owner('big')?.standby === 'big-c', { message: 're-protected on big-c' });
    await until(() => c.info('big')?.seq === 24, { message: 'big-c holds the state' });
    assert.equal(c.hash('big'), a.hash('big'));

    // Both copies gone: big-d restores and attaches big-e, which again cannot take
    // the state in one message.
    const manual = { actors: [blob], failover: false };
    await a.close();
    await c.close();
    const d = await host('big-d', manual);
    const e = await host('big-e', manual);
    await d.restoreSession('blob', 'big', { standby: 'big-e' });
    assert.equal(await d.request('big', 'size'), 24);
    await until(() => e.info('big')?.seq === d.info('big')?.seq, { message: 'big-e in step' });
    assert.equal(e.hash('big'), d.hash('big'));
  });

  it('placement spreads primaries and standbys within capacities, and a new host takes a share', async () => {
    const client = await host('pl-client', { capacity: 0 });
    const ids = ['pl-1', 'pl-2', 'pl-3'];
    for (const id of ids) await host(id, { capacity: 4 });
    await until(() => ids.every((id) => client.liveHosts().includes(id)));
    const placed = [];
    for (let i = 0; i < 6; i++) placed.push(await client.placeSession('counter', `pl-${i}`));
    const load = new Map<string, number>();
    for (const r of placed) {
      assert.notEqual(r.primary, r.standby, 'never its own standby');
      assert.ok(r.standby, `every session has a standby: ${JSON.stringify(placed)}`);
      for (const h of [r.primary, r.standby]) load.set(h, (load.get(h) ?? 0) + 1);
    }
    // 6 sessions x 2 copies over 3 hosts of capacity 4: 4 each, nobody over.
    assert.deepEqual([...load.values()].sort(), [4, 4, 4]);
    await assert.rejects(client.placeSession('counter', 'pl-full'), /no live host has room/);
    await host('pl-4', { capacity: 4 });
    // Heard, with its load: until then a placement finds no room and changes nothing.
    let late: Awaited<ReturnType<Host['placeSession']>> | undefined;
    await until(async () => {
      late = await client.placeSession('counter', 'pl-late').catch(() => undefined);
      return late !== undefined;
    });
    assert.equal(late?.primary, 'pl-4', 'the new host, the only one with room, takes it');
  });
});
