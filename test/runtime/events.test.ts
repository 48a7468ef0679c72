import { strict as assert } from 'node:assert';
import { createHost, InvalidMessageError, type Host } from '../../runtime/index.ts';
import { exampleActors } from '../../actors/index.ts';
import { useNatsServer, quietDetection } from '../helpers/nats.ts';
import { until } from '../helpers/until.ts';
import { collectErrors, type ExpectedError } from '../helpers/errors.ts';

/** What the runtime may report here, and why. */
const expectedErrors: ExpectedError[] = [];

describe('events, message checks and datagrams', function () {
  const reported = collectErrors();
  afterEach(() => reported.assertNone(expectedErrors));
  const nats = useNatsServer();
  const hosts: Host[] = [];
  after(async () => {
    for (const h of hosts) await h.close();
  });
  const host = async (hostId: string, capacity?: number) => {
    const h = await createHost({
      ...quietDetection,
      nats: nats.url,
      actors: exampleActors,
      hostId,
      onError: reported.onError,
      ...(capacity === undefined ? {} : { capacity }),
    });
    hosts.push(h);
    return h;
  };

  it('events reach clients in commit order, released like replies', async () => {
    const a = await host('ev-a');
    await host('ev-b');
    const c = await host('ev-c', 0);
    await a.openSession('room', 'ev', { standby: 'ev-b' });
    const seen: string[] = [];
    c.client('ev').onEvent((event, payload) => seen.push(`${event}:${JSON.stringify(payload)}`));
    await c.request('ev', 'join', 'ann');
    await c.request('ev', 'say', 'hello');
    await c.request('ev', 'leave', 'ann');
    await until(() => seen.length === 3);
    assert.deepEqual(seen, [
      'joined:{"name":"ann"}',
      'said:{"text":"hello","n":1}',
      'left:{"name":"ann"}',
    ]);
  });

  it("a client's first request, when its handler throws, runs once (the first epoch seen sends nothing again)", async () => {
    const a = await host('once-a');
    await host('once-b');
    const c = await host('once-c', 0);
    await a.openSession('room', 'once', { standby: 'once-b' });
    // c's client of 'once' knows no epoch yet: the refusal brings epoch 1.
    await assert.rejects(c.request('once', 'leave', 'ghost'), /ghost is not in the room/);
    await c.request('once', 'join', 'ann'); // after it, any second run would have been reported
    const runs = reported.errors.filter((e) => /ghost is not in the room/.test(e.message));
    assert.equal(runs.length, 1, 'the throwing handler ran once');
    reported.errors.length = 0;
  });

  it("a payload failing the actor's check is refused with InvalidMessageError and changes nothing", async () => {
    const a = await host('mc-a');
    await host('mc-b');
    await a.openSession('room', 'mc', { standby: 'mc-b' });
    await a.request('mc', 'join', 'bob');
    const before = a.info('mc')!.seq;
    await assert.rejects(a.request('mc', 'join', 42), InvalidMessageError);
    await assert.rejects(a.request('mc', 'say', 'x'.repeat(2000)), /at most 1000/);
    assert.equal(a.info('mc')!.seq, before);
    assert.deepEqual(Object.keys((a.state('mc') as { participants: object }).participants), [
      'bob',
    ]);
  });

  it('datagrams go to the primary only, are forwarded to the others, and reach the new primary after a failover', async () => {
    const a = await host('dg-a');
    await host('dg-b');
    const c = await host('dg-c', 0);
    await a.openSession('room', 'dg', { standby: 'dg-b' });
    const got: string[] = [];
    const client = c.client('dg');
    client.onDatagram((data, from, to) =>
      got.push(`${from}>${to || '*'}:${Buffer.from(data).toString()}`),
    );
    await c.request('dg', 'join', 'ann'); // subscriptions are on the server by now
    client.sendDatagram(Buffer.from('frame-1'), 'ann');
    await until(() => got.includes('ann>*:frame-1'));
    await a.close();
    // Sent until the new primary forwards one: the subscriber swap on promotion.
    await until(
      () => {
        client.sendDatagram(Buffer.from('frame-2'), 'ann');
        return got.includes('ann>*:frame-2');
      },
      { message: 'a datagram forwarded by the new primary' },
    );
    // b took over (or, after a false detection under load, another host after it): never a.
    assert.notEqual(c.owner('dg')?.primary, 'dg-a');
    assert.ok(
      hosts.some((h) => h.failovers().some((f) => f.sid === 'dg' && f.from === 'dg-a')),
      'a host took dg over from dg-a',
    );
  });
});
