import type { MeshClient } from '../runtime/index.ts';
import { OptionCheck, natsUrl, parseCommand, seeHelp } from './args.ts';
import { FailureError, UsageError, firstLine } from './errors.ts';
import { openMesh, sessionRows, sessionTable } from './mesh-view.ts';

/**
 * `ftmesh session open|close|list`: sessions through a mesh client
 * (`placeSession`, `closeSession`, `sessions()` with each copy's seq).
 */

const specs = {
  open: {
    name: 'session open',
    positionals: ['ACTOR', 'SID'],
    options: { nats: { type: 'string' }, init: { type: 'string' } },
  },
  close: {
    name: 'session close',
    positionals: ['SID'],
    options: { nats: { type: 'string' } },
  },
  list: {
    name: 'session list',
    options: { nats: { type: 'string' }, json: { type: 'boolean' } },
  },
} as const;

/** What the runtime's errors mean for someone at a shell. */
function failure(err: unknown, sid: string, actor?: string): Error {
  const code = (err as { code?: unknown }).code;
  const why = firstLine(err);
  switch (code) {
    case 'capacity':
      return new FailureError(
        `no live host has room for ${sid}: start a host (ftmesh host) or run ftmesh dev`,
      );
    case 'session_exists':
      return new FailureError(`session ${sid} exists already: pick another SID, or close it first`);
    case 'session_not_found':
      return new FailureError(
        `session ${sid} is not open (ftmesh session list shows those that are)`,
      );
    case 'unknown_actor':
      return new FailureError(
        `the host picked for ${sid} does not run actor ${actor}: start hosts with --actors naming a module that defines it`,
      );
    case 'request_timeout':
    case 'no_responder':
      return new FailureError(`the host serving ${sid} did not answer (${why}): try again`);
    default:
      return new FailureError(`${sid}: ${why}`);
  }
}

async function withMesh<T>(nats: string, fn: (mesh: MeshClient) => Promise<T>): Promise<T> {
  const mesh = await openMesh(nats);
  try {
    return await fn(mesh);
  } finally {
    await mesh.close();
  }
}

/** Runs `ftmesh session SUBCOMMAND ...`. */
export async function session(argv: readonly string[]): Promise<void> {
  const [sub, ...rest] = argv;
  if (sub === 'open') {
    const { values, positionals } = parseCommand(specs.open, rest);
    const check = new OptionCheck(specs.open.name);
    const actor = check.id('ACTOR', positionals[0]!);
    const sid = check.id('SID', positionals[1]!, 128);
    const init = values.init === undefined ? undefined : check.json('init', values.init);
    const nats = natsUrl(specs.open.name, values.nats);
    await withMesh(nats, async (mesh) => {
      const record = await mesh
        .placeSession(actor, sid, init === undefined ? {} : { init })
        .catch((err: unknown) => {
          throw failure(err, sid, actor);
        });
      console.log(
        `opened ${sid} (${record.actor}): primary ${record.primary}, standby ${record.standby || '(none)'}, epoch ${record.epoch}`,
      );
    });
    return;
  }
  if (sub === 'close') {
    const { values, positionals } = parseCommand(specs.close, rest);
    const sid = new OptionCheck(specs.close.name).id('SID', positionals[0]!, 128);
    await withMesh(natsUrl(specs.close.name, values.nats), async (mesh) => {
      await mesh.closeSession(sid).catch((err: unknown) => {
        throw failure(err, sid);
      });
      console.log(`closed ${sid}`);
    });
    return;
  }
  if (sub === 'list') {
    const { values } = parseCommand(specs.list, rest);
    await withMesh(natsUrl(specs.list.name, values.nats), async (mesh) => {
      const rows = await sessionRows(mesh);
      console.log(values.json ? JSON.stringify({ sessions: rows }) : sessionTable(rows));
    });
    return;
  }
  throw new UsageError(
    sub === undefined
      ? `session needs open, close or list; ${seeHelp('session')}`
      : `unknown command session ${sub}: use open, close or list; ${seeHelp('session')}`,
  );
}
