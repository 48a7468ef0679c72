import { strict as assert } from 'node:assert';
import { connectNats, defineActor } from '../../runtime/index.ts';
import { createValueCodec } from '../../runtime/codec.ts';
import { natsKv } from '../../runtime/nats-stores.ts';
import { storeNames, subjects } from '../../runtime/subjects.ts';
import { exampleActors } from '../../actors/index.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { until } from '../helpers/until.ts';
import { useHosts } from '../helpers/hosts.ts';
import { collectErrors, type ExpectedError } from '../helpers/errors.ts';

/** Ticks every `every` ms, forever: a session whose timer must never be lost. */
const metronome = defineActor<{ ticks: number }>({
  name: 'metronome',
  initialState: { ticks: 0 },
  handlers: {
    start(_s, every: number, ctx) {
      ctx.setTimer('tick', every, 'tick', every);
    },
    tick(s, every: number, ctx) {
      s.ticks++;
      ctx.setTimer('tick', every, 'tick', every);
    },
    get: (s) => s.ticks,
  },
});

/** What the runtime may report here, and why. */
const expectedErrors: ExpectedError[] = [
  { pattern: /hand-off to \S+ failed; serving it here again/, why: 'the failed hand-off' },
  { pattern: /standby \S+ did not catch up in time/, why: 'the failed hand-off' },
];

/**
 * The spots a review of the control plane found risky, each with the test
 * that fails without its fix (PROTOCOL.md names the rules).
 */
describe('risky spots of the control plane (hosts in this process)', function () {
  const reported = collectErrors();
  afterEach(() => reported.assertNone(expectedErrors));
  const nats = useNatsServer();
  const host = useHosts(() => nats.url, reported, { actors: [...exampleActors, metronome] });

  it('a hand-off that fails serves again, runs the timer that came due while it waited, and the drain ends by its deadline', async () => {
    // The standby never acknowledges past seq 2: a hand-off to it cannot complete.
    const a = await host('ho-a', { handOffTimeoutMs: 300 });
    await host('ho-b', { dropAtStandby: (sid, seq) => sid === 'ho' && seq > 2 });
    await a.openSession('metronome', 'ho', { standby: 'ho-b' });
    await a.request('ho', 'start', 20);
    await until(() => (a.state('ho') as { ticks: number }).ticks >= 3);
    const started = performance.now();
    const report = await a.drain(5_000);
    const tookMs = performance.now() - started;
    assert.deepEqual([report.primaries, report.kept], [0, 1], JSON.stringify(report));
    assert.ok(tookMs < 5_000, `the drain ended by its deadline (${tookMs.toFixed(0)} ms)`);
    // Paused ~300 ms with a 20 ms timer: the tick that came due waited, and ran once it
    // served again; the metronome goes on (before, it was dropped and never re-armed).
    const after = (a.state('ho') as { ticks: number }).ticks;
    await until(() => (a.state('ho') as { ticks: number }).ticks >= after + 3, {
      message: 'the timer ticks on after the failed hand-off',
    });
    assert.equal(a.info('ho')?.status, 'primary');
  });

  it('a copy attached but never named is collected by its own host', async () => {
    const a = await host('un-a');
    await host('un-b');
    const c = await host('un-c', { unnamedCopyMs: 300 });
    await a.openSession('counter', 'un', { standby: 'un-b' });
    await a.request('un', 'add', 1);
    // A primary attached un-c (a re-protection whose compare-and-swap then lost, and
    // whose detach request was lost too): the record never names it.
    const nc = await connectNats(nats.url);
    try {
      const codec = createValueCodec();
      const owners = await natsKv(nc, storeNames.owners);
      const revision = (await owners.get('un'))!.revision;
      const sync = { op: 'sync', sid: 'un', actor: 'counter', after: revision, epoch: 1 };
      const answer = codec.decode(
        (await nc.request(subjects.hostControl('un-c'), codec.encode(sync), { timeout: 5_000 }))
          .data,
      ) as { ok?: boolean };
      assert.equal(answer.ok, true, JSON.stringify(answer));
    } finally {
      await nc.close();
    }
    await until(() => c.info('un')?.status === 'attaching', { message: 'un-c holds a copy' });
    await until(() => c.info('un') === undefined, {
      timeoutMs: 5_000,
      message: 'un-c dropped the copy nobody named',
    });
    assert.equal(await a.request('un', 'add', 1), 2, 'the session is untouched');
  });

  it("a host's ownership view holds every record once it has started", async () => {
    // Many records: delivering them takes the watch far longer than the 50 ms a
    // host once waited before it counted its view as ready.
    const nc = await connectNats(nats.url);
    const count = 3_000;
    try {
      const codec = createValueCodec();
      const owners = await natsKv(nc, storeNames.owners);
      const record = { actor: 'counter', primary: 'gone', standby: '', epoch: 1, term: 0 };
      await Promise.all(
        Array.from({ length: count }, (_, i) => owners.create(`v-${i}`, codec.encode(record))),
      );
    } finally {
      await nc.close();
    }
    // failover off: this host must not restore the records of a host that never was.
    const h = await host('vw-a', { failover: false });
    const missing = Array.from({ length: count }, (_, i) => `v-${i}`).filter(
      (sid) => h.owner(sid) === undefined,
    );
    assert.deepEqual(missing.slice(0, 5), [], `${missing.length} records missing from the view`);
  });
});
