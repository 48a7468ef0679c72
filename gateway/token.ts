import { createHmac, timingSafeEqual } from 'node:crypto';
import { InvalidOptionError, TokenError } from './errors.ts';
import { actorNamePattern, clientIdPattern, sessionIdPattern } from './protocol.ts';

/**
 * Signed tokens: JWT (RFC 7519) in compact form, HS256 (HMAC-SHA256) only,
 * made and checked with node:crypto. The claims name the client, its session
 * and an expiry; an operator token may leave the session out.
 */

/** Who a token speaks for. */
export type Role = 'client' | 'operator';

/** The claims the gateway reads. */
export interface TokenClaims {
  /** The client id: request ids are namespaced with it, datagrams carry it as the sender. */
  sub: string;
  /** The one session this token reaches (required for clients, optional for operators). */
  sid?: string;
  role: Role;
  /**
   * Join-or-create: when the token's session does not exist, the gateway
   * opens it with this actor (placed with a standby) instead of closing 4404.
   */
  actor?: string;
  /** Expiry, seconds since the epoch. */
  exp: number;
  /** Issued at, seconds since the epoch. */
  iat?: number;
  /** Not before, seconds since the epoch. */
  nbf?: number;
}

/** A key: the shared HMAC secret (at least 32 bytes). */
export type TokenSecret = string | Uint8Array;

/** Options of {@link mintToken}. */
export interface MintOptions {
  secret: TokenSecret;
  sub: string;
  sid?: string;
  /** Default `client`. */
  role?: Role;
  /** Lets the gateway open the session with this actor when it does not exist (join-or-create). */
  actor?: string;
  /** Lifetime in seconds from now (default 3,600); ignored when `exp` is given. */
  ttlSeconds?: number;
  /** Expiry, seconds since the epoch. */
  exp?: number;
  /** "Now" in ms (default Date.now()): for tests. */
  now?: number;
}

const MIN_SECRET_BYTES = 32;

function keyBytes(secret: TokenSecret): Buffer {
  const key = typeof secret === 'string' ? Buffer.from(secret, 'utf8') : Buffer.from(secret);
  if (key.length < MIN_SECRET_BYTES)
    throw new InvalidOptionError(
      `secret: ${key.length} bytes is too short for HS256; use at least ${MIN_SECRET_BYTES} random bytes`,
    );
  return key;
}

const b64 = (data: Buffer | string) => Buffer.from(data).toString('base64url');
const header = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));

function sign(key: Buffer, signingInput: string): Buffer {
  return createHmac('sha256', key).update(signingInput).digest();
}

function assertClaims(c: Partial<TokenClaims>, fail: (why: string) => never): TokenClaims {
  if (typeof c.sub !== 'string' || !clientIdPattern.test(c.sub))
    fail('sub must be 1-64 of A-Z a-z 0-9 _ -');
  if (c.role !== 'client' && c.role !== 'operator') fail('role must be client or operator');
  if (c.sid !== undefined && (typeof c.sid !== 'string' || !sessionIdPattern.test(c.sid)))
    fail('sid must be 1-128 of A-Z a-z 0-9 _ -');
  if (c.role === 'client' && c.sid === undefined) fail('a client token must name its sid');
  if (c.actor !== undefined && (typeof c.actor !== 'string' || !actorNamePattern.test(c.actor)))
    fail('actor must be 1-64 of A-Z a-z 0-9 _ -');
  if (c.actor !== undefined && c.sid === undefined) fail('a token with an actor must name its sid');
  if (typeof c.exp !== 'number' || !Number.isFinite(c.exp)) fail('exp must be a number');
  for (const k of ['iat', 'nbf'] as const)
    if (c[k] !== undefined && (typeof c[k] !== 'number' || !Number.isFinite(c[k])))
      fail(`${k} must be a number`);
  return c as TokenClaims;
}

/**
 * Mints a token.
 * @throws InvalidOptionError naming the bad option (short secret, bad sub or sid)
 * @example
 * const token = mintToken({ secret, sub: 'alice', sid: 'room-1', ttlSeconds: 600 });
 */
export function mintToken(options: MintOptions): string {
  const key = keyBytes(options.secret);
  const now = Math.floor((options.now ?? Date.now()) / 1000);
  const claims: TokenClaims = {
    sub: options.sub,
    ...(options.sid === undefined ? {} : { sid: options.sid }),
    role: options.role ?? 'client',
    ...(options.actor === undefined ? {} : { actor: options.actor }),
    iat: now,
    exp: options.exp ?? now + (options.ttlSeconds ?? 3_600),
  };
  assertClaims(claims, (why) => {
    throw new InvalidOptionError(`mintToken: ${why}`);
  });
  const body = `${header}.${b64(JSON.stringify(claims))}`;
  return `${body}.${sign(key, body).toString('base64url')}`;
}

/**
 * Checks a token against the trusted secrets (several during a key rotation)
 * and the clock; resolves nothing, returns the claims.
 * @throws TokenError with `problem` malformed, signature, claims, expired or not_yet_valid
 */
export function verifyToken(
  token: unknown,
  secrets: readonly TokenSecret[],
  nowMs: number = Date.now(),
): TokenClaims {
  const fail = (problem: 'malformed' | 'claims', why: string): never => {
    throw new TokenError(
      problem,
      `token ${problem === 'malformed' ? 'malformed' : 'claims'}: ${why}`,
    );
  };
  if (typeof token !== 'string' || token.length > 4096) fail('malformed', 'not a short string');
  const parts = (token as string).split('.');
  if (parts.length !== 3) fail('malformed', 'not three dot-separated parts');
  const [h, p, s] = parts as [string, string, string];
  let head: { alg?: unknown };
  let claims: Partial<TokenClaims>;
  try {
    head = JSON.parse(Buffer.from(h, 'base64url').toString('utf8')) as { alg?: unknown };
    claims = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as Partial<TokenClaims>;
  } catch {
    return fail('malformed', 'header or claims are not base64url JSON');
  }
  if (typeof head !== 'object' || head === null || typeof claims !== 'object' || claims === null)
    fail('malformed', 'header and claims must be JSON objects');
  // Only HS256: "none" and algorithm confusion are refused before any key is used.
  if (head.alg !== 'HS256')
    throw new TokenError('signature', `token alg ${JSON.stringify(head.alg)}: only HS256`);
  const given = Buffer.from(s, 'base64url');
  const input = `${h}.${p}`;
  const trusted = secrets.some((secret) => {
    const expected = sign(keyBytes(secret), input);
    return expected.length === given.length && timingSafeEqual(expected, given);
  });
  if (!trusted) throw new TokenError('signature', 'token signature does not match a trusted key');
  const c = assertClaims(claims, (why) => fail('claims', why));
  const now = nowMs / 1000;
  if (c.exp <= now) throw new TokenError('expired', `token expired at ${c.exp} (now ${now | 0})`);
  if (c.nbf !== undefined && c.nbf > now)
    throw new TokenError('not_yet_valid', `token not valid before ${c.nbf}`);
  return c;
}
