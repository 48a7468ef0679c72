import { randomBytes } from 'node:crypto';
import { createClient, type MeshClient, type OwnerRecord } from '../runtime/index.ts';
import { startAppendStream, type AppendStream } from './append-stream.ts';
import { OptionCheck, parseCommand } from './args.ts';
import { demoActorsFile, type Ledger } from './demo-actors.ts';
import { localNats, type LocalNats } from './demo-nats.ts';
import { FailureError, firstLine } from './errors.ts';
import { judge, round, verdictLines, type Facts, type Timeline } from './failover-verdict.ts';
import { Fleet, unexpectedExitLine } from './fleet.ts';
import { waitUntil } from './wait.ts';

/**
 * `ftmesh demo failover`: separate processes (nats-server, 3 hosts, a
 * gateway), clients streaming appends through the gateway with the SDK
 * (append-stream.ts), and SIGKILL of the process serving the session's
 * primary, N times. The verdict (failover-verdict.ts) is checked against the
 * ledger's final state: every acknowledged append applied, none twice, no
 * client reconnected, primary and standby equal. Exit 1 when one does not hold.
 */

const spec = {
  name: 'demo failover',
  options: {
    nats: { type: 'string' },
    actor: { type: 'string' },
    kills: { type: 'string' },
    clients: { type: 'string' },
    json: { type: 'boolean' },
  },
} as const;

const ACTORS = ['demo-ledger', 'demo-ledger-durable'] as const;
const HOSTS = ['demo-h1', 'demo-h2', 'demo-h3'] as const;
/** Replies each client gets before a kill (and after the last), so every gap is measured. */
const REPLIES_BETWEEN_KILLS = 20;
const now = () => performance.timeOrigin + performance.now();

/** The mesh of the demo: its NATS, its processes, its session and the clients' stream. */
interface Demo {
  readonly nats: LocalNats;
  readonly mesh: MeshClient;
  readonly fleet: Fleet;
  readonly sid: string;
  readonly stream: AppendStream;
  readonly say: (line: string) => void;
}

/** Waits until the session has a live standby holding its copy; resolves with its record. */
function protectedRecord(mesh: MeshClient, sid: string): Promise<OwnerRecord> {
  return waitUntil(
    async () => {
      const o = mesh.owner(sid);
      if (!o?.standby || !mesh.liveHosts().includes(o.standby)) return undefined;
      return (await mesh.inspect(o.standby, sid)).info.status === 'standby' ? o : undefined;
    },
    `${sid} to have a standby`,
    30_000,
  );
}

/** Kills the primary's process once and follows the failover it causes. */
async function killPrimary(d: Demo, k: number, kills: number): Promise<Facts['failovers'][0]> {
  const { mesh, fleet, sid } = d;
  await waitUntil(
    d.stream.progressed(REPLIES_BETWEEN_KILLS),
    'every client to get replies',
    30_000,
  );
  const before = await protectedRecord(mesh, sid);
  const victim = before.primary;
  d.say(
    `kill ${k}/${kills}: SIGKILL ${victim} (pid ${fleet.hosts.get(victim)?.child.pid}), primary of ${sid} in epoch ${before.epoch}`,
  );
  const killedAt = now();
  await fleet.kill(victim);
  const after = await waitUntil(
    () => {
      const o = mesh.owner(sid);
      return o && o.epoch > before.epoch && o.primary !== victim ? o : undefined;
    },
    `a new primary of ${sid}`,
    15_000,
  );
  const recordOf = async () =>
    (await mesh.failoversOf(after.primary)).find((r) => r.sid === sid && r.epoch === after.epoch);
  const record = await waitUntil(
    async () => {
      const r = await recordOf();
      return r?.firstReplyAt === undefined ? undefined : r;
    },
    `the failover record of ${after.primary}`,
    15_000,
  );
  const ms = (t: number) => round(t - killedAt);
  const timeline: Timeline = {
    victim,
    to: record.to,
    cause: record.cause,
    epoch: record.epoch,
    detected_ms: ms(record.detectedAt),
  };
  if (record.traceId) timeline.trace_id = record.traceId;
  if (record.promotedAt !== undefined) timeline.promoted_ms = ms(record.promotedAt);
  if (record.firstReplyAt !== undefined) timeline.first_reply_ms = ms(record.firstReplyAt);
  d.say(
    `  detected +${timeline.detected_ms} ms (${timeline.cause}), promoted +${timeline.promoted_ms} ms, ` +
      `first reply +${timeline.first_reply_ms} ms, by ${timeline.to} in epoch ${timeline.epoch} (ms after the kill)` +
      (record.traceId ? `; trace ${record.traceId}` : ''),
  );
  // A standby again for the next kill: the killed host comes back (at a low priority while it starts).
  const restarting = Date.now();
  await fleet.startHost(victim, true);
  d.say(`  ${victim} started again in ${((Date.now() - restarting) / 1000).toFixed(1)} s`);
  const reprotected = (await recordOf())?.reprotectedAt;
  if (reprotected !== undefined) timeline.reprotected_ms = ms(reprotected);
  return { timeline, killedAt };
}

/** Reads the ledger and compares the two copies, once the standby is at the primary's seq. */
async function finalState(
  mesh: MeshClient,
  sid: string,
): Promise<{ ledger: Ledger; stateEqual: boolean }> {
  const ledger = (await mesh.request(sid, 'ledger')) as Ledger;
  const stateEqual = await waitUntil(
    async () => {
      const o = mesh.owner(sid);
      if (!o?.standby) return undefined;
      const [p, s] = await Promise.all([
        mesh.inspect(o.primary, sid),
        mesh.inspect(o.standby, sid),
      ]);
      return p.info.seq === s.info.seq ? { equal: p.hash === s.hash } : undefined;
    },
    'primary and standby at the same seq',
    10_000,
  ).then(
    (r) => r.equal,
    () => false,
  );
  return { ledger, stateEqual };
}

/** Runs `ftmesh demo failover`. */
export async function demoFailover(argv: readonly string[]): Promise<void> {
  const { values } = parseCommand(spec, argv);
  const check = new OptionCheck(spec.name);
  const actor = check.oneOf('actor', values.actor ?? 'demo-ledger', ACTORS);
  const kills = values.kills === undefined ? 3 : check.integer('kills', values.kills, 1, 50);
  const clientCount =
    values.clients === undefined ? 4 : check.integer('clients', values.clients, 1, 64);
  const json = values.json === true;
  // With --json, stdout carries the one JSON line; the story goes to stderr.
  const say = (line: string) => (json ? console.error(line) : console.log(line));

  const run = randomBytes(3).toString('hex');
  const sid = `demo-failover-${run}`;
  const secret = randomBytes(32).toString('hex');
  const unexpectedExits: string[] = [];
  const nats = await localNats(values.nats);
  let mesh: MeshClient | undefined;
  let fleet: Fleet | undefined;
  let stream: AppendStream | undefined;
  const meshErrors: string[] = [];
  // Shutdown order: the clients, the session (when NATS outlives us), the processes, NATS.
  const stopEverything = async () => {
    await stream?.stop();
    await mesh?.closeSession(sid).catch(() => undefined);
    await fleet?.stopAll();
    await mesh?.close();
    await nats.stop();
  };

  let demo: Demo;
  try {
    mesh = await createClient({
      nats: nats.url,
      onError: (err) => meshErrors.push(`${err.name}: ${err.message}`),
    });
    const f = (fleet = new Fleet({
      nats: nats.url,
      mesh,
      hostArgs: ['--actors', demoActorsFile],
      gatewayArgs: ['--actors', demoActorsFile, '--udp-port', 'off'],
      env: { FTMESH_SECRET: secret },
      onUnexpectedExit: (name, exit, child) => {
        unexpectedExits.push(unexpectedExitLine(name, exit, child));
        say(`!! ${unexpectedExits.at(-1)}`);
      },
    }));
    const [gw] = await Promise.all([
      f.startGateway(`demo-gw-${run}`, 0),
      ...HOSTS.map((id) => f.startHost(id)),
    ]);
    say(
      `${nats.pid === undefined ? `NATS ${nats.url}` : `nats-server ${nats.url} (pid ${nats.pid})`}; ` +
        `hosts ${HOSTS.map((id) => `${id} (pid ${f.hosts.get(id)!.child.pid})`).join(', ')}; gateway ${gw.url}`,
    );
    // Pinned to the demo's own hosts: on a shared NATS, others may not run the demo actors.
    const placed = await mesh.placeSession(actor, sid, { primary: HOSTS[0], standby: HOSTS[1] });
    say(
      `session ${sid} (${actor}): primary ${placed.primary}, standby ${placed.standby}; ` +
        `${clientCount} client${clientCount > 1 ? 's' : ''} stream appends through the gateway, one at a time each`,
    );
    stream = await startAppendStream(gw.url, secret, sid, clientCount);
    demo = { nats, mesh, fleet: f, sid, stream, say };
  } catch (err) {
    // A failure to start is said in one line (its exit code), with no verdict.
    await stopEverything();
    throw err;
  }

  const failovers: Facts['failovers'][number][] = [];
  let error: string | undefined;
  let facts: Facts;
  try {
    try {
      for (let k = 1; k <= kills; k++) failovers.push(await killPrimary(demo, k, kills));
      await waitUntil(
        demo.stream.progressed(REPLIES_BETWEEN_KILLS),
        'every client to get replies after the last kill',
        30_000,
      );
    } catch (err) {
      error = firstLine(err);
      say(`!! ${error}`);
    }
    await demo.stream.stop();
    const final = await finalState(demo.mesh, sid).catch((err: unknown) => {
      error ??= `reading the final state: ${firstLine(err)}`;
      return undefined;
    });
    facts = {
      actor,
      kills,
      clients: demo.stream.clients,
      failovers,
      ledger: final?.ledger,
      stateEqual: final?.stateEqual ?? false,
      unexpectedExits,
      error,
    };
  } finally {
    await stopEverything();
  }

  const verdict = judge(facts);
  const lastRequestError = facts.clients.find((c) => c.lastError)?.lastError;
  for (const line of verdictLines(verdict, lastRequestError)) say(line);
  if (!verdict.ok && meshErrors.length)
    say(`  mesh client errors: ${meshErrors.slice(-3).join(' | ')}`);
  if (json) console.log(JSON.stringify(verdict));
  if (!verdict.ok)
    throw new FailureError(verdict.error ?? 'a guarantee did not hold: see the verdict above');
}
