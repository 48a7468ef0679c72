import { strict as assert } from 'node:assert';
import type { Chat } from '../../actors/index.ts';
import { createHost, defineActor } from '../../runtime/index.ts';
import { until } from '../helpers/until.ts';
import { useExampleMesh } from './example-mesh.ts';

/**
 * What the actor API did not do as described, found while writing the
 * examples; each test failed before its fix (replies holding pieces of the
 * draft: `undraft` in runtime/transition.ts; the leaves of a crashed
 * gateway's connections: the hello's `previous`).
 */
describe('examples: the actor API as described, where it once was not', function () {
  const m = useExampleMesh();

  it('a handler may reply with a list of entries of its state (not only the state itself)', async () => {
    const shelf = defineActor({
      name: 'shelf',
      initialState: { books: [{ title: 'a' }, { title: 'b' }] },
      handlers: {
        // A read: the reply is a new array holding entries of the draft.
        titled: (s, prefix: string) => s.books.filter((b) => b.title.startsWith(prefix)),
      },
    });
    const errors: Error[] = [];
    const host = await createHost({
      nats: m.natsUrl,
      actors: [shelf],
      hostId: 'shelf-host',
      onError: (err) => errors.push(err),
    });
    try {
      await host.openSession('shelf', 'shelf-1');
      assert.deepEqual(await host.request('shelf-1', 'titled', 'a'), [{ title: 'a' }]);
      assert.deepEqual(errors, []);
    } finally {
      await host.close();
    }
  });

  it("a client whose gateway was SIGKILLed leaves: onLeave runs for the dead gateway's connections", async () => {
    await m.startHosts('p1', 'p2');
    const a = await m.startGateway('gw-a');
    const b = await m.startGateway('gw-b');
    const ann = await m.connect('ann', 'chat-gw', 'chat', { urls: [a, b] });
    await m.connect('bob', 'chat-gw', 'chat', { urls: [b] });
    const present = async () => (await m.primaryState<Chat>('chat-gw')).state.present;
    await until(async () => Object.keys(await present()).length === 2, { message: 'both present' });
    m.process('gw-a').signal('SIGKILL');
    await until(() => ann.session.reconnects === 1 && ann.session.connected, {
      message: 'ann moved to gw-b',
    });
    // ann's connection through gw-a leaves (reason lost) when she joins through gw-b.
    const left = await until(async () => (await present()).ann === 1, { timeoutMs: 10_000 }).then(
      () => true,
      () => false,
    );
    assert.deepEqual(await present(), { ann: 1, bob: 1 }, `ann's dead connection left: ${left}`);
  });
});
