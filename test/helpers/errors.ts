import { AssertionError } from 'node:assert';

/** What a test expects the runtime to report through `onError`, and why. */
export type ExpectedError = { pattern: RegExp; why: string };

/**
 * Collects the errors a host or gateway reports through `onError`, so that a
 * test fails on one it did not expect: an error handler that ignores them would hide exactly
 * the bugs a fault test is for. A test names what it expects (a fenced
 * primary's notice after a failover, a handler's error it provoked).
 * @example
 * const reported = collectErrors();
 * const host = await createHost({ ..., onError: reported.onError });
 * afterEach(() => reported.assertNone([{ pattern: /stopped serving/, why: 'the old primary after the failover' }]));
 */
export function collectErrors(): {
  errors: Error[];
  onError: (err: Error) => void;
  /** Throws when an error matches none of `expected`; clears the list either way. */
  assertNone(expected?: readonly ExpectedError[]): void;
} {
  const errors: Error[] = [];
  return {
    errors,
    onError: (err) => errors.push(err),
    assertNone(expected = []) {
      const describe = (e: Error) =>
        `${e.name}: ${e.message}${e.cause instanceof Error ? ` (${e.cause.name}: ${e.cause.message})` : ''}`;
      const unexpected = errors.filter((e) => !expected.some((x) => x.pattern.test(describe(e))));
      errors.length = 0;
      if (unexpected.length)
        throw new AssertionError({
          message: `the runtime reported ${unexpected.length} unexpected error(s):\n  ${unexpected
            .slice(0, 20)
            .map(describe)
            .join('\n  ')}`,
        });
    },
  };
}
