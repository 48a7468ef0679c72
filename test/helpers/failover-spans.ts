import { SpanName } from '../../runtime/telemetry.ts';

/** The children every failover trace has under its root, by name (sorted). */
export const failoverChildSpans: readonly string[] = [
  SpanName.detect,
  SpanName.promote,
  SpanName.logHandover,
  SpanName.replay,
  SpanName.firstReply,
  SpanName.reprotect,
  SpanName.standbySync,
].sort();
