import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, extname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { isActorDefinition, type ActorDefinition } from '../runtime/index.ts';
import { UsageError, firstLine } from './errors.ts';

/**
 * Loads the actors a host or gateway runs from the user's modules: every
 * export (default or named, or an array of them) for which
 * `isActorDefinition` is true. TypeScript modules load through tsx when this
 * process does not already run TypeScript.
 */

/** What {@link loadActors} found. */
export interface LoadedActors {
  readonly actors: readonly ActorDefinition<any>[];
  /** Absolute paths of the modules given; empty for the example actors. */
  readonly files: readonly string[];
}

const scriptExtensions = ['.js', '.mjs', '.cjs', '.ts', '.mts', '.cts'] as const;
const typeScriptExtensions = ['.ts', '.mts', '.cts'];

/** True for a file name a module could load from (what `dev` watches). */
export const isScriptFile = (name: string): boolean =>
  (scriptExtensions as readonly string[]).includes(extname(name));

/** This process already imports TypeScript: run from source under tsx, or a Node that strips types. */
function runsTypeScript(): boolean {
  const features = process.features as { typescript?: unknown };
  return import.meta.url.endsWith('.ts') || Boolean(features.typescript);
}

/**
 * Registers tsx's loader: from where ftmesh is installed, else from the
 * working directory (a project with tsx and a global ftmesh).
 * @throws UsageError naming the module, when there is no tsx
 */
async function registerTsx(module: string): Promise<void> {
  type TsxApi = { register: () => unknown };
  let api: TsxApi | undefined;
  try {
    api = await import('tsx/esm/api');
  } catch {
    api = await import(await tsxFromWorkingDirectory()).then(
      (m) => m as TsxApi,
      () => undefined,
    );
  }
  try {
    if (!api) throw new Error('no tsx');
    api.register();
  } catch {
    throw new UsageError(`${module} is TypeScript: npm i -D tsx, or compile it to JavaScript`);
  }
}

/** The URL of tsx's ESM API as installed in the working directory's project ('' when none). */
async function tsxFromWorkingDirectory(): Promise<string> {
  try {
    const require = createRequire(join(process.cwd(), 'package.json'));
    const manifest = require.resolve('tsx/package.json');
    const pkg = JSON.parse(await readFile(manifest, 'utf8')) as {
      exports?: Record<string, { import?: string | { default?: string } }>;
    };
    const entry = pkg.exports?.['./esm/api']?.import;
    const path = typeof entry === 'string' ? entry : entry?.default;
    return path ? pathToFileURL(join(dirname(manifest), path)).href : '';
  } catch {
    return '';
  }
}

/** Every actor among a module's exports, in export order, each once. */
function actorsOf(exports: Record<string, unknown>): ActorDefinition<any>[] {
  const found: ActorDefinition<any>[] = [];
  const add = (value: unknown) => {
    if (isActorDefinition(value) && !found.includes(value)) found.push(value);
  };
  for (const value of Object.values(exports)) {
    if (Array.isArray(value)) value.forEach(add);
    else add(value);
  }
  return found;
}

/**
 * What went wrong loading a module, in one line: the first line of the
 * message, and the next one when the first only announces it (esbuild's
 * "Transform failed with 1 error:" before the file, line and error).
 */
function loadError(err: unknown): string {
  const lines = (err instanceof Error ? err.message : String(err))
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  const [first, second] = lines;
  if (first === undefined) return firstLine(err);
  return first.endsWith(':') && second !== undefined ? `${first} ${second}` : first;
}

/** Imports one module given on the command line and returns its actors. */
async function loadModule(
  module: string,
  loader: { tsx: boolean },
): Promise<{ file: string; actors: ActorDefinition<any>[] }> {
  const file = resolve(module);
  const isFile = await stat(file).then(
    (s) => s.isFile(),
    () => undefined,
  );
  if (isFile === undefined) throw new UsageError(`--actors ${module}: no such file`);
  if (!isFile) throw new UsageError(`--actors ${module} is not a file: name the module itself`);
  const ext = extname(file);
  if (!(scriptExtensions as readonly string[]).includes(ext))
    throw new UsageError(
      `--actors ${module} is not a JavaScript or TypeScript module: use a .js, .mjs, .ts or .mts file`,
    );
  if (typeScriptExtensions.includes(ext) && !runsTypeScript() && !loader.tsx) {
    await registerTsx(module);
    loader.tsx = true;
  }
  let exports: Record<string, unknown>;
  try {
    exports = (await import(pathToFileURL(file).href)) as Record<string, unknown>;
  } catch (err) {
    const why = loadError(err);
    // A .ts file in a CommonJS package is compiled to CommonJS, which cannot import ftmesh (ESM).
    const hint = /require\(\) ES Module|ERR_REQUIRE_ESM|require\(esm\)/i.test(why)
      ? ' (make the module ESM: "type": "module" in its package.json, or name it .mts)'
      : '';
    throw new UsageError(`--actors ${module} does not load: ${why}${hint}`);
  }
  const actors = actorsOf(exports);
  if (!actors.length)
    throw new UsageError(
      `--actors ${module} exports no actor: export what defineActor returns (default or named, or an array of them)`,
    );
  return { file, actors };
}

/**
 * Loads the actors of `modules` (the example actors when there are none).
 * @throws UsageError naming the module and the fix: missing, not a module,
 * TypeScript without tsx, does not load, exports no actor, two actors of one name
 */
export async function loadActors(modules: readonly string[]): Promise<LoadedActors> {
  if (!modules.length) {
    const { exampleActors } = await import('../actors/index.ts');
    return { actors: [...exampleActors], files: [] };
  }
  const actors: ActorDefinition<any>[] = [];
  const files: string[] = [];
  const from = new Map<string, string>();
  const loader = { tsx: false };
  for (const module of modules) {
    const loaded = await loadModule(module, loader);
    files.push(loaded.file);
    for (const actor of loaded.actors) {
      if (actors.includes(actor)) continue;
      const other = from.get(actor.name);
      if (other !== undefined)
        throw new UsageError(
          `two actors are named ${actor.name} (in ${other} and ${module}): give each a name of its own`,
        );
      from.set(actor.name, module);
      actors.push(actor);
    }
  }
  return { actors, files };
}

/**
 * A short hash of what a gateway checks of each actor (names, handlers, the
 * handlers clients may call, message checks, views): `dev` restarts its
 * gateway after a reload only when this changes.
 */
export function actorSurface(actors: readonly ActorDefinition<any>[]): string {
  const hash = createHash('sha256');
  for (const a of [...actors].sort((x, y) => x.name.localeCompare(y.name))) {
    hash.update(`${a.name}\n${a.consistency}\n`);
    hash.update(`${Object.keys(a.handlers).sort().join(',')}\n`);
    hash.update(`${[...(a.clientHandlers ?? [])].sort().join(',')}\n`);
    for (const [type, check] of Object.entries(a.messages ?? {}).sort())
      hash.update(`${type}=${String(check)}\n`);
    hash.update(`${String(a.view ?? '')}\n${a.datagram ? 'datagram' : ''}\n`);
  }
  return hash.digest('hex').slice(0, 12);
}
