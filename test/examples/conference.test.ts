import { strict as assert } from 'node:assert';
import { conference, decodeMedia, encodeMedia, type Conference } from '../../actors/index.ts';
import type { RequestError } from '../../gateway/index.ts';
import { ConnectionClosedError } from '../../gateway/index.ts';
import { until } from '../helpers/until.ts';
import { now, useExampleMesh, type ExampleClient } from './example-mesh.ts';

/** What a participant's view holds (actors/conference.ts `view`). */
type ConferenceView = { dominantSpeaker: string | null; receiving: string[] };

/** Media datagrams one client received, by route (`sender/stream`): when each was sent and arrived. */
type Received = Map<string, { sentAt: number; at: number }[]>;

/** Payload of a test media datagram: [f64 sent at]. */
function media(stream: string): Uint8Array {
  const payload = new Uint8Array(8);
  new DataView(payload.buffer).setFloat64(0, now());
  return encodeMedia(stream, payload);
}

function receive(c: ExampleClient): Received {
  const received: Received = new Map();
  c.session.onDatagram((data, from) => {
    const m = decodeMedia(data);
    if (!m) return;
    const route = `${from}/${m.stream}`;
    let list = received.get(route);
    if (!list) received.set(route, (list = []));
    const sentAt = new DataView(m.payload.buffer, m.payload.byteOffset).getFloat64(0);
    list.push({ sentAt, at: now() });
  });
  return received;
}

const view = (c: ExampleClient) => c.session.state as ConferenceView;

describe('examples: conference bridge through a SIGKILL of the primary', function () {
  const m = useExampleMesh();

  it('media keeps flowing by the forwarding table across the kill (gap measured); roster, mute, speaker and pins intact; nobody re-joins', async () => {
    await m.startHosts('v1', 'v2', 'v3');
    await m.startGateway();
    const sid = 'conf-1';
    const clients: ExampleClient[] = [];
    // One after the other: the first token opens the session, and ann (first in) moderates.
    for (const id of ['ann', 'bob', 'cat'])
      clients.push(await m.connect(id, sid, 'conference', { udp: true }));
    const [ann, bob, cat] = clients as [ExampleClient, ExampleClient, ExampleClient];
    const received = new Map(clients.map((c) => [c.id, receive(c)]));

    for (const c of clients) {
      assert.equal(
        await c.session.request('publish', { name: 'mic', kind: 'audio' }),
        `${c.id}/mic`,
      );
      await c.session.request('publish', { name: 'cam', kind: 'video' });
    }
    await cat.session.request('mute', { audio: true });
    // Bob speaks, then ann clearly louder: ann is the dominant speaker, bob the previous one.
    assert.equal(await bob.session.request('level', 80), 'bob');
    assert.equal(await bob.session.request('level', 80), 'bob');
    assert.equal(await ann.session.request('level', 100), 'bob'); // not clearly louder yet
    assert.equal(await ann.session.request('level', 100), 'ann');
    await cat.session.request('pin', 'bob');
    const expected = {
      'ann/mic': ['bob', 'cat'],
      'ann/cam': ['bob', 'cat'], // the dominant speaker's video
      'bob/mic': ['ann', 'cat'],
      'bob/cam': ['ann', 'cat'], // ann (dominant) watches the previous speaker; cat pinned bob
      'cat/mic': [], // muted
      'cat/cam': [], // nobody watches or pinned cat
    };
    const before = await m.viewsSettle<Conference>(sid, clients, conference.view!);
    assert.deepEqual(before.forwarding, expected);
    assert.deepEqual(view(cat).receiving, ['ann/cam', 'ann/mic', 'bob/cam', 'bob/mic']);

    // Normal use: every stream sends a datagram every 10 ms (cat's muted mic too: the bridge
    // drops it), and each participant reports its level every 100 ms.
    const streams = clients.flatMap((c) => ['mic', 'cam'].map((s) => ({ c, s })));
    const sender = setInterval(() => {
      for (const { c, s } of streams) c.session.sendDatagram(media(s));
    }, 10);
    const levels: Promise<unknown>[] = [];
    const reporter = setInterval(() => {
      for (const [c, level] of [
        [ann, 100],
        [bob, 20],
        [cat, 0],
      ] as const)
        levels.push(c.session.request('level', level));
    }, 100);
    const routes = Object.entries(expected).flatMap(([route, to]) =>
      to.map((id) => ({ route, id })),
    );
    const count = (id: string, route: string, after = 0) =>
      (received.get(id)!.get(route) ?? []).filter((d) => d.sentAt > after).length;
    try {
      await until(() => routes.every(({ route, id }) => count(id, route) >= 20), {
        message: 'media on every route of the table',
      });
      const killed = m.killPrimary(sid);
      // A datagram sent after the kill can only have been forwarded by the new primary.
      await until(() => routes.every(({ route, id }) => count(id, route, killed.at) >= 30), {
        timeoutMs: 10_000,
        message: 'media on every route after the kill',
      });
      const owner = await m.failedOver(sid, killed.host);
      // Per route: the silence a receiver heard, from the last datagram before the first one
      // sent after the kill (only the new primary can have forwarded that one) to it.
      const outages = routes.map(({ route, id }) => {
        const list = received.get(id)!.get(route)!;
        const i = list.findIndex((d) => d.sentAt > killed.at);
        return {
          route: `${route}->${id}`,
          gap: list[i]!.at - list[i - 1]!.at,
          resumed: list[i]!.at - killed.at,
        };
      });
      const worst = outages.reduce((a, b) => (b.gap > a.gap ? b : a));
      const resumed = Math.max(...outages.map((o) => o.resumed));
      console.log(
        `      media across the kill of ${killed.host} (now ${owner.primary}): every route resumed within ` +
          `${resumed.toFixed(1)} ms of the kill; silence per route ` +
          `median ${median(outages.map((o) => o.gap)).toFixed(1)} ms, max ${worst.gap.toFixed(1)} ms (${worst.route})`,
      );
      assert.ok(resumed < 2_000, `media resumed within 2 s of the kill (${resumed.toFixed(0)} ms)`);
      // Nothing forwarded that the table does not allow: a muted mic, self, an unwatched camera.
      for (const c of clients)
        for (const route of received.get(c.id)!.keys())
          assert.ok(
            (expected as Record<string, string[]>)[route]?.includes(c.id),
            `${c.id} received ${route}`,
          );
    } finally {
      clearInterval(sender);
      clearInterval(reporter);
    }
    // Every level report was answered, across the failover: ann stayed the dominant speaker.
    assert.deepEqual(new Set(await Promise.all(levels)), new Set(['ann']));

    // Nobody left or joined again: same roster, same join times, one connection each.
    const after = await m.viewsSettle<Conference>(sid, clients, conference.view!);
    assert.deepEqual(after.forwarding, expected);
    assert.deepEqual(after.participants, levelsOf(after, before));
    assert.equal(after.dominant, 'ann');
    for (const c of clients) {
      assert.equal(c.session.reconnects, 0, `${c.id} kept its connection`);
      assert.equal(c.stateFrames, 1, `${c.id} got its view whole once, then patches`);
      assert.deepEqual(c.problems, []);
    }

    // The new primary forwards by the changes it commits: bob mutes, cat unmutes.
    await bob.session.request('mute', { audio: true });
    await cat.session.request('mute', { audio: false });
    await m.viewsSettle<Conference>(sid, clients, conference.view!);
    assert.deepEqual(view(ann).receiving, ['bob/cam', 'cat/mic']);
    const since = now();
    const burst = setInterval(() => cat.session.sendDatagram(media('mic')), 10);
    try {
      await until(
        () => count('ann', 'cat/mic', since) >= 5 && count('bob', 'cat/mic', since) >= 5,
        {
          message: "cat's unmuted mic reaches ann and bob",
        },
      );
    } finally {
      clearInterval(burst);
    }
    m.assertNoErrors();
  });

  it('the moderator ends the conference: every client is closed with 4410; another participant may not', async () => {
    await m.startHosts('w1', 'w2');
    await m.startGateway();
    const ann = await m.connect('ann', 'conf-2', 'conference');
    const bob = await m.connect('bob', 'conf-2', 'conference');
    await assert.rejects(
      bob.session.request('end'),
      (err: RequestError) =>
        err.code === 'handler_error' && /only the moderator \(ann\)/.test(err.message),
    );
    await ann.session.request('end').catch((err: unknown) => {
      // The close may overtake the reply: the connection ends either way.
      assert.ok(err instanceof ConnectionClosedError, String(err));
    });
    for (const c of [ann, bob]) {
      const err = await c.session.closed();
      assert.equal(err?.closeCode, 4410, `${c.id} closed with 4410`);
    }
    await until(() => m.mesh.owner('conf-2')?.closed, { message: 'the session record closed' });
    m.assertNoErrors([/HandlerError: handler conference\.end threw: only the moderator/]);
  });
});

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
}

/** `before`'s participants with `after`'s levels (levels move with every report; the rest must not). */
function levelsOf(after: Conference, before: Conference): Conference['participants'] {
  return Object.fromEntries(
    Object.entries(before.participants).map(([id, p]) => [
      id,
      { ...p, level: after.participants[id]?.level ?? p.level },
    ]),
  );
}
