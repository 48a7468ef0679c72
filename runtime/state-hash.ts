import { createHash, type Hash } from 'node:crypto';

/**
 * A canonical SHA-256 of a state value: equal states hash equal whatever the
 * insertion order of their object keys, Map entries or Set members, and
 * whether a binary value is a Buffer or a plain Uint8Array. Used to compare
 * primary, standby and log replay.
 */
export function stateHash(value: unknown): string {
  const hash = createHash('sha256');
  feed(hash, value);
  return hash.digest('hex');
}

function canonicalKey(value: unknown): string {
  const h = createHash('sha256');
  feed(h, value);
  return h.digest('base64');
}

function feed(hash: Hash, value: unknown): void {
  if (value === null) return void hash.update('n;');
  switch (typeof value) {
    case 'undefined':
      return void hash.update('u;');
    case 'boolean':
      return void hash.update(value ? 't;' : 'f;');
    case 'number':
      return void hash.update(`d${Object.is(value, -0) ? '-0' : String(value)};`);
    case 'bigint':
      return void hash.update(`i${value.toString()};`);
    case 'string':
      hash.update(`s${value.length}:`);
      return void hash.update(value);
    case 'object':
      break;
    default:
      throw new TypeError(`stateHash: cannot hash a ${typeof value}`);
  }
  if (value instanceof Uint8Array) {
    hash.update(`b${value.length}:`);
    return void hash.update(value);
  }
  if (Array.isArray(value)) {
    hash.update(`a${value.length}[`);
    for (const item of value) feed(hash, item);
    return void hash.update(']');
  }
  if (value instanceof Map) {
    const entries = [...value.entries()].map(([k, v]) => [canonicalKey(k), v] as const);
    entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
    hash.update(`m${entries.length}{`);
    for (const [k, v] of entries) {
      hash.update(k);
      feed(hash, v);
    }
    return void hash.update('}');
  }
  if (value instanceof Set) {
    const keys = [...value].map(canonicalKey).sort();
    hash.update(`e${keys.length}{`);
    for (const k of keys) hash.update(k);
    return void hash.update('}');
  }
  if (value instanceof Date) return void hash.update(`t${value.getTime()};`);
  const keys = Object.keys(value).sort();
  hash.update(`o${keys.length}{`);
  for (const k of keys) {
    hash.update(`${k.length}:${k}`);
    feed(hash, (value as Record<string, unknown>)[k]);
  }
  hash.update('}');
}
