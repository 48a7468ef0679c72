import { mintToken } from '../gateway/index.ts';
import { OptionCheck, parseCommand, secretOption, seeHelp } from './args.ts';
import { UsageError, firstLine } from './errors.ts';

/** `ftmesh token`: prints a signed token (HS256 JWT) for a gateway. */

const spec = {
  name: 'token',
  options: {
    sub: { type: 'string' },
    sid: { type: 'string' },
    role: { type: 'string' },
    actor: { type: 'string' },
    ttl: { type: 'string' },
    secret: { type: 'string' },
  },
} as const;

/** A token lives a year at most: a longer one is a password that cannot be changed. */
const MAX_TTL_SECONDS = 366 * 24 * 3600;

/** Runs `ftmesh token`. */
export function token(argv: readonly string[]): Promise<void> {
  const { values } = parseCommand(spec, argv);
  const check = new OptionCheck(spec.name);
  if (values.sub === undefined)
    throw new UsageError(`token needs --sub ID (the client id); ${seeHelp(spec.name)}`);
  const sub = check.id('--sub', values.sub);
  const role = check.oneOf('role', values.role ?? 'client', ['client', 'operator'] as const);
  const sid = values.sid === undefined ? undefined : check.id('--sid', values.sid, 128);
  const actor = values.actor === undefined ? undefined : check.id('--actor', values.actor);
  if (role === 'client' && sid === undefined)
    throw new UsageError(
      `a client token reaches one session: pass --sid SID (or --role operator); ${seeHelp(spec.name)}`,
    );
  if (actor !== undefined && sid === undefined)
    throw new UsageError(
      `--actor opens the token's session: pass --sid SID too; ${seeHelp(spec.name)}`,
    );
  const ttlSeconds =
    values.ttl === undefined ? undefined : check.integer('ttl', values.ttl, 1, MAX_TTL_SECONDS);
  const secret = secretOption(spec.name, values.secret);
  try {
    console.log(
      mintToken({
        secret,
        sub,
        role,
        ...(sid === undefined ? {} : { sid }),
        ...(actor === undefined ? {} : { actor }),
        ...(ttlSeconds === undefined ? {} : { ttlSeconds }),
      }),
    );
  } catch (err) {
    // mintToken names its options without dashes: what it refuses is still the command line.
    throw new UsageError(`${firstLine(err).replace(/^mintToken: /, '')}; ${seeHelp(spec.name)}`);
  }
  return Promise.resolve();
}
