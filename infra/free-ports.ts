import { createServer, type Server } from 'node:net';

/**
 * Returns `count` distinct TCP ports that were free on 127.0.0.1 a moment ago: binds port 0 that
 * many times at once (so the kernel cannot hand out one port twice), reads the ports and releases
 * them. Another process may take a port before the caller binds it; the launcher retries a start
 * that failed with "address already in use".
 */
export async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', resolve);
      });
    }
    return servers.map((server) => {
      const address = server.address();
      if (address === null || typeof address === 'string') {
        throw new Error('freePorts: a TCP server reported no port');
      }
      return address.port;
    });
  } finally {
    await Promise.all(
      servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
    );
  }
}
