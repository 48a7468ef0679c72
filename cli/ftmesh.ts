#!/usr/bin/env node
/**
 * The `ftmesh` command: finds the command, prints usage on `--help`, and turns
 * every error into one line and a documented exit code (cli/errors.ts). Each
 * command lives in its own file, loaded only when it runs, so that `ftmesh
 * token` does not load the runtime.
 */
import { wantsHelp } from './args.ts';
import { CliError, ExitCode, UsageError, firstLine } from './errors.ts';
import { helpTopic, usage, type UsageTopic } from './help.ts';

type Run = (argv: readonly string[]) => Promise<void>;

/** Command words, the usage topic they print, and how to load them. */
const commands: Record<string, { topic: UsageTopic; load: () => Promise<Run> }> = {
  dev: { topic: 'dev', load: async () => (await import('./dev.ts')).dev },
  demo: { topic: 'demo', load: async () => (await import('./demo.ts')).demo },
  'demo failover': {
    topic: 'demo failover',
    load: async () => (await import('./demo-failover.ts')).demoFailover,
  },
  host: { topic: 'host', load: async () => (await import('./host.ts')).host },
  gateway: { topic: 'gateway', load: async () => (await import('./gateway.ts')).gateway },
  session: { topic: 'session', load: async () => (await import('./session.ts')).session },
  status: { topic: 'status', load: async () => (await import('./status.ts')).status },
  nats: { topic: 'nats', load: async () => (await import('./nats.ts')).nats },
  token: { topic: 'token', load: async () => (await import('./token.ts')).token },
};

async function main(argv: readonly string[]): Promise<void> {
  const [first, second] = argv;
  if (first === undefined || first === '--help' || first === '-h') {
    console.log(usage.main);
    return;
  }
  if (first === 'help') {
    const topic = helpTopic(argv.slice(1));
    if (!topic) throw new UsageError(`no help for ${argv.slice(1).join(' ')}; see ftmesh --help`);
    console.log(usage[topic]);
    return;
  }
  const twoWords =
    second !== undefined && commands[`${first} ${second}`] ? `${first} ${second}` : '';
  const name = twoWords || first;
  const command = commands[name];
  if (!command) {
    const what = first.startsWith('-') ? `option ${first}` : `command ${first}`;
    throw new UsageError(`unknown ${what}; see ftmesh --help`);
  }
  const rest = argv.slice(twoWords ? 2 : 1);
  if (wantsHelp(rest)) {
    console.log(usage[command.topic]);
    return;
  }
  const run = await command.load();
  await run(rest);
}

/**
 * The last word on an error: one line (`FTMESH_DEBUG=1` adds the stack of an
 * error that is not one of the CLI's own), then the exit. Exiting here, and
 * after a command resolves, means a handle left open by a failed start
 * (a connection, a timer) never keeps the process running.
 */
function fail(err: unknown): never {
  if (err instanceof CliError) {
    console.error(`ftmesh: ${err.message}`);
    process.exit(err.exitCode);
  }
  const debug = process.env['FTMESH_DEBUG'] === '1';
  console.error(
    `ftmesh: ${err instanceof Error ? `${err.name}: ` : ''}${firstLine(err)}${debug ? '' : ' (FTMESH_DEBUG=1 shows where)'}`,
  );
  if (debug && err instanceof Error && err.stack) console.error(err.stack);
  process.exit(ExitCode.failure);
}

process.on('uncaughtException', fail);
process.on('unhandledRejection', fail);
main(process.argv.slice(2)).then(() => process.exit(process.exitCode ?? ExitCode.ok), fail);
