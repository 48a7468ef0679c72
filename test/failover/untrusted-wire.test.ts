import { strict as assert } from 'node:assert';
import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm } from '@nats-io/kv';
import { connect, mintToken, type ConnectionEvent, type Session } from '../../gateway/index.ts';
import {
  connectNats,
  createClient,
  subjects,
  type FtmError,
  type MeshClient,
  type OwnerRecord,
} from '../../runtime/index.ts';
import { createValueCodec } from '../../runtime/codec.ts';
import { storeNames } from '../../runtime/subjects.ts';
import { publishGarbage, type GarbageOptions } from '../helpers/garbage.ts';
import { useNatsServer } from '../helpers/nats.ts';
import { monitorOutput } from '../helpers/output-monitor.ts';
import {
  spawnNode,
  startHostProcesses,
  stopAll,
  useProcessesPerTest,
  type NodeProcess,
} from '../helpers/processes.ts';
import { exactlyOnce, streamAdds } from '../helpers/stream.ts';
import { until } from '../helpers/until.ts';

/**
 * Every message from the wire is untrusted: anyone on the account can publish
 * anything on the subjects the runtime subscribes to. Garbage there may be
 * refused (and reported), but must not break a subscriber: a throw in a NATS
 * callback ends the client's read loop ("reader closed"); nothing is read any
 * more, pongs included, so seconds later the client gives the connection up
 * as stale and reconnects, the server announces the disconnect, and every
 * session of that host fails over.
 */

const secret = 'untrusted-wire-test-secret-0123456789abcdef';
/** Hosts judge each other on heartbeats; 200 ms keeps false detections on a loaded 2-core machine out. */
const hostArgs = ['--heartbeat-timeout', '200'] as const;
/** Garbage rounds at least; more while the request stream runs, up to a bound. */
const MIN_ROUNDS = 3;
const MAX_ROUNDS = 12;
const MAX_GARBAGE_MS = 20_000;
/** A client request stream gives up after this many failed requests: the session is out of reach. */
const MAX_FAILED = 5;

/** Errors that say the runtime refused a frame: what garbage should earn, and all it should. */
const refusalNames = new Set([
  'MalformedFrameError',
  'MalformedMessageError',
  'CorruptPatchError',
  'StaleEpochError',
  'InvalidMessageError',
  'InvalidArgumentError',
  'UnknownMessageTypeError',
]);
const isRefusal = (name: string, message: string) =>
  refusalNames.has(name) || /malformed|dropped|refused/i.test(message);

/**
 * The subjects the runtime subscribes to for session `sid` on these hosts
 * (runtime/subjects.ts), with the KV subject of another session's ownership
 * record (every host watches the whole bucket; the live session's key is left alone).
 */
function garbageTargets(
  sid: string,
  otherSid: string,
  hostIds: readonly string[],
): { subjects: string[] } & Pick<GarbageOptions, 'requestSubjects' | 'skip'> {
  const control = hostIds.map((h) => subjects.hostControl(h));
  const probes = hostIds.map((h) => subjects.probe(h));
  // A host that does not exist: its garbage beats must not make it a live host to place on.
  const beats = [...hostIds, 'ghost-host'].map((h) => subjects.heartbeat(h));
  return {
    subjects: [
      subjects.input(sid),
      subjects.output(sid),
      subjects.ack(sid),
      subjects.control(sid, 1),
      subjects.events(sid),
      subjects.datagramIn(sid),
      subjects.datagramOut(sid),
      ...control,
      ...probes,
      ...beats,
      subjects.disconnectAdvisory,
      '$SYS.ACCOUNT.APP.CONNECT',
      `$KV.${storeNames.owners}.${otherSid}`,
      `$KV.${storeNames.hosts}.ghost-host`,
    ],
    requestSubjects: [subjects.control(sid, 1), ...control, ...probes],
  };
}

/** Disconnect advisories the server sent (its own: garbage on the subject has no client name). */
type Disconnect = { name: string; reason: string };
function watchDisconnects(nc: NatsConnection): Disconnect[] {
  const seen: Disconnect[] = [];
  const decoder = new TextDecoder();
  nc.subscribe(subjects.disconnectAdvisory, {
    callback: (_err, msg) => {
      try {
        const a = JSON.parse(decoder.decode(msg.data)) as {
          type?: unknown;
          reason?: unknown;
          client?: { name?: unknown };
        };
        if (
          a?.type === 'io.nats.server.advisory.v1.client_disconnect' &&
          typeof a.client?.name === 'string'
        )
          seen.push({ name: a.client.name, reason: String(a.reason) });
      } catch {
        // Our own garbage on the advisory subject: not an advisory.
      }
    },
  });
  return seen;
}

const isMesh = (d: Disconnect) => d.name.startsWith('ftm-');
const show = (d: Disconnect) => `${d.name} (${d.reason})`;

/** Same primary, standby and epoch: no failover, and nobody took the standby for gone. */
const sameOwners = (a: OwnerRecord, b: OwnerRecord | undefined) =>
  b !== undefined && a.primary === b.primary && a.standby === b.standby && a.epoch === b.epoch;

/** The longest wait between two replies, in ms: how long the session was out of reach. */
const longestGap = (arrivals: readonly number[]) =>
  Math.round(arrivals.slice(1).reduce((gap, t, i) => Math.max(gap, t - arrivals[i]!), 0));

/** The ownership record as stored (not any host's view of it, which a dead watch would freeze). */
async function storedOwner(nc: NatsConnection, sid: string): Promise<OwnerRecord | undefined> {
  const kv = await new Kvm(nc).open(storeNames.owners);
  const e = await kv.get(sid);
  return e?.operation === 'PUT' ? (createValueCodec().decode(e.value) as OwnerRecord) : undefined;
}

/**
 * Where nats.js reported that its read loop ended (a subscription callback
 * threw): the error, and the first stack frame in ftmesh's own code outside
 * the decoders, i.e. the callback that let it through.
 */
function readerClosed(procs: Map<string, NodeProcess>): string[] {
  const out: string[] = [];
  for (const [id, p] of procs)
    p.stdout.forEach((line, i) => {
      if (!line.startsWith('reader closed')) return;
      const culprit = p.stdout
        .slice(i + 1, i + 12)
        .find((l) => /\/(runtime|gateway)\/(?!wire\.ts|codec\.ts)/.test(l));
      out.push(
        `${id}: ${line} ${culprit?.trim().replace(/\(.*\/(runtime|gateway)\//, '($1/') ?? ''}`,
      );
    });
  return out;
}

/** Errors the processes logged (runtime/host.ts, gateway.ts default onError) that are not refusals. */
function unexpectedLogged(procs: Map<string, NodeProcess>): string[] {
  const out: string[] = [];
  for (const [id, p] of procs)
    for (const line of p.stderr) {
      const m = /^\[ftmesh (?:gateway )?\S+\] (\w+): (.*)$/.exec(line);
      if (m && !isRefusal(m[1]!, m[2]!)) out.push(`${id}: ${line}`);
    }
  return out;
}

/** A mesh client in this process whose errors are kept, not hidden. */
async function createWatchedClient(natsUrl: string) {
  const errors: FtmError[] = [];
  const host = await createClient({ nats: natsUrl, onError: (err) => errors.push(err) });
  return { host, errors };
}

const describeErrors = (errors: readonly Error[]) =>
  errors.map((e) => {
    const cause = e.cause instanceof Error ? ` (cause ${e.cause.name}: ${e.cause.message})` : '';
    return `${e.name}: ${e.message}${cause}`;
  });

/**
 * Publishes garbage rounds while `running()` (at least {@link MIN_ROUNDS});
 * resolves with the messages sent and the rounds.
 */
async function garbageWhile(
  nc: NatsConnection,
  targets: ReturnType<typeof garbageTargets>,
  running: () => boolean,
): Promise<{ sent: number; rounds: number }> {
  let sent = 0;
  let rounds = 0;
  const deadline = Date.now() + MAX_GARBAGE_MS;
  while (rounds < MIN_ROUNDS || (running() && rounds < MAX_ROUNDS && Date.now() < deadline)) {
    sent += await publishGarbage(nc, targets.subjects, {
      seed: rounds + 1,
      requestSubjects: targets.requestSubjects,
      skip: targets.skip,
    });
    rounds++;
  }
  return { sent, rounds };
}

/** The value, or the error it rejected with: a check notes it instead of stopping there. */
const settle = <T>(p: Promise<T>): Promise<T | Error> =>
  p.catch((err: unknown) => (err instanceof Error ? err : new Error(String(err))));

/** Notes a failed expectation without stopping at it. */
type Expect = (ok: boolean, what: string) => void;

/**
 * Runs `checks`, which note each failed expectation with `expect` instead of
 * stopping at the first; a throw (a request timing out, an AssertionError) is
 * noted too. Then fails once, listing every failed expectation, with the evidence.
 */
async function expectAll(
  report: () => string,
  checks: (expect: Expect) => Promise<void>,
): Promise<void> {
  const failed: string[] = [];
  try {
    await checks((ok, what) => {
      if (!ok) failed.push(what);
    });
  } catch (err) {
    failed.push(`threw ${(err as Error).name}: ${(err as Error).message}`);
  }
  if (failed.length)
    assert.fail(`${failed.length} expectations failed:\n  - ${failed.join('\n  - ')}\n${report()}`);
}

/** The replies of `count` adds after `base` adds: `base + 1 .. base + count`, each once. */
const answeredOnceFrom = (base: number, count: number, replies: readonly number[]) =>
  replies.length === count &&
  [...replies].sort((a, b) => a - b).every((r, i) => r === base + i + 1);

const lines = (title: string, items: readonly unknown[]) =>
  `${title}: ${items.length ? `\n    ${items.join('\n    ')}` : 'none'}`;

describe('untrusted wire: garbage on every subject the runtime subscribes to', function () {
  describe('hosts as processes', function () {
    const nats = useNatsServer();
    const procs = useProcessesPerTest();
    let client: MeshClient;
    let clientErrors: FtmError[];

    before(async () => {
      ({ host: client, errors: clientErrors } = await createWatchedClient(nats.url));
    });
    after(async () => {
      await client?.close();
      await stopAll();
    });

    it('garbage under a request stream: no failover, no connection dropped, every add applied once, the mesh still serves', async function () {
      this.timeout(240_000);
      const hostIds = ['uw1', 'uw2', 'uw3'];
      await startHostProcesses(procs, nats.url, hostIds, client, hostArgs);
      const sid = 'uw';
      const before = await client.placeSession('counter', sid, { primary: 'uw1', standby: 'uw2' });
      const targets = garbageTargets(sid, 'uw-other', [...hostIds, 'uw-client']);

      const observer = await connectNats(nats.url, { name: 'uw-observer' });
      const garbage = await connectNats(nats.url, { name: 'uw-garbage' });
      const disconnects = watchDisconnects(observer);
      const monitor = monitorOutput(observer, sid);
      try {
        await observer.flush();

        let answered = 0;
        let streaming = true;
        const total = 400;
        const stream = settle(
          streamAdds(client, sid, total, { prefix: 'uw-a', onReply: (n) => (answered = n) }),
        ).finally(() => (streaming = false));
        await until(() => answered >= 50 || !streaming, { message: '50 adds answered' });
        const { sent, rounds } = await garbageWhile(garbage, targets, () => streaming);
        const result = await stream;

        const stored = await storedOwner(observer, sid);
        const report = () =>
          [
            `--- evidence (garbage: ${sent} messages in ${rounds} rounds on ${targets.subjects.length} subjects) ---`,
            `owner before: ${JSON.stringify(before)}`,
            `owner after (stored): ${JSON.stringify(stored)}`,
            lines(
              'disconnect advisories of ftmesh connections',
              disconnects.filter(isMesh).map(show),
            ),
            lines('"reader closed" (a callback threw, the read loop ended)', readerClosed(procs)),
            lines('errors the hosts logged, not refusals', unexpectedLogged(procs)),
            lines('client host errors', describeErrors(clientErrors).slice(0, 15)),
            `request stream: ${result instanceof Error ? `${result.name}: ${result.message}` : `${result.retries} retries, longest wait between replies ${longestGap(result.arrivals)} ms`}`,
            `output monitor: ${JSON.stringify(monitor.stats())}`,
          ].join('\n');
        await expectAll(report, async (check) => {
          if (result instanceof Error) check(false, 'the request stream completes');
          else {
            const once = exactlyOnce(result.replies);
            check(
              once.lost.length === 0 && once.doubled.length === 0,
              `every add answered exactly once: ${JSON.stringify(once)}`,
            );
          }
          check(
            sameOwners(before, stored),
            'no failover, no re-protection: the ownership record is unchanged',
          );
          const failovers = (await Promise.all(hostIds.map((h) => client.failoversOf(h))))
            .flat()
            .filter((f) => f.sid === sid);
          check(failovers.length === 0, `no host promoted ${sid}: ${JSON.stringify(failovers)}`);
          const value = await settle(client.request(sid, 'get'));
          check(value === total, `the state is the number of adds: ${String(value)} != ${total}`);
          const live = client.liveHosts();
          const gone = hostIds.filter(
            (h) => !live.includes(h) || procs.get(h)!.child.exitCode !== null,
          );
          check(
            gone.length === 0,
            `every host alive: ${gone.join(', ')} gone (live: ${live.join(', ')})`,
          );
          check(
            !disconnects.some(isMesh),
            'no ftmesh NATS connection closed (disconnect advisories)',
          );
          check(readerClosed(procs).length === 0, 'no host process had its NATS read loop end');
          check(unexpectedLogged(procs).length === 0, 'the hosts logged refusals only');
          const unexpected = clientErrors.filter((e) => !isRefusal(e.name, e.message));
          check(
            unexpected.length === 0,
            `the client host reported refusals only: ${describeErrors(unexpected).join('; ')}`,
          );

          // After the garbage the mesh still serves a second stream.
          const second = await settle(streamAdds(client, sid, 50, { prefix: 'uw-b' }));
          check(
            !(second instanceof Error) && answeredOnceFrom(total, 50, second.replies),
            `the second stream is answered once each: ${second instanceof Error ? second.message : second.replies.join(',')}`,
          );
          const after = await settle(client.request(sid, 'get'));
          check(after === total + 50, `the second stream is applied once: ${String(after)}`);
          monitor.assertOnePayloadPerSeq();
          check(monitor.stats().seqs >= total + 50, 'the monitor saw every commit');
        });
      } finally {
        monitor.close();
        await garbage.close();
        await observer.close();
      }
    });
  });

  describe('through a gateway', function () {
    const nats = useNatsServer();
    const procs = useProcessesPerTest();
    let client: MeshClient;
    let clientErrors: FtmError[];

    before(async () => {
      ({ host: client, errors: clientErrors } = await createWatchedClient(nats.url));
    });
    after(async () => {
      await client?.close();
      await stopAll();
    });

    /** Starts `ftmesh gateway` and resolves with its WebSocket URL (from its ready line). */
    const startGateway = async (id: string): Promise<string> => {
      const p = spawnNode(
        'cli/ftmesh.ts',
        ['gateway', '--nats', nats.url, '--id', id, '--udp-port', 'off'],
        { env: { FTMESH_SECRET: secret } },
      );
      procs.set(id, p);
      const line = await p.waitForLine(new RegExp(`^ready gateway ${id} `), 20_000);
      return line.split(' ')[3]!;
    };

    /**
     * `count` adds through the SDK, 4 at a time: the replies by index, when
     * each came, the errors; gives up after {@link MAX_FAILED} failed requests.
     */
    const streamThrough = async (
      session: Session,
      count: number,
      onReply: (n: number) => void = () => undefined,
    ) => {
      const replies: number[] = [];
      const arrivals: number[] = [];
      const errors: string[] = [];
      let next = 0;
      const worker = async () => {
        for (let i = next++; i < count && errors.length < MAX_FAILED; i = next++) {
          try {
            replies[i] = await session.request<number>('add', 1);
            arrivals.push(performance.now());
            onReply(arrivals.length);
          } catch (err) {
            errors.push(`#${i} ${(err as Error).name}: ${(err as Error).message}`);
          }
        }
      };
      await Promise.all(Array.from({ length: 4 }, worker));
      return { replies, arrivals, errors };
    };

    it('garbage while a client requests through the gateway: its WebSocket stays open, every request answered once, no failover', async function () {
      this.timeout(240_000);
      const hostIds = ['ug1', 'ug2', 'ug3'];
      const gatewayId = 'ug-gw';
      await startHostProcesses(procs, nats.url, hostIds, client, hostArgs);
      const url = await startGateway(gatewayId);
      const sid = 'ugs';
      const before = await client.placeSession('counter', sid, { primary: 'ug1', standby: 'ug2' });
      const targets = garbageTargets(sid, 'ug-other', [...hostIds, gatewayId, 'ug-client']);

      const observer = await connectNats(nats.url, { name: 'ug-observer' });
      const garbage = await connectNats(nats.url, { name: 'ug-garbage' });
      const changes: ConnectionEvent[] = [];
      const disconnects = watchDisconnects(observer);
      const monitor = monitorOutput(observer, sid);
      let session: Session | undefined;
      try {
        await observer.flush();
        const sdk = await connect(url, {
          token: mintToken({ secret, sub: 'streamer', sid }),
          requestTimeoutMs: 15_000,
          onConnectionChange: (e) => changes.push(e),
        });
        session = sdk;

        let answered = 0;
        let streaming = true;
        const total = 300;
        const stream = streamThrough(sdk, total, (n) => (answered = n)).finally(
          () => (streaming = false),
        );
        await until(() => answered >= 50 || !streaming, { message: '50 requests answered' });
        const { sent, rounds } = await garbageWhile(garbage, targets, () => streaming);
        const { replies, arrivals, errors } = await stream;

        const stored = await storedOwner(observer, sid);
        const report = () =>
          [
            `--- evidence (garbage: ${sent} messages in ${rounds} rounds on ${targets.subjects.length} subjects) ---`,
            `owner before: ${JSON.stringify(before)}`,
            `owner after (stored): ${JSON.stringify(stored)}`,
            `SDK: connected ${sdk.connected}, reconnects ${sdk.reconnects}, resent ${sdk.resent}`,
            lines(
              'SDK connection events',
              changes.map((c) => JSON.stringify(c)),
            ),
            `longest wait between replies: ${longestGap(arrivals)} ms`,
            lines('SDK request errors', errors.slice(0, 15)),
            lines(
              'disconnect advisories of ftmesh connections',
              disconnects.filter(isMesh).map(show),
            ),
            lines('"reader closed" (a callback threw, the read loop ended)', readerClosed(procs)),
            lines('errors the processes logged, not refusals', unexpectedLogged(procs)),
            lines('client host errors', describeErrors(clientErrors).slice(0, 15)),
            `output monitor: ${JSON.stringify(monitor.stats())}`,
          ].join('\n');
        await expectAll(report, async (check) => {
          check(sdk.connected && sdk.reconnects === 0, 'the WebSocket stays open');
          check(
            changes.every((c) => c.type === 'connected'),
            'no disconnect or gateway error reported to the client',
          );
          if (errors.length) check(false, `every request answered: ${errors.length} failed`);
          else {
            const once = exactlyOnce(replies);
            check(
              once.lost.length === 0 && once.doubled.length === 0,
              `every request answered exactly once: ${JSON.stringify(once)}`,
            );
          }
          check(
            sameOwners(before, stored),
            'no failover, no re-protection: the ownership record is unchanged',
          );
          const value = await settle(sdk.request('get'));
          check(
            value === total,
            `the state is the number of requests: ${String(value)} != ${total}`,
          );
          const live = client.liveHosts();
          const gone = [...hostIds, gatewayId].filter(
            (h) => (h !== gatewayId && !live.includes(h)) || procs.get(h)!.child.exitCode !== null,
          );
          check(gone.length === 0, `every host and the gateway alive: ${gone.join(', ')} gone`);
          check(
            !disconnects.some(isMesh),
            'no ftmesh NATS connection closed (disconnect advisories)',
          );
          check(readerClosed(procs).length === 0, 'no process had its NATS read loop end');
          check(unexpectedLogged(procs).length === 0, 'the processes logged refusals only');
          const unexpected = clientErrors.filter((e) => !isRefusal(e.name, e.message));
          check(
            unexpected.length === 0,
            `the client host reported refusals only: ${describeErrors(unexpected).join('; ')}`,
          );

          const second = await streamThrough(sdk, 50);
          check(
            second.errors.length === 0,
            `the second stream is answered: ${second.errors.join('; ')}`,
          );
          check(
            answeredOnceFrom(total, 50, second.replies),
            `the second stream is answered once each: ${second.replies.join(',')}`,
          );
          const after = await settle(sdk.request('get'));
          check(after === total + 50, `the second stream is applied once: ${String(after)}`);
          monitor.assertOnePayloadPerSeq();
        });
      } finally {
        monitor.close();
        await session?.close();
        await garbage.close();
        await observer.close();
      }
    });
  });
});
