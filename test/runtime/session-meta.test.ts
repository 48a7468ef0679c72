import { strict as assert } from 'node:assert';
import { createHost, defineActor, type Host, type HostOptions } from '../../runtime/index.ts';
import { exampleActors } from '../../actors/index.ts';
import { useNatsServer, quietDetection } from '../helpers/nats.ts';
import { until } from '../helpers/until.ts';
import { collectErrors, type ExpectedError } from '../helpers/errors.ts';

/** What the runtime may report here, and why. */
const expectedErrors: ExpectedError[] = [];

type Ticks = { ticks: number[]; target: number; cancelled: number };

/** Ticks every `every` ms until it has `target` ticks; times come from ctx.now(). */
const ticker = defineActor<Ticks>({
  name: 'ticker',
  initialState: { ticks: [], target: 0, cancelled: 0 },
  handlers: {
    start(s, p: { target: number; every: number }, ctx) {
      s.target = p.target;
      ctx.setTimer('tick', p.every, 'tick', p.every);
    },
    tick(s, every: number, ctx) {
      s.ticks.push(ctx.now());
      if (s.ticks.length < s.target) ctx.setTimer('tick', every, 'tick', every);
    },
    armDoomed(_s, _p, ctx) {
      // Long enough that the clearing request, sent once this reply is in, comes first
      // even on a busy machine.
      ctx.setTimer('doomed', 400, 'doomed');
    },
    disarmDoomed(_s, _p, ctx) {
      ctx.clearTimer('doomed');
    },
    doomed(s) {
      s.cancelled++;
    },
  },
});

describe('the replicated session meta: timers, dedup table, lost last commit', function () {
  const reported = collectErrors();
  afterEach(() => reported.assertNone(expectedErrors));
  const nats = useNatsServer();
  const hosts: Host[] = [];
  after(async () => {
    for (const h of hosts) await h.close();
  });
  const host = async (hostId: string, extra: Partial<HostOptions> = {}) => {
    const h = await createHost({
      ...quietDetection,
      nats: nats.url,
      actors: [...exampleActors, ticker],
      hostId,
      onError: reported.onError,
      // The restores here are manual: no host takes over on its own.
      failover: false,
      ...extra,
    });
    hosts.push(h);
    return h;
  };

  it('timers fire on the primary as commits; the standby agrees on state and armed timers', async () => {
    const a = await host('tm-a');
    const b = await host('tm-b');
    await a.openSession('ticker', 'tick', { standby: 'tm-b' });
    await a.request('tick', 'start', { target: 5, every: 15 });
    // The standby holds the armed timer as part of the replicated meta.
    assert.deepEqual(
      b.meta('tick').timers.map(([key]) => key),
      ['tick'],
    );
    await until(() => (a.state('tick') as Ticks).ticks.length === 5);
    const seq = a.info('tick')!.seq;
    await until(() => b.info('tick')?.seq === seq);
    assert.equal(b.hash('tick'), a.hash('tick'));
    const ticks = (a.state('tick') as Ticks).ticks;
    for (let i = 1; i < ticks.length; i++) assert.ok(ticks[i]! - ticks[i - 1]! >= 15);
    assert.deepEqual(a.meta('tick').timers, []);
    assert.deepEqual(b.meta('tick').timers, []);
  });

  it('a cleared timer never fires, on any copy', async () => {
    const a = await host('tc-a');
    const b = await host('tc-b');
    await a.openSession('ticker', 'clear', { standby: 'tc-b' });
    await a.request('clear', 'armDoomed');
    await a.request('clear', 'disarmDoomed');
    assert.deepEqual(b.meta('clear').timers, []);
    // A later timer of the same session firing proves time passed beyond the doomed one's 400 ms.
    await a.request('clear', 'start', { target: 1, every: 450 });
    await until(() => (a.state('clear') as Ticks).ticks.length === 1);
    assert.equal((a.state('clear') as Ticks).cancelled, 0);
  });

  it('the standby holds the same dedup table as the primary', async () => {
    const a = await host('dd-a');
    const b = await host('dd-b');
    await a.openSession('counter', 'dd', { standby: 'dd-b' });
    for (let i = 0; i < 20; i++) await a.request('dd', 'add', i, { requestId: `req-${i}` });
    const seq = a.info('dd')!.seq;
    await until(() => b.info('dd')?.seq === seq);
    const ids = (h: Host) => h.meta('dd').dedup.map(([id, s]) => `${id}@${s}`);
    assert.deepEqual(ids(b), ids(a));
    assert.equal(ids(a).length, 20);
  });

  it('after a cold restore, a repeated request id gets its first reply and is not applied again', async () => {
    const a = await host('rd-a');
    const b = await host('rd-b');
    await a.openSession('counter', 'rd', { standby: 'rd-b' });
    await a.request('rd', 'add', 5, { requestId: 'first' });
    await a.snapshotNow('rd');
    const reply = await a.request('rd', 'add', 7, { requestId: 'second' });
    assert.equal(reply, 12);
    await a.close();
    await b.close();

    const c = await host('rd-c');
    await host('rd-d');
    await c.restoreSession('counter', 'rd', { standby: 'rd-d' });
    // `first` is in the snapshot's table, `second` only in the log after it.
    assert.equal(await c.request('rd', 'add', 5, { requestId: 'first' }), 5);
    assert.equal(await c.request('rd', 'add', 7, { requestId: 'second' }), 12);
    assert.equal((c.state('rd') as { value: number }).value, 12);
    assert.equal(await c.request('rd', 'add', 1, { requestId: 'third' }), 13);
  });

  it('an armed timer survives a cold restore and fires on the new primary', async () => {
    const a = await host('rt-a');
    const b = await host('rt-b');
    await a.openSession('ticker', 'rt', { standby: 'rt-b' });
    await a.request('rt', 'start', { target: 1, every: 1_500 });
    await a.close();
    await b.close();

    const c = await host('rt-c');
    await host('rt-d');
    // Read without serving: once served, a timer already due fires at once.
    const durable = await c.readDurable('ticker', 'rt');
    assert.deepEqual(
      durable.meta.timers.map(([key]) => key),
      ['tick'],
    );
    await c.restoreSession('ticker', 'rt', { standby: 'rt-d' });
    await until(() => (c.state('rt') as Ticks).ticks.length === 1, { timeoutMs: 5_000 });
    assert.deepEqual(c.meta('rt').timers, []);
  });

  it('a lost last commit is sent again, so its held reply is released', async () => {
    let drops = 0;
    // The log would release the reply too (standby mode): it flushes once an hour here.
    const a = await host('lost-a', { logFlushIntervalMs: 3_600_000 });
    await host('lost-b', {
      dropAtStandby: (sid, seq) => sid === 'lost' && seq === 1 && drops++ === 0,
    });
    await a.openSession('counter', 'lost', { standby: 'lost-b' });
    // No later commit reveals the gap: only the primary's retransmission can release this reply.
    assert.equal(await a.request('lost', 'add', 3, { timeoutMs: 3_000 }), 3);
    assert.equal(drops >= 2, true, 'the first copy was dropped and a second one arrived');
  });
});
