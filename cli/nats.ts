import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { configString, renderConfig } from '../infra/index.ts';
import { OptionCheck, parseCommand, seeHelp } from './args.ts';
import { StartupError, UsageError, firstLine } from './errors.ts';

/**
 * `ftmesh nats`: a nats-server config for ftmesh, rendered from the same
 * templates the launcher and the tests run (infra/nats/), so what is printed
 * is what is tested: JetStream, the disconnect advisories of the system
 * account imported into the application account, 8MB payloads, 2 s pings.
 */

const spec = {
  name: 'nats',
  options: {
    out: { type: 'string' },
    port: { type: 'string' },
    'http-port': { type: 'string' },
    store: { type: 'string' },
    cluster: { type: 'boolean' },
    node: { type: 'string' },
  },
} as const;

const CLUSTER_SIZE = 3;
const DEFAULT_PORT = 4222;
const DEFAULT_HTTP_PORT = 8222;
const DEFAULT_CLUSTER_PORT = 6222;
const DEFAULT_STORE = './ftmesh-jetstream';

/** The template's own header speaks to the launcher; the user gets this one instead. */
function withoutHeader(config: string): string {
  const lines = config.split('\n');
  let i = 0;
  while (i < lines.length && (lines[i]!.startsWith('#') || lines[i]!.trim() === '')) i++;
  return lines.slice(i).join('\n');
}

/** Runs `ftmesh nats`. */
export async function nats(argv: readonly string[]): Promise<void> {
  const { values } = parseCommand(spec, argv);
  const check = new OptionCheck(spec.name);
  const cluster = values.cluster === true;
  if (values.node !== undefined && !cluster)
    throw new UsageError(`--node is for --cluster configs; ${seeHelp(spec.name)}`);
  const node = values.node === undefined ? 1 : check.integer('node', values.node, 1, CLUSTER_SIZE);
  // A cluster's nodes on one machine take consecutive ports; on several machines, the same ones.
  const base = values.port === undefined ? DEFAULT_PORT : check.port('port', values.port, false);
  const httpBase =
    values['http-port'] === undefined
      ? DEFAULT_HTTP_PORT
      : check.port('http-port', values['http-port'], false);
  const offset = cluster ? node - 1 : 0;
  const port = base + offset;
  const httpPort = httpBase + offset;
  const store = resolve(values.store ?? DEFAULT_STORE, cluster ? `n${node}` : '.');
  const out = values.out;
  const file = out ?? (cluster ? `ftmesh-n${node}.conf` : 'ftmesh-nats.conf');
  const common = {
    PORT: String(port),
    HTTP_PORT: String(httpPort),
    MAX_PAYLOAD: '8MB',
    STORE_DIR: configString(store),
  };

  let body: string;
  let start: string[];
  if (cluster) {
    const clusterPort = (n: number) => DEFAULT_CLUSTER_PORT + n - 1;
    const routes = Array.from(
      { length: CLUSTER_SIZE },
      (_, i) => `"nats-route://127.0.0.1:${clusterPort(i + 1)}"`,
    ).filter((_, i) => i + 1 !== node);
    body = await renderConfig('clusterNode', {
      ...common,
      SERVER_NAME: `ftm-n${node}`,
      CLUSTER_PORT: String(clusterPort(node)),
      ROUTES: routes.join(', '),
    });
    const urls = Array.from(
      { length: CLUSTER_SIZE },
      (_, i) => `nats://127.0.0.1:${base + i}`,
    ).join(',');
    start = [
      `Node ${node} of a ${CLUSTER_SIZE}-node JetStream cluster on this machine (ports ${port}, cluster ${clusterPort(node)}, monitoring ${httpPort}).`,
      `Write one config per node and start them all:`,
      `  for i in 1 2 3; do ftmesh nats --cluster --node $i --out ftmesh-n$i.conf; done`,
      `  for i in 1 2 3; do nats-server -c ftmesh-n$i.conf & done`,
      `Then run hosts with: ftmesh host --nats ${urls} --replicas 3`,
      `On several machines: set listen, http and cluster.listen to each machine's address and`,
      `routes to the others' (keep server_name unique per node).`,
    ];
  } else {
    body = await renderConfig('single', {
      ...common,
      SERVER_NAME: 'ftmesh',
      JETSTREAM: 'true',
    });
    start = [
      `Start it with:  nats-server -c ${file}`,
      `Then:           ftmesh host --nats nats://127.0.0.1:${port} --actors YOUR_ACTORS.ts`,
      `Listens on 127.0.0.1 only; to serve other machines change listen and add authorization.`,
    ];
  }
  const header = [
    `# nats-server config for ftmesh (written by ftmesh nats${cluster ? ` --cluster --node ${node}` : ''}).`,
    ...start.map((l) => `# ${l}`),
    '#',
    `# What ftmesh needs here: JetStream (the log, snapshots, ownership and membership records),`,
    `# the system account's $SYS.ACCOUNT.APP.> advisories imported into the APP account (hosts`,
    `# learn of a crashed peer from its disconnect advisory), max_payload above 1MB (snapshots),`,
    `# and no credentials on the loopback (no_auth_user) so that nats://HOST:PORT just works:`,
    `# the sys/sys and app/app users below are for a loopback server only.`,
    '',
  ].join('\n');
  const config = `${header}${withoutHeader(body)}`;

  if (out === undefined) {
    process.stdout.write(config);
    return;
  }
  try {
    await writeFile(out, config);
  } catch (err) {
    throw new StartupError(`cannot write ${out}: ${firstLine(err)}`);
  }
  console.log(`wrote ${out}`);
  for (const line of start) console.log(line);
}
