import { strict as assert } from 'node:assert';
import type { LedgerEntry } from '../../actors/index.ts';
import { exactlyOnce } from '../helpers/stream.ts';
import { useExampleMesh, type ExampleClient } from './example-mesh.ts';

/**
 * `clients` each send `perClient` adds of 1, two at a time; `onAnswered` sees
 * how many were answered in all. Resolves with each reply and who got it.
 */
async function addStream(
  clients: readonly ExampleClient[],
  perClient: number,
  onAnswered: (n: number) => void,
): Promise<{ value: number; by: string }[]> {
  const replies: { value: number; by: string }[] = [];
  const worker = async (c: ExampleClient, count: number) => {
    for (let i = 0; i < count; i++) {
      replies.push({ value: await c.session.request<number>('add', 1), by: c.id });
      onAnswered(replies.length);
    }
  };
  await Promise.all(clients.flatMap((c) => [worker(c, perClient / 2), worker(c, perClient / 2)]));
  return replies;
}

describe('examples: counter and ledger through a SIGKILL of the primary', function () {
  const m = useExampleMesh();

  it('counter: two clients adding through the gateway see every add answered once, no reconnect', async () => {
    await m.startHosts('c1', 'c2', 'c3');
    await m.startGateway();
    await m.mesh.placeSession('counter', 'count-1');
    const clients = [await m.connect('ann', 'count-1'), await m.connect('bob', 'count-1')];
    let killed = '';
    const replies = await addStream(clients, 200, (n) => {
      if (n === 120) killed = m.killPrimary('count-1').host;
    });
    assert.ok(killed, 'the primary was killed mid-stream');
    assert.deepEqual(exactlyOnce(replies.map((r) => r.value)), { lost: [], doubled: [] });
    assert.equal(await clients[0]!.session.request('get'), 400, 'the state the replies imply');
    assert.notEqual((await m.failedOver('count-1', killed)).primary, killed);
    for (const c of clients) {
      assert.equal(c.session.reconnects, 0, `${c.id} kept its connection`);
      assert.deepEqual(c.problems, []);
    }
    m.assertNoErrors();
  });

  it('ledger (durable), opened by the first token naming it: every entry once, by its sender', async () => {
    await m.startHosts('l1', 'l2', 'l3');
    await m.startGateway();
    // The token's `actor` claim: the gateway opens the session on the first hello.
    const clients = [
      await m.connect('ann', 'ledger-1', 'ledger'),
      await m.connect('bob', 'ledger-1', 'ledger'),
    ];
    assert.equal(m.mesh.owner('ledger-1')?.actor, 'ledger');
    let killed = '';
    const replies = await addStream(clients, 100, (n) => {
      if (n === 60) killed = m.killPrimary('ledger-1').host;
    });
    assert.ok(killed);
    assert.deepEqual(exactlyOnce(replies.map((r) => r.value)), { lost: [], doubled: [] });
    await m.failedOver('ledger-1', killed);
    const recent = await clients[1]!.session.request<LedgerEntry[]>('recent');
    assert.deepEqual(
      recent.map((e) => e.n),
      Array.from({ length: 20 }, (_, i) => 181 + i),
      'the last 20 entries, in order',
    );
    // Each balance was answered to one client: the entry that made it names that client.
    const answeredTo = new Map(replies.map((r) => [r.value, r.by]));
    for (const e of recent) assert.equal(e.by, answeredTo.get(e.n), `entry ${e.n}'s sender`);
    // A request made from TypeScript has no client: its sender is `$host`.
    assert.equal(await m.mesh.request('ledger-1', 'add', 5), 205);
    const last = (await m.mesh.request('ledger-1', 'recent')) as LedgerEntry[];
    assert.equal(last.at(-1)?.by, '$host');
    for (const c of clients) {
      assert.equal(c.session.reconnects, 0, `${c.id} kept its connection`);
      assert.deepEqual(c.problems, []);
    }
    m.assertNoErrors();
  });
});
