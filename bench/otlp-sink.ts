import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * Where the tracing-overhead benchmarks export to: an OTLP/HTTP endpoint on
 * the loopback that takes every POST, counts its bytes and its spans (by the
 * `"spanId"` keys of the JSON, without parsing it) and answers 200. It stands
 * in for a collector, so that "tracing on" includes exporting.
 */
export interface OtlpSink {
  readonly url: string;
  readonly requests: number;
  readonly bytes: number;
  readonly spans: number;
  close(): Promise<void>;
}

const key = Buffer.from('"spanId"');

export async function startOtlpSink(): Promise<OtlpSink> {
  let requests = 0;
  let bytes = 0;
  let spans = 0;
  const server: Server = createServer((req, res) => {
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length;
      if (req.url !== '/v1/traces') return;
      // Counts keys within a chunk; one split across two chunks is missed (a rough count).
      for (let at = chunk.indexOf(key); at >= 0; at = chunk.indexOf(key, at + key.length)) spans++;
    });
    req.on('end', () => {
      requests++;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get requests() {
      return requests;
    },
    get bytes() {
      return bytes;
    },
    get spans() {
      return spans;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
