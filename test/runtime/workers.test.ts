import { strict as assert } from 'node:assert';
import { createHost, defineActor, stateHash, type Host } from '../../runtime/index.ts';
import { useNatsServer, quietDetection } from '../helpers/nats.ts';
import { until } from '../helpers/until.ts';
import { collectErrors, type ExpectedError } from '../helpers/errors.ts';

/** What the runtime may report here, and why. */
const expectedErrors: ExpectedError[] = [];

type Mix = { expected: number; results: number[]; acc: number };

/** Starts uneven CPU jobs on worker threads; folds their results in commit order. */
const mixer = defineActor<Mix>({
  name: 'mixer',
  initialState: { expected: 0, results: [], acc: 0 },
  workers: { module: new URL('../fixtures/mixer-tasks.ts', import.meta.url), size: 2 },
  handlers: {
    start(s, n: number, ctx) {
      s.expected += n;
      for (let i = 0; i < n; i++) {
        ctx.runInWorker('work', { i, spin: Math.floor(ctx.random() * 200_000) }, 'done');
      }
    },
    done(s, p: { result?: number; error?: string }) {
      if (p.result === undefined) throw new Error(p.error);
      s.results.push(p.result);
      // Order-dependent on purpose: copies agree only if they agree on the order.
      s.acc = (s.acc * 31 + p.result) % 1_000_000_007;
    },
  },
});

describe('worker threads: concurrent updates committed in one order', function () {
  const reported = collectErrors();
  afterEach(() => reported.assertNone(expectedErrors));
  const nats = useNatsServer();
  let a: Host;
  let b: Host;
  before(async () => {
    a = await createHost({
      ...quietDetection,
      nats: nats.url,
      actors: [mixer],
      hostId: 'wk-a',
      onError: reported.onError,
    });
    b = await createHost({
      ...quietDetection,
      nats: nats.url,
      actors: [mixer],
      hostId: 'wk-b',
      onError: reported.onError,
    });
  });
  after(async () => {
    await a?.close();
    await b?.close();
  });

  it('primary, standby and a log replay agree over 20 runs', async () => {
    const orders = new Set<string>();
    for (let run = 0; run < 20; run++) {
      const sid = `mix-${run}`;
      await a.openSession('mixer', sid, { standby: 'wk-b' });
      await a.request(sid, 'start', 12);
      await until(() => (a.state(sid) as Mix).results.length === 12, { timeoutMs: 30_000 });
      const seq = a.info(sid)!.seq;
      await until(() => b.info(sid)?.seq === seq);
      assert.equal(b.hash(sid), a.hash(sid), `run ${run}: standby differs`);
      await a.flushLog(sid);
      const replay = await b.readDurable('mixer', sid);
      assert.equal(replay.seq, seq);
      assert.equal(stateHash(replay.state), a.hash(sid), `run ${run}: log replay differs`);
      orders.add((a.state(sid) as Mix).results.join(','));
    }
    // Not asserted (scheduling decides), reported: how many distinct commit orders the runs saw.
    console.log(`      ${orders.size} distinct result orders over 20 runs`);
  });
});
