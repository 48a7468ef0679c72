/**
 * Errors of the `ftmesh` command, sorted by what the user can do, each with
 * the exit code it ends the process with:
 *
 * - {@link UsageError} (2): the command line is wrong (an unknown option, a
 *   bad value, an `--actors` module that cannot be used); fix it and run again.
 * - {@link StartupError} (3): the environment is not ready (NATS unreachable
 *   or without JetStream, a port in use, no nats-server binary); fix the
 *   machine, not the command.
 * - {@link FailureError} (1): the command ran and failed (a session that is
 *   not open, a broken guarantee in `demo failover`).
 *
 * Every message is one line that says what to do; `ftmesh.ts` prints it as
 * `ftmesh: <message>` and nothing else (never a stack trace).
 */

/** The exit codes of `ftmesh`, as documented in cli/README.md and `ftmesh --help`. */
export const ExitCode = {
  ok: 0,
  failure: 1,
  usage: 2,
  startup: 3,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** An error that ends the command with a one-line message and a documented exit code. */
export class CliError extends Error {
  override name = 'CliError';
  readonly exitCode: ExitCodeValue = ExitCode.failure;
}

/** The command line is wrong; the message names the option and the fix. */
export class UsageError extends CliError {
  override name = 'UsageError';
  override readonly exitCode = ExitCode.usage;
}

/** NATS, a port or a binary the command needs is not there or not usable. */
export class StartupError extends CliError {
  override name = 'StartupError';
  override readonly exitCode = ExitCode.startup;
}

/** The command ran and failed, or a guarantee it checks did not hold. */
export class FailureError extends CliError {
  override name = 'FailureError';
  override readonly exitCode = ExitCode.failure;
}

/** The first line of an error's message (multi-line messages carry log tails). */
export function firstLine(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  return (text.split('\n')[0] ?? '').trim() || (err instanceof Error ? err.name : 'error');
}
