import { randomBytes } from 'node:crypto';
import { createHost, type Host } from '../runtime/index.ts';
import { parseCommand } from './args.ts';
import { spawnCli, type Child } from './child-process.ts';
import { checkLedger, demoActors, demoActorsFile, type Ledger } from './demo-actors.ts';
import { localNats, type LocalNats } from './demo-nats.ts';
import { FailureError } from './errors.ts';
import { failoverRow, timelineLine } from './mesh-view.ts';
import { waitUntil } from './wait.ts';

/**
 * `ftmesh demo`: the short tour. The primary is a host in a child process, the
 * standby a host in this one; the failover at the end is a real crash of the
 * child (SIGKILL), not a polite leave.
 */

const spec = { name: 'demo', options: { nats: { type: 'string' } } } as const;

const READY_TIMEOUT_MS = 20_000;
const APPENDS = 5;
const now = () => performance.timeOrigin + performance.now();
const short = (hash: string) => hash.slice(0, 16);

/** Runs `ftmesh demo`. */
export async function demo(argv: readonly string[]): Promise<void> {
  const { values } = parseCommand(spec, argv);
  const run = randomBytes(3).toString('hex');
  const ids = { primary: `demo-primary-${run}`, standby: `demo-standby-${run}` };
  const sid = `demo-${run}`;
  const nats: LocalNats = await localNats(values.nats);
  let child: Child | undefined;
  let standby: Host | undefined;
  try {
    console.log(
      nats.pid === undefined
        ? `using NATS at ${nats.url}`
        : `started nats-server ${nats.url} (pid ${nats.pid})`,
    );
    child = spawnCli(
      ['host', '--nats', nats.url, '--id', ids.primary, '--actors', demoActorsFile],
      {
        name: `host ${ids.primary}`,
      },
    );
    standby = await createHost({ nats: nats.url, actors: demoActors, hostId: ids.standby });
    await child.waitForLine(new RegExp(`^ready ${ids.primary}$`), READY_TIMEOUT_MS);
    const primaryId = ids.primary;
    const mesh = standby;
    await waitUntil(() => mesh.liveHosts().includes(primaryId), 'the primary host to join');
    console.log(
      `host ${ids.primary}: a separate process (pid ${child.pid}); host ${ids.standby}: this process`,
    );

    await standby.placeSession('demo-ledger', sid, { primary: ids.primary, standby: ids.standby });
    console.log(`session ${sid} (demo-ledger): primary ${ids.primary}, hot standby ${ids.standby}`);
    for (let n = 0; n < APPENDS; n++) {
      const count = await standby.request(sid, 'append', `demo:${n}`);
      console.log(`append demo:${n} -> ${String(count)} (released once the standby applied it)`);
    }
    const p = await standby.inspect(ids.primary, sid);
    const s = standby.info(sid)!;
    console.log(`primary: seq ${p.info.seq} hash ${short(p.hash)}`);
    console.log(`standby: seq ${s.seq} hash ${short(standby.hash(sid))}`);
    const equal = p.hash === standby.hash(sid);
    console.log(
      equal ? 'the standby holds the same state' : 'THE STANDBY DIFFERS FROM THE PRIMARY',
    );

    console.log(
      `SIGKILL to the primary's process (pid ${child.pid}): a crash, it says goodbye to no one`,
    );
    const killedAt = now();
    child.signal('SIGKILL');
    const count = await standby.request(sid, 'append', `demo:${APPENDS}`, { timeoutMs: 10_000 });
    const answeredAt = now();
    const owner = standby.owner(sid);
    console.log(
      `append demo:${APPENDS} -> ${String(count)}, answered by ${owner?.primary} in epoch ${owner?.epoch}, ` +
        `${(answeredAt - killedAt).toFixed(1)} ms after the kill`,
    );
    const record = standby.failovers().find((f) => f.sid === sid);
    if (record) {
      console.log(
        `failover: detected ${(record.detectedAt - killedAt).toFixed(1)} ms after the kill (${record.cause}); ` +
          `from the detection on: ${timelineLine(failoverRow(record)).replace(/^.*?: /, '')}`,
      );
    }
    const ledger = (await standby.request(sid, 'ledger')) as Ledger;
    const { lost, duplicated } = checkLedger(
      ledger,
      new Map([['demo', Array.from({ length: APPENDS + 1 }, (_, n) => n)]]),
    );
    console.log(
      `the ledger: ${ledger.appends} appends, ${lost} lost, ${duplicated} applied twice` +
        ' (no host is left to be the new standby: ftmesh demo failover runs 3 hosts and kills primaries in a row)',
    );
    if (!equal || lost || duplicated || count !== APPENDS + 1)
      throw new FailureError('the demo did not end as it should: see the lines above');
  } finally {
    await standby?.close();
    await child?.stop(3_000);
    await nats.stop();
  }
}
