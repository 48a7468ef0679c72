import { strict as assert } from 'node:assert';
import { stopAll } from '../helpers/processes.ts';
import {
  assertOneLineError,
  importRuntime,
  runCli,
  useTempDir,
  writeModule,
  type CliRun,
} from './cli-helpers.ts';

/**
 * What a user sees when they ask for help or get the command line wrong:
 * usage on stdout and exit 0; for a mistake, one line on stderr that says
 * what to do, exit 2, no stack trace, and a process that exits by itself.
 * None of these needs NATS. The runs start together in `before` (each takes
 * a Node start-up) and each test checks one.
 */

const SECRET = 'usage-test-secret-0123456789abcdef0123';
const commands = [
  'dev',
  'demo',
  'demo failover',
  'host',
  'gateway',
  'session',
  'status',
  'nats',
  'token',
] as const;

describe('cli: help and usage errors', function () {
  this.timeout(60_000);
  const tmp = useTempDir('cli-usage');
  const runs = new Map<string, Promise<CliRun>>();
  /** Starts a run (at most 4 at a time), so that `it` can await it. */
  const queue: (() => void)[] = [];
  let active = 0;
  const limited = (args: string[], env?: Record<string, string>): Promise<CliRun> =>
    new Promise<CliRun>((resolve, reject) => {
      const go = () => {
        active++;
        runCli(args, env ? { env } : {})
          .then(resolve, reject)
          .finally(() => {
            active--;
            queue.shift()?.();
          });
      };
      if (active < 4) go();
      else queue.push(go);
    });
  const start = (key: string, args: string[], env?: Record<string, string>) => {
    const run = limited(args, env);
    run.catch(() => undefined); // awaited by its test; a rejection is reported there
    runs.set(key, run);
  };
  const result = (key: string): Promise<CliRun> => runs.get(key)!;

  before(async () => {
    const syntaxError = await writeModule(tmp.path, 'broken.mjs', 'export const = ;\n');
    const throws = await writeModule(
      tmp.path,
      'throws.mjs',
      "throw new Error('boom at import');\n",
    );
    const noActor = await writeModule(tmp.path, 'none.mjs', 'export const answer = 42;\n');
    const twice = await writeModule(
      tmp.path,
      'twice.ts',
      `${importRuntime}\nconst h = { handlers: { a: () => 1 } };\nexport const one = defineActor({ name: 'same', initialState: {}, ...h });\nexport const two = defineActor({ name: 'same', initialState: {}, ...h });\n`,
    );
    start('--help', ['--help']);
    start('no args', []);
    start('help host', ['help', 'host']);
    for (const c of commands) start(`${c} --help`, [...c.split(' '), '--help']);
    start('host -h', ['host', '-h']);
    start('session open -h', ['session', 'open', '-h']);
    start('unknown command', ['launch']);
    start('unknown option', ['host', '--foo']);
    start('missing value', ['host', '--nats']);
    start('port abc', ['gateway', '--port', 'abc', '--secret', SECRET]);
    start('port 99999', ['gateway', '--port', '99999', '--secret', SECRET]);
    start('heartbeat abc', ['host', '--heartbeat-timeout', 'abc']);
    start('replicas abc', ['host', '--replicas', 'abc']);
    start('short secret', ['gateway', '--secret', 'short']);
    start('no secret', ['gateway']);
    start('ttl abc', [
      'token',
      '--sub',
      'ann',
      '--sid',
      'room-1',
      '--ttl',
      'abc',
      '--secret',
      SECRET,
    ]);
    start('token role', ['token', '--sub', 'ann', '--role', 'admin', '--secret', SECRET]);
    start('token no sid', ['token', '--sub', 'ann', '--secret', SECRET]);
    start('token bad sub', ['token', '--sub', 'a b', '--sid', 's', '--secret', SECRET]);
    start('token ok', [
      'token',
      '--sub',
      'ann',
      '--sid',
      'room-1',
      '--actor',
      'counter',
      '--ttl',
      '60',
      '--secret',
      SECRET,
    ]);
    start('bad nats url', ['status', '--nats', 'http://example.com/x']);
    start('init not json', ['session', 'open', 'counter', 's1', '--init', '{nope']);
    start('session sub', ['session', 'reopen']);
    start('missing module', ['host', '--actors', `${tmp.path}/nope.ts`]);
    start('syntax error module', ['host', '--actors', syntaxError]);
    start('throwing module', ['gateway', '--actors', throws, '--secret', SECRET]);
    start('no actor module', ['host', '--actors', noActor]);
    start('two actors one name', ['host', '--actors', twice]);
    start('not a module', ['host', '--actors', tmp.path]);
    start('demo failover kills', ['demo', 'failover', '--kills', 'many']);
    start('demo failover actor', ['demo', 'failover', '--actor', 'counter']);
  });
  after(stopAll);

  it('ftmesh --help and ftmesh alone print the command list and exit 0', async () => {
    for (const key of ['--help', 'no args']) {
      const run = await result(key);
      assert.equal(run.code, 0, key);
      assert.deepEqual(run.stderr, [], key);
      const text = run.stdout.join('\n');
      // `demo` is listed only as `demo failover`'s first word.
      for (const c of commands.filter((c) => c !== 'demo'))
        assert.match(text, new RegExp(`\\n  ${c} `), `${key} lists ${c}`);
      assert.match(text, /Exit codes:[\s\S]*2 {2}usage error[\s\S]*3 {2}start-up failure/);
    }
  });

  it('ftmesh help host prints the host usage', async () => {
    const run = await result('help host');
    assert.equal(run.code, 0);
    assert.match(run.stdout[0]!, /^Usage: ftmesh host /);
  });

  for (const c of commands)
    it(`ftmesh ${c} --help prints its usage with the exit codes, exit 0`, async () => {
      const run = await result(`${c} --help`);
      assert.equal(run.code, 0, `${c} --help: ${run.stderr.join(' | ')}`);
      assert.deepEqual(run.stderr, []);
      assert.match(run.stdout[0]!, new RegExp(`^Usage: ftmesh ${c}`));
      assert.match(run.stdout.join('\n'), /Exit codes:/);
    });

  it('-h is --help, also after a subcommand', async () => {
    for (const [key, usage] of [
      ['host -h', /^Usage: ftmesh host /],
      ['session open -h', /^Usage: ftmesh session open /],
    ] as const) {
      const run = await result(key);
      assert.equal(run.code, 0, key);
      assert.match(run.stdout[0]!, usage);
    }
  });

  it('an unknown command: one line, exit 2', async () => {
    assertOneLineError(
      await result('unknown command'),
      2,
      /unknown command launch; see ftmesh --help$/,
    );
  });

  it('an unknown option names the option, the command and its help', async () => {
    const run = await result('unknown option');
    assertOneLineError(run, 2, /^ftmesh: unknown option --foo for host; see ftmesh host --help$/);
  });

  it('an option without its value', async () => {
    assertOneLineError(
      await result('missing value'),
      2,
      /--nats needs a value; see ftmesh host --help/,
    );
  });

  it('--port abc and --port 99999 are refused before anything starts', async () => {
    assertOneLineError(await result('port abc'), 2, /--port abc is not a port/);
    assertOneLineError(await result('port 99999'), 2, /--port 99999 is not a port/);
  });

  it('--heartbeat-timeout abc is refused, not ignored', async () => {
    assertOneLineError(
      await result('heartbeat abc'),
      2,
      /--heartbeat-timeout abc is not a duration/,
    );
  });

  it('--replicas abc is refused', async () => {
    assertOneLineError(await result('replicas abc'), 2, /--replicas abc is not a whole number/);
  });

  it('gateway --secret short is refused at start: at least 32 bytes', async () => {
    assertOneLineError(await result('short secret'), 2, /--secret is 5 bytes: .*at least 32/);
  });

  it('gateway without a secret says how to give one', async () => {
    assertOneLineError(await result('no secret'), 2, /pass --secret S or set FTMESH_SECRET/);
  });

  it('token --ttl abc blames --ttl', async () => {
    assertOneLineError(await result('ttl abc'), 2, /--ttl abc is not a whole number/);
  });

  it('token mistakes are one line each, no stack trace', async () => {
    assertOneLineError(
      await result('token role'),
      2,
      /--role admin is not one of client, operator/,
    );
    assertOneLineError(await result('token no sid'), 2, /pass --sid SID \(or --role operator\)/);
    assertOneLineError(await result('token bad sub'), 2, /--sub "a b" is not an id/);
  });

  it('token --actor mints a join-or-create token', async () => {
    const run = await result('token ok');
    assert.equal(run.code, 0, run.stderr.join('\n'));
    const [, payload] = run.stdout[0]!.split('.');
    const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString('utf8')) as Record<
      string,
      unknown
    >;
    assert.equal(claims['actor'], 'counter');
    assert.equal(claims['sid'], 'room-1');
    assert.equal((claims['exp'] as number) - (claims['iat'] as number), 60);
  });

  it('a --nats that is not a NATS URL', async () => {
    assertOneLineError(
      await result('bad nats url'),
      2,
      /--nats "http:\/\/example.com\/x" is not a NATS URL/,
    );
  });

  it('session open --init that is not JSON, and an unknown session command', async () => {
    assertOneLineError(await result('init not json'), 2, /--init is not JSON/);
    assertOneLineError(await result('session sub'), 2, /unknown command session reopen/);
  });

  it('--actors: a module that does not exist', async () => {
    assertOneLineError(await result('missing module'), 2, /--actors .*nope\.ts: no such file$/);
  });

  it('--actors: a module that does not load (a syntax error, a throw at import)', async () => {
    assertOneLineError(await result('syntax error module'), 2, /broken\.mjs does not load: /);
    assertOneLineError(
      await result('throwing module'),
      2,
      /throws\.mjs does not load: boom at import$/,
    );
  });

  it('--actors: a module that exports no actor', async () => {
    assertOneLineError(
      await result('no actor module'),
      2,
      /none\.mjs exports no actor: export what defineActor returns/,
    );
  });

  it('--actors: two actors of one name, or a directory', async () => {
    assertOneLineError(await result('two actors one name'), 2, /two actors are named same/);
    assertOneLineError(await result('not a module'), 2, /is not a file: name the module itself/);
  });

  it('demo failover: --kills and --actor are checked', async () => {
    assertOneLineError(
      await result('demo failover kills'),
      2,
      /--kills many is not a whole number/,
    );
    assertOneLineError(
      await result('demo failover actor'),
      2,
      /--actor counter is not one of demo-ledger, demo-ledger-durable/,
    );
  });
});
