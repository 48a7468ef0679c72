/**
 * A host or a gateway serving the example actors, in a process of its own so
 * that a test can SIGKILL it. It does what `ftmesh host` and `ftmesh gateway`
 * do, on the public API only, and keeps these tests independent of the CLI's
 * options and output.
 *
 *   node --import tsx test/examples/mesh-process.ts host NATS_URL ID
 *   node --import tsx test/examples/mesh-process.ts gateway NATS_URL ID   (secret: FTMESH_SECRET)
 *
 * Prints `ready ID`, or `ready gateway ID URL udp PORT`, once serving. Every
 * error the runtime reports goes to stderr as one line starting `error:`;
 * with FTM_TRACE set, a host's ownership decisions go there too.
 */
import { exampleActors } from '../../actors/index.ts';
import { createGateway } from '../../gateway/index.ts';
import { createHost } from '../../runtime/index.ts';

const [role, nats, id] = process.argv.slice(2);
if ((role !== 'host' && role !== 'gateway') || !nats || !id) {
  console.error('usage: mesh-process.ts host|gateway NATS_URL ID');
  process.exit(2);
}

const onError = (err: Error) =>
  console.error(
    `error: ${err.name}: ${err.message}${err.cause instanceof Error ? ` (${err.cause.message})` : ''}`,
  );

let close: () => Promise<void>;
if (role === 'host') {
  const host = await createHost({
    nats,
    actors: exampleActors,
    hostId: id,
    onError,
    ...(process.env.FTM_TRACE ? { trace: (line: string) => console.error(`[${id}] ${line}`) } : {}),
  });
  close = () => host.close();
  console.log(`ready ${host.id}`);
} else {
  const secret = process.env.FTMESH_SECRET;
  if (!secret) throw new Error('gateway: set FTMESH_SECRET');
  const gateway = await createGateway({
    nats,
    actors: exampleActors,
    auth: { secret },
    id,
    port: 0,
    udpPort: 0,
    onError,
  });
  close = () => gateway.close();
  console.log(`ready gateway ${gateway.id} ${gateway.url} udp ${gateway.udpPort}`);
}

// Tests end these processes with SIGKILL; a polite stop closes what is open.
process.once('SIGTERM', () => void close().then(() => process.exit(0)));
