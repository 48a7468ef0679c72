import { UsageError } from './errors.ts';

/**
 * Command-line parsing shared by every command: options as declared, nothing
 * else, and one-line usage errors that name the option and where to read
 * more (`see ftmesh host --help`). Values are checked here too, so that
 * `--port abc` is refused before anything starts.
 */

/** One option of a command: a string (`--port 80`, `--port=80`), a flag, or a list. */
export type OptionSpec =
  | { type: 'string' }
  | { type: 'boolean' }
  /** Several values: `--actors a.ts b.ts`, `--actors a.ts --actors b.ts` or `--actors a.ts,b.ts`. */
  | { type: 'list' };

export type OptionSpecs = Readonly<Record<string, OptionSpec>>;

/** What a command accepts. */
export interface CommandSpec<O extends OptionSpecs> {
  /** As the user types it after `ftmesh`: `host`, `session open`. */
  readonly name: string;
  readonly options: O;
  /** Names of the positional arguments, in order (shown in errors). */
  readonly positionals?: readonly string[];
  /** How many of them are required (default: all). */
  readonly required?: number;
}

export type OptionValues<O extends OptionSpecs> = {
  [K in keyof O]?: O[K]['type'] extends 'boolean'
    ? boolean
    : O[K]['type'] extends 'list'
      ? string[]
      : string;
};

export interface Parsed<O extends OptionSpecs> {
  readonly values: OptionValues<O>;
  readonly positionals: string[];
}

/** True when the arguments ask for help (`--help` or `-h` anywhere before `--`). */
export function wantsHelp(argv: readonly string[]): boolean {
  for (const arg of argv) {
    if (arg === '--') return false;
    if (arg === '--help' || arg === '-h') return true;
  }
  return false;
}

/** The tail every usage error ends with. */
export const seeHelp = (command: string): string => `see ftmesh ${command} --help`;

/**
 * Parses `argv` (the arguments after the command's name) against `spec`.
 * @throws UsageError for an unknown option, a missing value, a value given to
 * a flag, or too many or too few positional arguments.
 */
export function parseCommand<O extends OptionSpecs>(
  spec: CommandSpec<O>,
  argv: readonly string[],
): Parsed<O> {
  const fail = (what: string): never => {
    throw new UsageError(`${what}; ${seeHelp(spec.name)}`);
  };
  const values: Record<string, string | boolean | string[]> = {};
  const positionals: string[] = [];
  let listOpen: string[] | undefined; // the list option that takes the positionals following it
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (arg.startsWith('-') && arg !== '-') {
      listOpen = undefined;
      if (!arg.startsWith('--')) fail(`unknown option ${arg} for ${spec.name}`);
      const eq = arg.indexOf('=');
      const name = arg.slice(2, eq === -1 ? undefined : eq);
      const inline = eq === -1 ? undefined : arg.slice(eq + 1);
      const option = Object.hasOwn(spec.options, name) ? spec.options[name] : undefined;
      if (!option) fail(`unknown option --${name} for ${spec.name}`);
      if (option!.type === 'boolean') {
        if (inline !== undefined) fail(`--${name} takes no value`);
        values[name] = true;
        continue;
      }
      let value = inline;
      if (value === undefined) {
        const next = argv[i + 1];
        if (next === undefined || next.startsWith('--')) fail(`--${name} needs a value`);
        value = next;
        i++;
      }
      if (option!.type === 'string') {
        if (values[name] !== undefined) fail(`--${name} is given twice`);
        values[name] = value!;
      } else {
        const list = (values[name] as string[] | undefined) ?? [];
        for (const item of value!.split(',')) if (item !== '') list.push(item);
        values[name] = list;
        listOpen = list;
      }
      continue;
    }
    if (listOpen) listOpen.push(...arg.split(',').filter((item) => item !== ''));
    else positionals.push(arg);
  }
  const names = spec.positionals ?? [];
  const required = spec.required ?? names.length;
  if (positionals.length > names.length) {
    fail(`unexpected argument ${JSON.stringify(positionals[names.length])} for ${spec.name}`);
  }
  if (positionals.length < required) fail(`${spec.name} needs ${names[positionals.length]}`);
  return { values: values as OptionValues<O>, positionals };
}

/**
 * Value checks: each throws a UsageError naming the option, the value and the
 * fix. `name` is an option's name without dashes (`port`); `id` takes the
 * label to show instead (`--sub`, `SID`), as ids come from options and
 * positional arguments alike.
 */
export class OptionCheck {
  constructor(private readonly command: string) {}

  private fail(what: string): never {
    throw new UsageError(`${what}; ${seeHelp(this.command)}`);
  }

  /** An integer from `min` to `max`. */
  integer(name: string, raw: string, min: number, max: number): number {
    const n = /^-?\d+$/.test(raw.trim()) ? Number(raw) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max)
      this.fail(`--${name} ${raw} is not a whole number from ${min} to ${max}`);
    return n;
  }

  /** A TCP or UDP port; `allowZero` for "any free port". */
  port(name: string, raw: string, allowZero = true): number {
    const min = allowZero ? 0 : 1;
    const n = /^\d+$/.test(raw.trim()) ? Number(raw) : NaN;
    if (!Number.isInteger(n) || n < min || n > 65_535)
      this.fail(
        `--${name} ${raw} is not a port: use a number from ${min} to 65535${allowZero ? ' (0: any free port)' : ''}`,
      );
    return n;
  }

  /** A duration in milliseconds, greater than zero unless `allowZero`. */
  milliseconds(name: string, raw: string, allowZero = false): number {
    const n = /^\d+(?:\.\d+)?$/.test(raw.trim()) ? Number(raw) : NaN;
    if (!Number.isFinite(n) || n < 0 || (n === 0 && !allowZero) || n > 86_400_000)
      this.fail(
        `--${name} ${raw} is not a duration: give milliseconds as a number${allowZero ? '' : ' above 0'} (e.g. 100)`,
      );
    return n;
  }

  /** A JSON value. */
  json(name: string, raw: string): unknown {
    try {
      return JSON.parse(raw) as unknown;
    } catch (err) {
      return this.fail(
        `--${name} is not JSON (${(err as Error).message}): quote it, e.g. '{"a":1}'`,
      );
    }
  }

  /** An id as the runtime allows them: 1-`max` of A-Z a-z 0-9 _ - */
  id(label: string, raw: string, max = 64): string {
    if (!new RegExp(`^[A-Za-z0-9_-]{1,${max}}$`).test(raw))
      this.fail(`${label} ${JSON.stringify(raw)} is not an id: use 1-${max} of A-Z a-z 0-9 _ -`);
    return raw;
  }

  /** One of `choices`. */
  oneOf<T extends string>(name: string, raw: string, choices: readonly T[]): T {
    if (!(choices as readonly string[]).includes(raw))
      this.fail(`--${name} ${raw} is not one of ${choices.join(', ')}`);
    return raw as T;
  }
}

/** One server of a `--nats` list: nats://, tls://, ws:// or wss://, or a bare HOST:PORT. */
function isServerUrl(server: string): boolean {
  try {
    const url = new URL(server.includes('://') ? server : `nats://${server}`);
    return (
      ['nats:', 'tls:', 'ws:', 'wss:'].includes(url.protocol) &&
      url.hostname !== '' &&
      (url.pathname === '' || url.pathname === '/') &&
      url.search === ''
    );
  } catch {
    return false;
  }
}

/** The NATS URL of a command: `--nats`, else `FTMESH_NATS`, else the local default. */
export function natsUrl(command: string, given: string | undefined): string {
  const url = given ?? process.env['FTMESH_NATS'] ?? 'nats://127.0.0.1:4222';
  for (const part of url.split(',')) {
    const server = part.trim();
    if (!isServerUrl(server))
      throw new UsageError(
        `--nats ${JSON.stringify(server)} is not a NATS URL: use nats://HOST:PORT (several: comma-separated); ${seeHelp(command)}`,
      );
  }
  return url;
}

/** The HMAC secret of gateways and tokens: `--secret`, else `FTMESH_SECRET`; at least 32 bytes. */
export function secretOption(command: string, given: string | undefined): string {
  const secret = given ?? process.env['FTMESH_SECRET'];
  const from = given !== undefined ? '--secret' : 'FTMESH_SECRET';
  if (secret === undefined || secret === '')
    throw new UsageError(
      `${command} needs a secret: pass --secret S or set FTMESH_SECRET (at least 32 bytes, e.g. openssl rand -hex 32)`,
    );
  const bytes = Buffer.byteLength(secret, 'utf8');
  if (bytes < 32)
    throw new UsageError(
      `${from} is ${bytes} bytes: a token secret needs at least 32 (e.g. openssl rand -hex 32)`,
    );
  return secret;
}
