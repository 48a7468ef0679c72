/**
 * How a long-running command (host, gateway, dev) learns it should stop:
 * SIGTERM or SIGINT asks for a graceful stop, a second one for an immediate
 * one. A child started by `dev` or `demo` (env {@link PARENT_WATCH_ENV}) also
 * stops at once when its parent is gone (its stdin pipe closes), so a parent
 * killed with SIGKILL leaves no host or gateway behind.
 */

/** Set by a parent that spawns ftmesh children with a stdin pipe (see child-process.ts). */
export const PARENT_WATCH_ENV = 'FTMESH_EXIT_WITH_PARENT';

export type StopReason = 'SIGTERM' | 'SIGINT' | 'parent gone';

export interface StopSignal {
  /** The first stop request: stop gracefully. */
  readonly requested: Promise<StopReason>;
  /** A second request (or the parent gone): stop now. */
  readonly urgent: Promise<StopReason>;
  /** Whether {@link StopSignal.urgent} has come already (read before starting a drain). */
  readonly isUrgent: boolean;
  /** Removes the handlers. */
  dispose(): void;
}

/** Listens for stop requests; call once per process. */
export function listenForStop(): StopSignal {
  let count = 0;
  let resolveFirst: (r: StopReason) => void = () => undefined;
  let resolveSecond: (r: StopReason) => void = () => undefined;
  const requested = new Promise<StopReason>((r) => (resolveFirst = r));
  const urgent = new Promise<StopReason>((r) => (resolveSecond = r));
  let isUrgent = false;
  const on = (reason: StopReason) => {
    count++;
    if (reason === 'parent gone' || count >= 2) {
      isUrgent = true;
      resolveSecond(reason);
    }
    resolveFirst(reason);
  };
  const onTerm = () => on('SIGTERM');
  const onInt = () => on('SIGINT');
  const onParentGone = () => on('parent gone');
  process.on('SIGTERM', onTerm);
  process.on('SIGINT', onInt);
  const watchParent = process.env[PARENT_WATCH_ENV] === '1';
  if (watchParent) {
    process.stdin.on('end', onParentGone);
    process.stdin.on('error', onParentGone);
    process.stdin.resume();
  }
  return {
    requested,
    urgent,
    get isUrgent() {
      return isUrgent;
    },
    dispose() {
      process.off('SIGTERM', onTerm);
      process.off('SIGINT', onInt);
      if (watchParent) {
        process.stdin.off('end', onParentGone);
        process.stdin.off('error', onParentGone);
        process.stdin.pause();
        process.stdin.unref?.();
      }
    },
  };
}
