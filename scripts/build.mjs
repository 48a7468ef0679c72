#!/usr/bin/env node
// Builds dist/, what the npm package ships (`npm run build`; `prepare` runs it on
// `npm ci`/`npm install` in a clone). Plain Node ESM, using only the repository's
// dev dependencies:
//
// 1. dist/ is emptied, so a file deleted from the sources cannot linger in it;
// 2. tsc -p tsconfig.build.json emits JavaScript and declarations of runtime/,
//    gateway/, infra/, cli/ and actors/ (`./x.ts` imports become `./x.js`);
// 3. what tsc does not emit but the compiled code loads beside itself is copied:
//    the worker entries and the phi-accrual detector of runtime/ (plain .mjs,
//    started as worker threads by URL), the nats-server config templates
//    infra/nats-config.ts reads, and the dashboard's and demo's pages
//    (gateway/dashboard/, served by gateway/static-pages.ts);
// 4. the CLI gets its `#!/usr/bin/env node` line if the source has none;
// 5. esbuild bundles the client SDK (gateway/client.ts) for browsers.
import { spawnSync } from 'node:child_process';
import { chmod, cp, mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));
const dist = join(root, 'dist');
const started = performance.now();

/** Copies the files of `from` whose names match `pattern` into `to`. */
async function copyMatching(from, pattern, to) {
  await mkdir(join(root, to), { recursive: true });
  for (const name of await readdir(join(root, from))) {
    if (pattern.test(name)) await cp(join(root, from, name), join(root, to, name));
  }
}

await rm(dist, { recursive: true, force: true });

const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
const compiled = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], {
  cwd: root,
  stdio: 'inherit',
});
if (compiled.status !== 0) {
  console.error(
    `build: tsc -p tsconfig.build.json failed (exit ${compiled.status ?? compiled.signal})`,
  );
  process.exit(1);
}

await copyMatching('runtime', /\.(mjs|d\.mts)$/, 'dist/runtime');
await copyMatching('infra/nats', /\.conf$/, 'dist/infra/nats');
await copyMatching('gateway/dashboard', /\.(html|js|css)$/, 'dist/gateway/dashboard');

const cli = join(dist, 'cli/ftmesh.js');
const cliText = await readFile(cli, 'utf8');
if (!cliText.startsWith('#!')) await writeFile(cli, `#!/usr/bin/env node\n${cliText}`);
await chmod(cli, 0o755);

// The SDK imports nothing from Node: it loads `ws` and `node:dgram` by names held in
// variables, which a browser never reaches and a bundler must not resolve. esbuild's syntax
// minification would fold such a variable back into `import("node:dgram")`, so only
// whitespace and identifiers are minified.
await build({
  absWorkingDir: root,
  entryPoints: ['gateway/client.ts'],
  outfile: 'dist/browser/ftmesh-client.js',
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minifyWhitespace: true,
  minifyIdentifiers: true,
  logLevel: 'warning',
});

console.log(`build: dist/ in ${((performance.now() - started) / 1000).toFixed(1)} s`);
