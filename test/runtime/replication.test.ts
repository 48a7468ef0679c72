import { strict as assert } from 'node:assert';
import {
  createHost,
  defineActor,
  HandlerError,
  UnknownMessageTypeError,
  type ConsistencyMode,
  type Host,
} from '../../runtime/index.ts';
import { useNatsServer, quietDetection } from '../helpers/nats.ts';
import { until } from '../helpers/until.ts';
import { collectErrors, type ExpectedError } from '../helpers/errors.ts';

/** What the runtime may report here, and why. */
const expectedErrors: ExpectedError[] = [];

type Doc = {
  items: Record<string, { n: number; tags: string[] }>;
  list: number[];
  bag: Map<string, Uint8Array>;
};

/** Random edits over nested objects, arrays, deletions, Maps and binary values. */
function fuzzActor(consistency: ConsistencyMode) {
  return defineActor<Doc>({
    name: `fuzz-${consistency}`,
    consistency,
    initialState: () => ({ items: {}, list: [], bag: new Map() }),
    handlers: {
      edit(s, _p, ctx) {
        const r = () => ctx.random();
        const key = `k${Math.floor(r() * 50)}`;
        switch (Math.floor(r() * 6)) {
          case 0:
            s.items[key] = { n: ctx.seq, tags: [key] };
            break;
          case 1:
            delete s.items[key];
            break;
          case 2:
            if (s.items[key]) s.items[key].tags.push(String(ctx.seq));
            break;
          case 3:
            if (s.list.length > 20) s.list.splice(Math.floor(r() * s.list.length), 1);
            else s.list.push(ctx.seq);
            break;
          case 4:
            s.bag.set(key, new Uint8Array([ctx.seq & 255, (ctx.seq >> 8) & 255]));
            break;
          default:
            s.bag.delete(key);
        }
        return ctx.seq;
      },
      boom(s) {
        s.list.push(-1);
        throw new Error('boom');
      },
    },
  });
}

const modes: ConsistencyMode[] = ['async', 'standby', 'durable'];
const actors = modes.map(fuzzActor);

describe('replication between a primary and a standby', function () {
  const reported = collectErrors();
  afterEach(() => reported.assertNone(expectedErrors));
  const nats = useNatsServer();
  let a: Host;
  let b: Host;

  before(async () => {
    a = await createHost({
      ...quietDetection,
      nats: nats.url,
      actors,
      hostId: 'host-a',
      onError: reported.onError,
    });
    b = await createHost({
      ...quietDetection,
      nats: nats.url,
      actors,
      hostId: 'host-b',
      onError: reported.onError,
    });
  });
  after(async () => {
    await a?.close();
    await b?.close();
  });

  for (const mode of modes) {
    it(`reaches an identical state after 10,000 random transactions (${mode})`, async () => {
      const sid = `fuzz-${mode}`;
      await a.openSession(`fuzz-${mode}`, sid, { standby: 'host-b' });
      const window = 200;
      for (let i = 0; i < 10_000; i += window) {
        const replies = await Promise.all(
          Array.from({ length: window }, () => a.request(sid, 'edit')),
        );
        assert.equal(new Set(replies).size, window, 'each request applied once, with its own seq');
      }
      await until(() => b.info(sid)?.seq === 10_000, { message: 'standby reaches seq 10000' });
      assert.equal(a.info(sid)?.seq, 10_000);
      assert.equal(b.hash(sid), a.hash(sid));
    });
  }

  it('a throwing handler rolls back: no patch, a typed error, the session goes on', async () => {
    const sid = 'rollback';
    await a.openSession('fuzz-standby', sid, { standby: 'host-b' });
    await a.request(sid, 'edit');
    const before = a.hash(sid);
    await assert.rejects(a.request(sid, 'boom'), HandlerError);
    await assert.rejects(a.request(sid, 'nope'), UnknownMessageTypeError);
    assert.equal(a.hash(sid), before);
    assert.equal(a.info(sid)?.seq, 1);
    assert.equal(await a.request(sid, 'edit'), 2);
    await until(() => b.info(sid)?.seq === 2);
    assert.equal(b.hash(sid), a.hash(sid));
    reported.assertNone([
      { pattern: /HandlerError: handler fuzz-standby.boom threw/, why: 'provoked' },
      { pattern: /UnknownMessageTypeError: actor fuzz-standby has no handler/, why: 'provoked' },
    ]);
  });

  it('a repeated request id is applied once and answered with the first reply', async () => {
    const sid = 'dedup';
    await a.openSession('fuzz-async', sid, { standby: 'host-b' });
    const first = await a.request(sid, 'edit', undefined, { requestId: 'same' });
    const again = await a.request(sid, 'edit', undefined, { requestId: 'same' });
    assert.equal(again, first);
    assert.equal(a.info(sid)?.seq, 1);
  });
});
