import { natsUrl, parseCommand } from './args.ts';
import {
  ago,
  failoverRows,
  hostRows,
  openMesh,
  sessionRows,
  sessionTable,
  table,
  timelineLine,
} from './mesh-view.ts';

/** `ftmesh status`: hosts, sessions and recent failovers, as text or one JSON object. */

const spec = {
  name: 'status',
  options: { nats: { type: 'string' }, json: { type: 'boolean' } },
} as const;

/** Failovers shown in the text form; `--json` has them all. */
const RECENT_FAILOVERS = 10;

/** Runs `ftmesh status`. */
export async function status(argv: readonly string[]): Promise<void> {
  const { values } = parseCommand(spec, argv);
  const mesh = await openMesh(natsUrl(spec.name, values.nats));
  try {
    const hosts = hostRows(mesh);
    const [sessions, { failovers, unanswered }] = await Promise.all([
      sessionRows(mesh),
      failoverRows(mesh),
    ]);
    if (values.json) {
      console.log(JSON.stringify({ hosts, sessions, failovers, unanswered }));
      return;
    }
    const live = hosts.filter((h) => h.live);
    const gone = hosts.filter((h) => !h.live);
    console.log(`HOSTS: ${live.length} live${gone.length ? `, ${gone.length} gone` : ''}`);
    if (live.length)
      console.log(
        table(
          ['HOST', 'LOAD', 'PRIMARIES', 'STANDBYS', 'STATE'],
          live.map((h) => [
            h.id,
            `${h.primaries + h.standbys}/${h.capacity}`,
            String(h.primaries),
            String(h.standbys),
            h.draining ? 'draining' : 'serving',
          ]),
        ),
      );
    else console.log('(no live host: start one with ftmesh host, or run ftmesh dev)');
    if (gone.length)
      console.log(`gone: ${gone.map((h) => `${h.id} (${h.down_cause})`).join(', ')}`);
    console.log(`\nSESSIONS: ${sessions.length}`);
    console.log(sessionTable(sessions));
    console.log(
      `\nFAILOVERS: ${failovers.length}${failovers.length > RECENT_FAILOVERS ? ` (the last ${RECENT_FAILOVERS})` : ''}`,
    );
    if (!failovers.length) console.log('(none recorded by the live hosts)');
    for (const f of failovers.slice(-RECENT_FAILOVERS))
      console.log(`${timelineLine(f)}  [${ago(f.detected_at)}]`);
    if (unanswered.length) console.log(`not answering: ${unanswered.join(', ')}`);
  } finally {
    await mesh.close();
  }
}
