import { strict as assert } from 'node:assert';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import {
  CorruptPatchError,
  createHost,
  StaleEpochError,
  type FtmError,
  type Host,
} from '../../runtime/index.ts';
import { createValueCodec } from '../../runtime/codec.ts';
import { CommitFlag, ConsistencyCode, encodeCommit } from '../../runtime/wire.ts';
import { exampleActors } from '../../actors/index.ts';
import { useNatsServer, quietDetection } from '../helpers/nats.ts';
import { until } from '../helpers/until.ts';
import { collectErrors, type ExpectedError } from '../helpers/errors.ts';

/** What the runtime may report here, and why. */
const expectedErrors: ExpectedError[] = [];

describe('a standby refuses bad output and keeps its replica intact', function () {
  const reported = collectErrors();
  afterEach(() => reported.assertNone(expectedErrors));
  const nats = useNatsServer();
  const codec = createValueCodec();
  const errors: FtmError[] = [];
  let a: Host;
  let b: Host;
  let forger: NatsConnection;

  before(async () => {
    a = await createHost({
      ...quietDetection,
      nats: nats.url,
      actors: exampleActors,
      hostId: 'ra',
      onError: reported.onError,
    });
    b = await createHost({
      ...quietDetection,
      nats: nats.url,
      actors: exampleActors,
      hostId: 'rb',
      onError: (e) => errors.push(e),
    });
    forger = await connect({ servers: nats.url });
    await a.openSession('counter', 'forged', { standby: 'rb' });
    await a.request('forged', 'add', 7);
    await until(() => b.info('forged')?.seq === 1);
  });
  after(async () => {
    await forger?.close();
    await a?.close();
    await b?.close();
  });

  const replace = (value: number) => codec.encode([{ op: 'replace', path: ['value'], value }]);
  const forge = async (epoch: number, seq: number, patches: Uint8Array) => {
    const flags = ConsistencyCode.standby | CommitFlag.hasReply;
    forger.publish(
      'ftm.s.forged.out',
      encodeCommit(flags, { epoch, term: 0, seq }, 'forged', codec.encode(0), patches),
    );
    await forger.flush();
  };

  /** Frames the standby refused on the session's output subject, as it counts them. */
  const refused = () => b.status().dropped['ftm.s.*.out'] ?? 0;
  const causes = () => errors.map((e) => e.cause);

  it('refuses a commit of an older epoch', async () => {
    const before = b.hash('forged');
    const n = refused();
    await forge(0, 2, replace(999));
    await until(() => refused() === n + 1);
    assert.ok(
      causes().some((c) => c instanceof StaleEpochError),
      'reported as a stale epoch',
    );
    assert.equal(b.hash('forged'), before);
    assert.equal(b.info('forged')?.seq, 1);
  });

  it('refuses undecodable patches and patches that do not fit the state', async () => {
    const before = b.hash('forged');
    const n = refused();
    await forge(1, 2, new Uint8Array([0xc1, 0xc1, 0xc1]));
    await forge(1, 2, codec.encode([{ op: 'replace', path: ['no', 'such', 'path'], value: 1 }]));
    await until(() => refused() === n + 2);
    assert.ok(
      causes().some((c) => c instanceof CorruptPatchError),
      'reported as corrupt',
    );
    assert.equal(b.hash('forged'), before);
    assert.equal(b.info('forged')?.seq, 1);
  });

  it('holds back an early commit until the gap before it is filled, then applies in order', async () => {
    await forge(1, 3, replace(100));
    assert.equal(b.info('forged')?.seq, 1);
    // The real primary's commit 2 fills the gap; the held-back commit 3 follows it.
    await a.request('forged', 'add', 1);
    await until(() => b.info('forged')?.seq === 3);
    assert.equal((b.state('forged') as { value: number }).value, 100);
  });
});
