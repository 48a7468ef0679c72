import { strict as assert } from 'node:assert';
import { createHost, defineAdapter, HandlerError, type Host } from '../../runtime/index.ts';
import { useNatsServer, quietDetection } from '../helpers/nats.ts';
import { until } from '../helpers/until.ts';
import { collectErrors, type ExpectedError } from '../helpers/errors.ts';

/** What the runtime may report here, and why. */
const expectedErrors: ExpectedError[] = [];

/** An existing service: a plain class that keeps its own state and knows nothing of ftmesh. */
class Board {
  strokes: { id: number; points: number[] }[] = [];
  owners: Record<string, string> = {};
  private next = 1;
  draw(points: number[], owner: string): number {
    const id = this.next++;
    this.strokes.push({ id, points });
    this.owners[String(id)] = owner;
    return id;
  }
  erase(id: number): void {
    const i = this.strokes.findIndex((s) => s.id === id);
    if (i < 0) throw new Error(`no stroke ${id}`);
    this.strokes.splice(i, 1);
    delete this.owners[String(id)];
  }
  toJSON() {
    return { strokes: this.strokes, owners: this.owners, next: this.next };
  }
  load(s: { strokes: Board['strokes']; owners: Record<string, string>; next: number }): void {
    this.strokes = s.strokes;
    this.owners = s.owners;
    this.next = s.next;
  }
}

const board = defineAdapter({
  name: 'board',
  create: () => new Board(),
  getState: (b) => b.toJSON(),
  setState: (b, s) => b.load(s),
  handlers: {
    draw: (b, p: { points: number[]; owner: string }) => b.draw(p.points, p.owner),
    erase: (b, id: number) => b.erase(id),
    move(b, p: { id: number; dx: number }) {
      const s = b.strokes.find((x) => x.id === p.id);
      if (!s) throw new Error(`no stroke ${p.id}`);
      s.points = s.points.map((v) => v + p.dx);
    },
  },
});

describe('the adapter for existing services', function () {
  const reported = collectErrors();
  afterEach(() => reported.assertNone(expectedErrors));
  const nats = useNatsServer();
  let a: Host;
  let b: Host;
  before(async () => {
    a = await createHost({
      ...quietDetection,
      nats: nats.url,
      actors: [board],
      hostId: 'ad-a',
      onError: reported.onError,
    });
    b = await createHost({
      ...quietDetection,
      nats: nats.url,
      actors: [board],
      hostId: 'ad-b',
      onError: reported.onError,
    });
  });
  after(async () => {
    await a?.close();
    await b?.close();
  });

  it('replicates a plain class through JSON Patch diffs; the standby ends equal', async () => {
    await a.openSession('board', 'wb', { standby: 'ad-b' });
    const ids: number[] = [];
    for (let i = 0; i < 300; i++) {
      const r = (i * 7919) % 10;
      if (r < 5 || ids.length === 0) {
        ids.push(
          (await a.request('wb', 'draw', {
            points: [i, i + 1, i + 2],
            owner: `u${i % 3}`,
          })) as number,
        );
      } else if (r < 8) {
        await a.request('wb', 'move', { id: ids[i % ids.length], dx: 1 });
      } else {
        await a.request('wb', 'erase', ids.splice(i % ids.length, 1)[0]);
      }
    }
    await until(() => b.info('wb')?.seq === a.info('wb')?.seq);
    assert.equal(b.hash('wb'), a.hash('wb'));
    assert.equal((b.state('wb') as { strokes: unknown[] }).strokes.length, ids.length);
  });

  it('a throwing handler puts the service back and replicates nothing', async () => {
    const before = a.hash('wb');
    const seq = a.info('wb')!.seq;
    await assert.rejects(a.request('wb', 'erase', 999_999), HandlerError);
    assert.equal(a.hash('wb'), before);
    assert.equal(a.info('wb')?.seq, seq);
    // The service itself was rolled back too: the next diff is against the same state.
    await a.request('wb', 'draw', { points: [1], owner: 'x' });
    await until(() => b.info('wb')?.seq === seq + 1);
    assert.equal(b.hash('wb'), a.hash('wb'));
    reported.assertNone([{ pattern: /HandlerError: handler board.erase threw/, why: 'provoked' }]);
  });
});
