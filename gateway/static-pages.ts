import { readFile } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { fileURLToPath } from 'node:url';
import { GatewayError } from './errors.ts';

/**
 * The pages a gateway serves over plain HTTP when `dashboard` is on
 * (PROTOCOL.md, "Pages"): the dashboard, the demo page, and the SDK's
 * browser bundle they import. A fixed table maps URL paths to the files of
 * `gateway/dashboard/`: no request path ever reaches the disk.
 */

type Page = { file: string; type: string };

const html = 'text/html; charset=utf-8';
const js = 'text/javascript; charset=utf-8';
const css = 'text/css; charset=utf-8';

const pages: ReadonlyMap<string, Page> = new Map([
  ['/dashboard/', { file: 'dashboard.html', type: html }],
  ['/dashboard/dashboard.js', { file: 'dashboard.js', type: js }],
  ['/dashboard/style.css', { file: 'style.css', type: css }],
  ['/demo/', { file: 'demo.html', type: html }],
  ['/demo/demo.js', { file: 'demo.js', type: js }],
  ['/demo/style.css', { file: 'style.css', type: css }],
]);
const redirects: ReadonlyMap<string, string> = new Map([
  ['/dashboard', '/dashboard/'],
  ['/demo', '/demo/'],
]);
/** Where the pages import the SDK from (`../ftmesh-client.js`). */
export const SDK_BUNDLE_PATH = '/ftmesh-client.js';

const dir = new URL('./dashboard/', import.meta.url);

/**
 * The pages' scripts come from this gateway, and they talk to it alone (its
 * WebSocket named too: older browsers do not count ws: URLs as 'self').
 */
const contentSecurityPolicy = (host: string) =>
  `default-src 'self'; connect-src 'self' ws://${host} wss://${host}; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'`;
/** A Host header as it may appear in a CSP source: host, or host:port, or [v6]:port. */
const hostPattern = /^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::\d{1,5})?$/;

/** Serves the pages; `handle` answers a request for one of them and says whether it did. */
export interface StaticPages {
  handle(req: IncomingMessage, res: ServerResponse): boolean;
}

/**
 * The SDK for browsers, once per process. A gateway running compiled
 * (dist/, the npm package) serves the bundle `npm run build` made
 * (dist/browser/ftmesh-client.js); one running from source (tsx: `ftmesh
 * dev` in a clone) bundles gateway/client.ts with esbuild, a dev
 * dependency, on the first request, so that the pages always run the SDK
 * of the code at hand, never a stale build.
 */
async function loadSdkBundle(): Promise<Buffer> {
  if (!import.meta.url.endsWith('.ts'))
    return readFile(new URL('../browser/ftmesh-client.js', import.meta.url));
  const { build } = await import('esbuild');
  const out = await build({
    entryPoints: [fileURLToPath(new URL('./client.ts', import.meta.url))],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    // Not minified: the SDK loads `ws` and `node:dgram` by names in variables (see scripts/build.mjs).
    write: false,
    logLevel: 'silent',
  });
  const file = out.outputFiles[0];
  if (!file) throw new Error('esbuild wrote no bundle');
  return Buffer.from(file.contents);
}

/** The request's Host for the CSP, or a host that matches nothing when it is odd. */
const cspHost = (host: string | undefined) =>
  host !== undefined && hostPattern.test(host) ? host : 'invalid.invalid';

/** The dashboard's and the demo's files, and the SDK bundle, for the gateway's HTTP server. */
export function staticPages(onError: (err: Error) => void): StaticPages {
  let sdk: Promise<Buffer> | undefined;
  const sdkBundle = () =>
    (sdk ??= loadSdkBundle().catch((err: unknown) => {
      sdk = undefined; // the next request tries again
      throw err;
    }));

  const send = (res: ServerResponse, status: number, type: string, body: Buffer | string) => {
    res.writeHead(status, {
      'content-type': type,
      'cache-control': 'no-cache',
      'x-content-type-options': 'nosniff',
      'referrer-policy': 'no-referrer',
      ...(type === html
        ? { 'content-security-policy': contentSecurityPolicy(cspHost(res.req.headers.host)) }
        : {}),
    });
    res.end(res.req.method === 'HEAD' ? undefined : body);
  };
  const failed = (res: ServerResponse, what: string, err: unknown) => {
    onError(
      new GatewayError(`serving ${what}: ${(err as Error).message}`, { code: 'http', cause: err }),
    );
    if (!res.headersSent)
      send(res, 503, 'text/plain', `${what} is not available: ${(err as Error).message}`);
  };

  return {
    handle(req, res) {
      const path = new URL(req.url ?? '/', 'http://gateway').pathname;
      const page = pages.get(path);
      const to = redirects.get(path);
      if (!page && !to && path !== SDK_BUNDLE_PATH) return false;
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('GET only');
        return true;
      }
      if (to) {
        res.writeHead(301, { location: to }).end();
        return true;
      }
      if (page)
        readFile(new URL(page.file, dir)).then(
          (body) => send(res, 200, page.type, body),
          (err: unknown) => failed(res, path, err),
        );
      else
        sdkBundle().then(
          (body) => send(res, 200, js, body),
          (err: unknown) => failed(res, `the SDK bundle (${SDK_BUNDLE_PATH})`, err),
        );
      return true;
    },
  };
}
