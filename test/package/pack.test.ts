/**
 * ftmesh as its users get it: built, packed with `npm pack`, installed from
 * the tarball into a fresh project, and run there by plain `node` (no tsx):
 * two hosts and a gateway of that project serve an actor of its own, written
 * in JavaScript, to a client of the SDK.
 */
import { strict as assert } from 'node:assert';
import { execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { useNatsServer } from '../helpers/nats.ts';
import { REPO_ROOT } from '../helpers/processes.ts';

const run = promisify(execFile);

/** Runs npm in `cwd`; a failure's message carries npm's output (tsc prints its errors to stdout). */
async function npm(args: string[], cwd: string): Promise<string> {
  try {
    return (await run('npm', args, { cwd, maxBuffer: 64 * 1024 * 1024 })).stdout;
  } catch (error) {
    const { stdout, stderr } = error as { stdout?: string; stderr?: string };
    throw new Error(`npm ${args.join(' ')} in ${cwd} failed:\n${stdout ?? ''}\n${stderr ?? ''}`, {
      cause: error,
    });
  }
}
const secret = 'package-test-secret-0123456789abcdef';

/** The user's project: an actor in JavaScript and the programs that serve it. */
const project: Record<string, string> = {
  'package.json': JSON.stringify({ name: 'ftmesh-user', private: true, type: 'module' }),
  'my-actor.mjs': `
import { defineActor } from 'ftmesh';
export const myActor = defineActor({
  name: 'my-actor',
  initialState: { value: 0 },
  clientHandlers: ['add'],
  workers: { module: new URL('./tasks.mjs', import.meta.url), size: 1 },
  handlers: {
    add(state, by) {
      state.value += by;
      return state.value;
    },
    double(state, by, ctx) {
      ctx.runInWorker('double', by, 'doubled');
    },
    doubled(state, job, ctx) {
      if (job.result !== undefined) state.value += job.result;
      ctx.emit('doubled', { ...job, value: state.value });
    },
  },
});
`,
  'tasks.mjs': `export const tasks = { double: (n) => n * 2 };\n`,
  // A TypeScript task module: the project has no tsx, so its worker must say what to do.
  'ts-tasks-actor.mjs': `
import { defineActor } from 'ftmesh';
export const tsTasksActor = defineActor({
  name: 'ts-tasks',
  initialState: {},
  workers: { module: new URL('./tasks.ts', import.meta.url), size: 1 },
  handlers: {
    double(state, by, ctx) {
      ctx.runInWorker('double', by, 'doubled');
    },
    doubled(state, job, ctx) {
      ctx.emit('doubled', job);
    },
  },
});
`,
  'tasks.ts': `export const tasks = { double: (n: number): number => n * 2 };\n`,
  'host.mjs': `
import { createHost } from 'ftmesh';
import { myActor } from './my-actor.mjs';
import { tsTasksActor } from './ts-tasks-actor.mjs';
const [nats, hostId] = process.argv.slice(2);
const host = await createHost({
  nats,
  hostId,
  actors: [myActor, tsTasksActor],
  onError: (err) => console.error(\`error \${err.name}: \${err.message}\`),
});
console.log(\`ready \${host.id}\`);
`,
  'gateway.mjs': `
import { createGateway } from 'ftmesh/gateway';
import { myActor } from './my-actor.mjs';
import { tsTasksActor } from './ts-tasks-actor.mjs';
const [nats, secret] = process.argv.slice(2);
const gateway = await createGateway({
  nats,
  actors: [myActor, tsTasksActor],
  auth: { secret },
  port: 0,
  udpPort: false,
  onError: (err) => console.error(\`error \${err.name}: \${err.message}\`),
});
console.log(\`ready \${gateway.url}\`);
`,
  // Opens two sessions on the hosts, talks to them through the gateway, prints what it got.
  'session.mjs': `
import { createClient } from 'ftmesh';
import { mintToken } from 'ftmesh/gateway';
import { connect } from 'ftmesh/client';
const [nats, gatewayUrl, secret] = process.argv.slice(2);
const mesh = await createClient({ nats });
const join = (sid) => connect(gatewayUrl, { token: mintToken({ secret, sub: 'alice', sid }) });
const nextEvent = (session, name) => new Promise((resolve) => session.on(name, resolve));
try {
  await mesh.placeSession('my-actor', 'packed', { primary: 'host-a', standby: 'host-b' });
  const session = await join('packed');
  const replies = [];
  for (const by of [1, 2, 3]) replies.push(await session.request('add', by));
  const doubled = nextEvent(session, 'doubled');
  await mesh.request('packed', 'double', 21);
  const owner = mesh.owner('packed');

  await mesh.placeSession('ts-tasks', 'packed-ts', { primary: 'host-a', standby: 'host-b' });
  const tsSession = await join('packed-ts');
  const tsDoubled = nextEvent(tsSession, 'doubled');
  await mesh.request('packed-ts', 'double', 1);

  const result = {
    replies,
    doubled: await doubled,
    copies: [owner.primary, owner.standby],
    tsWorker: await tsDoubled,
  };
  console.log(\`result \${JSON.stringify(result)}\`);
  await tsSession.close();
  await session.close();
} finally {
  await mesh.close();
}
`,
  // A TypeScript user of the package: the declarations must carry the types.
  'consumer.ts': `
import { createClient, createHost, defineActor, type Host } from 'ftmesh';
import { createGateway, mintToken } from 'ftmesh/gateway';
import { connect, type Session } from 'ftmesh/client';
const actor = defineActor({
  name: 'typed',
  initialState: { value: 0 },
  clientHandlers: ['add'],
  handlers: { add: (state, by: number) => (state.value += by) },
});
export async function main(nats: string): Promise<number> {
  const host: Host = await createHost({ nats, actors: [actor] });
  const gateway = await createGateway({ nats, actors: [actor], auth: { secret: '${secret}' } });
  const mesh = await createClient({ nats });
  await mesh.placeSession('typed', 'sid');
  const session: Session = await connect(gateway.url, { token: mintToken({ secret: '${secret}', sub: 'u', sid: 'sid' }) });
  // @ts-expect-error a host id is a string: the declarations are real types, not any
  const id: number = host.id;
  return id + (await session.request<number>('add', 1));
}
`,
  'tsconfig.json': JSON.stringify({
    compilerOptions: {
      module: 'NodeNext',
      moduleResolution: 'NodeNext',
      target: 'ES2022',
      strict: true,
      noEmit: true,
      // The project installs no @types/node of its own: the repository's stands in for it.
      typeRoots: [join(REPO_ROOT, 'node_modules/@types')],
      types: ['node'],
    },
    files: ['consumer.ts'],
  }),
};

/** A plain `node` process of the project (the test helpers' spawnNode adds tsx). */
interface ProjectProcess {
  readonly pid: number;
  readonly stdout: string[];
  readonly stderr: string[];
  readonly exited: Promise<void>;
  /** True until the process exited. */
  running(): boolean;
  /** Resolves with the first stdout line matching `regex`; rejects on exit or timeout. */
  waitForLine(regex: RegExp, timeoutMs?: number): Promise<string>;
}

describe('package: ftmesh installed from its tarball runs under plain node', function () {
  const nats = useNatsServer();
  const procs: ProjectProcess[] = [];
  let dir: string;
  let files: string[] = [];

  /** Starts `node <script> ...args` in the project, without any loader. */
  const startNode = (script: string, args: string[]): ProjectProcess => {
    const child = spawn(process.execPath, [script, ...args], {
      cwd: dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    assert.ok(child.pid !== undefined, `could not start node ${script}`);
    const stdout: string[] = [];
    const stderr: string[] = [];
    createInterface({ input: child.stderr }).on('line', (line) => stderr.push(line));
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => stdout.push(line));
    const closed = new Promise<void>((resolve) => lines.once('close', resolve));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const explain = (regex: RegExp, why: string): Error =>
      new Error(
        `node ${script} (pid ${child.pid}) ${why} waiting for ${regex}\n` +
          `--- stdout ---\n${stdout.slice(-20).join('\n')}\n--- stderr ---\n${stderr.slice(-20).join('\n')}`,
      );
    const waitForLine = (regex: RegExp, timeoutMs = 15_000): Promise<string> => {
      const seen = stdout.find((line) => regex.test(line));
      if (seen !== undefined) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const finish = (error: Error | undefined, line = ''): void => {
          clearTimeout(timer);
          lines.off('line', onLine);
          if (error) reject(error);
          else resolve(line);
        };
        const onLine = (line: string): void => {
          if (regex.test(line)) finish(undefined, line);
        };
        const timer = setTimeout(
          () => finish(explain(regex, `timed out after ${timeoutMs} ms`)),
          timeoutMs,
        );
        lines.on('line', onLine);
        void closed.then(() => finish(explain(regex, 'exited')));
      });
    };
    const running = (): boolean => child.exitCode === null && child.signalCode === null;
    const proc = { pid: child.pid, stdout, stderr, exited, running, waitForLine };
    procs.push(proc);
    return proc;
  };

  before(async function () {
    this.timeout(180_000);
    dir = await mkdtemp(join(tmpdir(), 'ftmesh-package-'));
    // Always built: on a clean clone dist/ does not exist, and a stale one would test old code.
    await npm(['run', 'build'], REPO_ROOT);
    const packed = await npm(
      ['pack', '--ignore-scripts', '--json', '--pack-destination', dir],
      REPO_ROOT,
    );
    const [tarball] = JSON.parse(packed) as {
      filename: string;
      size: number;
      entryCount: number;
      files: { path: string }[];
    }[];
    assert.ok(tarball, `npm pack printed no tarball: ${packed}`);
    files = tarball.files.map((f) => f.path);
    console.log(
      `      ${tarball.filename}: ${(tarball.size / 1024).toFixed(0)} KiB, ${tarball.entryCount} files`,
    );
    for (const [name, text] of Object.entries(project)) await writeFile(join(dir, name), text);
    await npm(
      ['install', join(dir, tarball.filename), '--prefer-offline', '--no-audit', '--no-fund'],
      dir,
    );
  });

  afterEach(function () {
    if (this.currentTest?.state !== 'failed') return;
    for (const proc of procs)
      if (proc.stderr.length)
        console.log(`--- pid ${proc.pid} stderr ---\n${proc.stderr.join('\n')}`);
  });

  after(async function () {
    this.timeout(20_000);
    for (const proc of procs) {
      if (!proc.running()) continue;
      try {
        process.kill(proc.pid, 'SIGKILL');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
      }
    }
    await Promise.all(procs.map((proc) => proc.exited));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the tarball holds dist/ and the docs, and no tests, benchmarks, simulator or CI files', () => {
    for (const path of [
      'package.json',
      'README.md',
      'dist/runtime/index.js',
      'dist/runtime/index.d.ts',
      'dist/runtime/worker-entry.mjs',
      'dist/runtime/liveness-worker.mjs',
      'dist/runtime/phi-accrual.mjs',
      'dist/runtime/phi-accrual.d.mts',
      'dist/gateway/client.js',
      'dist/browser/ftmesh-client.js',
      'dist/cli/ftmesh.js',
      'dist/infra/nats/single.conf',
      'runtime/PROTOCOL.md',
      'gateway/PROTOCOL.md',
    ])
      assert.ok(files.includes(path), `${path} is in the tarball`);
    const unwanted = files.filter((path) => /^(test|bench|sim|\.ci|scripts)\//.test(path));
    assert.deepEqual(unwanted, []);
    const sources = files.filter((path) => /\.ts$/.test(path) && !/\.d\.ts$/.test(path));
    assert.deepEqual(sources, [], 'TypeScript sources stay out: dist/ has the JavaScript');
  });

  it('ftmesh, ftmesh/gateway, ftmesh/client and ftmesh/client/browser resolve under plain node', async () => {
    const probe = `
      const loaded = {};
      for (const name of ['ftmesh', 'ftmesh/gateway', 'ftmesh/client', 'ftmesh/client/browser'])
        loaded[name] = Object.keys(await import(name)).sort();
      console.log(JSON.stringify(loaded));`;
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', probe], {
      cwd: dir,
    });
    const loaded = JSON.parse(stdout) as Record<string, string[]>;
    assert.ok(loaded.ftmesh?.includes('defineActor') && loaded.ftmesh.includes('createHost'));
    assert.ok(loaded['ftmesh/gateway']?.includes('createGateway'));
    assert.ok(loaded['ftmesh/client']?.includes('connect'));
    assert.ok(loaded['ftmesh/client']?.includes('RequestError'));
    assert.ok(loaded['ftmesh/client/browser']?.includes('connect'));
  });

  it('the browser bundle imports nothing a bundler would try to resolve', async () => {
    const bundle = await readFile(
      join(dir, 'node_modules/ftmesh/dist/browser/ftmesh-client.js'),
      'utf8',
    );
    // `ws` and `node:dgram` are loaded by names in variables, which a browser never reaches.
    assert.deepEqual(bundle.match(/(import\(|from\s*)["'][^"']+["']/g) ?? [], []);
  });

  it('the declarations type-check a TypeScript user of the package', async () => {
    const tsc = join(REPO_ROOT, 'node_modules/typescript/bin/tsc');
    await run(process.execPath, [tsc, '-p', dir], { cwd: dir }).catch((error: unknown) => {
      const out = error as { stdout?: string };
      assert.fail(`tsc on the user's project:\n${out.stdout ?? String(error)}`);
    });
  });

  it("two hosts and a gateway of the user's project serve its JavaScript actor to a client of the SDK", async function () {
    this.timeout(60_000);
    const hosts = ['host-a', 'host-b'].map((id) => startNode('host.mjs', [nats.url, id]));
    const gateway = startNode('gateway.mjs', [nats.url, secret]);
    await Promise.all(hosts.map((host) => host.waitForLine(/^ready host-/, 20_000)));
    const gatewayUrl = (await gateway.waitForLine(/^ready ws:/)).split(' ')[1]!;

    const session = startNode('session.mjs', [nats.url, gatewayUrl, secret]);
    const line = await session.waitForLine(/^result /, 30_000);
    const result = JSON.parse(line.slice('result '.length));
    assert.deepEqual(result.replies, [1, 3, 6], 'replies through the gateway');
    assert.deepEqual(result.doubled, { result: 42, value: 48 }, 'a worker thread ran tasks.mjs');
    assert.deepEqual(result.copies, ['host-a', 'host-b']);
    assert.match(
      result.tsWorker.error,
      /tasks\.ts is TypeScript: install tsx in your project \(npm i -D tsx\) or compile it to JavaScript$/,
    );
    await session.exited;
    for (const proc of [...hosts, gateway, session])
      assert.deepEqual(
        proc.stderr.filter((l) => l.startsWith('error ')),
        [],
        'no errors reported',
      );
  });

  it('the ftmesh bin answers --help', async () => {
    const { stdout } = await run(join(dir, 'node_modules/.bin/ftmesh'), ['--help'], { cwd: dir });
    assert.match(stdout, /ftmesh/);
  });
});
