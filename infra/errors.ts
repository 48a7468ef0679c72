/**
 * Errors thrown by infra/. Sorted by what the caller can do:
 * - {@link NatsServerNotFoundError}: give up and fix the machine (install nats-server or point
 *   NATS_SERVER_BIN at it); retrying cannot help.
 * - {@link NatsServerStartError}: the binary ran but the server did not become ready; the log
 *   tail in the message says why (bad config, port taken, a crash). Retrying may help when the
 *   cause was a port race.
 */

/** Install hint shared by every "not found" message, so they all name the same fixes. */
export const NATS_SERVER_INSTALL_HINT =
  'install it with apt-get install nats-server, or set NATS_SERVER_BIN, or pass --nats URL';

/** No usable nats-server binary: NATS_SERVER_BIN is wrong, or none is on PATH or in the usual places. */
export class NatsServerNotFoundError extends Error {
  /** Every path that was tried, in order. */
  readonly searched: readonly string[];

  constructor(detail: string, searched: readonly string[], options?: ErrorOptions) {
    super(`nats-server not found (${detail}): ${NATS_SERVER_INSTALL_HINT}`, options);
    this.name = 'NatsServerNotFoundError';
    this.searched = searched;
  }
}

/** The nats-server process failed to start or did not report healthy before the deadline. */
export class NatsServerStartError extends Error {
  /** Exit code if the process died during start-up; null if killed by a signal; undefined if it is still running. */
  readonly exitCode: number | null | undefined;
  /** The last lines of the server's log (empty when logging was off). */
  readonly logTail: string;

  constructor(
    reason: string,
    details: {
      exitCode?: number | null | undefined;
      logTail: string;
      logPath?: string | undefined;
    },
    options?: ErrorOptions,
  ) {
    const where = details.logPath ? ` (log: ${details.logPath})` : '';
    const tail = details.logTail
      ? `\n--- nats-server log tail${where} ---\n${details.logTail}`
      : where;
    super(`nats-server failed to start: ${reason}${tail}`, options);
    this.name = 'NatsServerStartError';
    this.exitCode = details.exitCode;
    this.logTail = details.logTail;
  }
}
