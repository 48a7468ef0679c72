import { strict as assert } from 'node:assert';
import { chat, HISTORY, type Chat, type ChatMessage } from '../../actors/index.ts';
import type { RequestError } from '../../gateway/index.ts';
import { exactlyOnce } from '../helpers/stream.ts';
import { until } from '../helpers/until.ts';
import { useExampleMesh, type ExampleClient } from './example-mesh.ts';

/** What a client's view holds (actors/chat.ts `view`). */
type ChatView = { present: string[]; last: number };

const messagesOf = (c: ExampleClient) =>
  c.events.filter((e) => e.name === 'message').map((e) => e.payload as ChatMessage);
const presenceOf = (c: ExampleClient) =>
  c.events
    .filter((e) => e.name === 'presence')
    .map((e) => e.payload as { client: string; present: boolean; reason?: string });

describe('examples: chat room through a SIGKILL of the primary', function () {
  const m = useExampleMesh();

  it('every acknowledged message once, in order, authored by its sender; presence intact (a failover is no leave, a close is)', async () => {
    await m.startHosts('h1', 'h2', 'h3');
    await m.startGateway();
    const sid = 'chat-1';
    const clients: ExampleClient[] = [];
    for (const id of ['ann', 'bob', 'cat']) clients.push(await m.connect(id, sid, 'chat'));
    const [ann, bob, cat] = clients as [ExampleClient, ExampleClient, ExampleClient];
    await until(
      () => clients.every((c) => (c.session.state as ChatView | undefined)?.present.length === 3),
      { message: 'everyone present in every view' },
    );

    // The author is the sender: a payload cannot name another, and internal handlers are refused.
    await assert.rejects(
      ann.session.request('say', { text: 'hi', author: 'bob' }),
      (err: RequestError) => err.code === 'invalid_message',
    );
    await assert.rejects(
      ann.session.request('announce', 'I am the room'),
      (err: RequestError) => err.code === 'not_callable',
    );

    // Each client posts 50 messages from two writers; the primary dies after 60 answers.
    const perWriter = 25;
    const sent: { text: string; n: number; writer: string }[] = [];
    let killed: { host: string; at: number } | undefined;
    const writer = async (c: ExampleClient, w: number) => {
      for (let i = 0; i < perWriter; i++) {
        const text = `${c.id}:${w}:${i}`;
        sent.push({
          text,
          n: await c.session.request<number>('say', text),
          writer: `${c.id}:${w}`,
        });
        if (sent.length === 60) killed = m.killPrimary(sid);
      }
    };
    await Promise.all(clients.flatMap((c) => [writer(c, 0), writer(c, 1)]));
    const total = clients.length * 2 * perWriter;
    assert.ok(killed, 'the primary was killed mid-conversation');
    await m.failedOver(sid, killed.host);
    assert.deepEqual(exactlyOnce(sent.map((s) => s.n)), { lost: [], doubled: [] });
    // A writer's messages keep the order it sent them in.
    for (const w of new Set(sent.map((s) => s.writer))) {
      const ns = sent.filter((s) => s.writer === w).map((s) => s.n);
      assert.deepEqual(
        ns,
        [...ns].sort((a, b) => a - b),
        `${w}'s messages in order`,
      );
    }

    // Every client got every message once, in the room's order, each by its sender.
    const byText = new Map(sent.map((s) => [s.text, s.n]));
    await until(() => clients.every((c) => messagesOf(c).length >= total), {
      message: 'every message event delivered',
    });
    for (const c of clients) {
      const got = messagesOf(c);
      assert.deepEqual(
        got.map((msg) => msg.n),
        Array.from({ length: total }, (_, i) => i + 1),
        `${c.id}: every message once, in order`,
      );
      for (const msg of got) {
        assert.equal(msg.author, msg.text.split(':')[0], `message ${msg.n}'s author`);
        assert.equal(msg.n, byText.get(msg.text), `message ${msg.n} is the one acknowledged`);
      }
    }
    // The room keeps the last HISTORY messages: the same as the events.
    const history = await bob.session.request<ChatMessage[]>('history');
    assert.deepEqual(history, messagesOf(bob).slice(-HISTORY));
    assert.deepEqual(
      (await bob.session.request<ChatMessage[]>('history', total - 2)).map((msg) => msg.n),
      [total - 1, total],
    );

    // A failover is no leave: everyone still present, nobody told otherwise, nobody re-joined.
    await m.viewsSettle<Chat>(sid, clients, chat.view!);
    assert.deepEqual((ann.session.state as ChatView).present, ['ann', 'bob', 'cat']);
    for (const c of clients) {
      assert.deepEqual(
        presenceOf(c).filter((p) => !p.present),
        [],
        `${c.id} heard of no one leaving`,
      );
      assert.equal(c.session.reconnects, 0, `${c.id} kept its connection`);
      assert.equal(c.stateFrames, 1, `${c.id} got its view whole once, then patches`);
      assert.deepEqual(c.problems, []);
    }
    const state = (await m.primaryState<Chat>(sid)).state;
    assert.deepEqual(state.present, { ann: 1, bob: 1, cat: 1 }, 'one connection each');

    // A whisper reaches only its two ends (`ctx.emit` with `to`). Events come in commit order:
    // once ann has the message said after it, she would have had the whisper too.
    await bob.session.request('whisper', { to: 'cat', text: 'psst' });
    const after = await ann.session.request<number>('say', 'anyone?');
    await until(() => [ann, bob, cat].every((c) => messagesOf(c).some((msg) => msg.n === after)));
    const whispers = (c: ExampleClient) => c.events.filter((e) => e.name === 'whisper');
    for (const c of [bob, cat])
      assert.deepEqual(
        whispers(c).map((e) => e.payload),
        [{ from: 'bob', to: 'cat', text: 'psst' }],
      );
    assert.deepEqual(whispers(ann), []);

    // A notice from TypeScript (internal handler): authored by the service, not by a client.
    const notice = (await m.mesh.request(sid, 'announce', 'maintenance at noon')) as number;
    await until(() => messagesOf(ann).some((msg) => msg.n === notice));
    assert.equal(messagesOf(ann).at(-1)?.author, '$host');

    // Cat closes its connection: it leaves (reason 'closed'), the others see it.
    await cat.session.close();
    for (const c of [ann, bob])
      await until(() => presenceOf(c).some((p) => p.client === 'cat' && !p.present), {
        message: `${c.id} hears cat leave`,
      });
    assert.deepEqual(presenceOf(ann).at(-1), { client: 'cat', present: false, reason: 'closed' });
    await m.viewsSettle<Chat>(sid, [ann, bob], chat.view!);
    assert.deepEqual((bob.session.state as ChatView).present, ['ann', 'bob']);
    m.assertNoErrors();
  });
});
