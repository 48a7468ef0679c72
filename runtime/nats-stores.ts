import { headers, type NatsConnection } from '@nats-io/transport-node';
import {
  jetstream,
  jetstreamManager,
  type JetStreamClient,
  type JetStreamManager,
} from '@nats-io/jetstream';
import { Kvm, type KV, type KvEntry as NatsKvEntry } from '@nats-io/kv';
import { FtmError, KvConflictError, LogConflictError } from './errors.ts';
import type { KvEntry, KvPort, LogMessage, LogPort } from './ports.ts';
import { storeNames, subjects } from './subjects.ts';
import { transportError } from './nats-transport.ts';

/** JetStream's API error code for a compare-and-swap that found another last sequence. */
const wrongLastSequence = 10071;

function isWrongLastSequence(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown; api_error?: { err_code?: unknown } };
  return (
    e?.code === wrongLastSequence ||
    e?.api_error?.err_code === wrongLastSequence ||
    /wrong last sequence/i.test(String(e?.message))
  );
}

/** The header naming the epoch of the primary that appended a log message. */
const epochHeader = 'Ftm-Epoch';

/** JetStream operations answer within this long or are retried by the caller (NATS-FACTS). */
const opTimeoutMs = 2_000;

/**
 * The {@link KvPort} on a JetStream KV bucket (created if missing: at
 * start-up only, an R3 bucket takes 0.3–0.6 s to create).
 */
export async function natsKv(nc: NatsConnection, bucket: string, replicas = 1): Promise<KvPort> {
  const kv: KV = await new Kvm(nc).create(bucket, { replicas, history: 1 });
  const entry = (e: NatsKvEntry): KvEntry => ({
    key: e.key,
    value: e.operation === 'PUT' ? e.value : undefined,
    revision: e.revision,
  });
  return {
    async get(key) {
      const e = await kv.get(key);
      return e ? entry(e) : undefined;
    },
    async create(key, value) {
      try {
        return await kv.create(key, value);
      } catch (err) {
        if (isWrongLastSequence(err) || /exists/i.test(String((err as Error).message)))
          throw new KvConflictError(`${bucket}/${key} exists`, { cause: err });
        throw storeError(`create ${bucket}/${key}`, err);
      }
    },
    async update(key, value, revision) {
      try {
        return await kv.update(key, value, revision, opTimeoutMs);
      } catch (err) {
        if (isWrongLastSequence(err))
          throw new KvConflictError(`${bucket}/${key} is not at revision ${revision}`, {
            cause: err,
          });
        throw storeError(`update ${bucket}/${key}`, err);
      }
    },
    async purge(key) {
      await kv.purge(key);
    },
    async watch(onEntry, onError) {
      const status = await kv.status();
      const iter = await kv.watch({ key: '>' });
      let ready = (): void => undefined;
      const initial = new Promise<void>((r) => (ready = r));
      // An empty bucket delivers nothing before its first change.
      if (status.values === 0) ready();
      void (async () => {
        try {
          for await (const e of iter) {
            onEntry(entry(e));
            // The last of the entries that existed when the watch started.
            if (e.delta === 0 || e.isUpdate) ready();
          }
        } catch (err) {
          onError(err as Error);
        }
      })();
      // Entries purged between the status and the watch would leave us waiting: bounded.
      const bound = setTimeout(ready, 5_000);
      await initial;
      clearTimeout(bound);
      return { stop: () => iter.stop() };
    },
  };
}

/**
 * The {@link LogPort} on the JetStream stream `FTM_LOG` (created if missing),
 * one subject per session.
 */
export async function natsLog(nc: NatsConnection, replicas = 1): Promise<LogPort> {
  const jsm: JetStreamManager = await jetstreamManager(nc);
  try {
    await jsm.streams.info(storeNames.logStream);
  } catch {
    await jsm.streams.add({
      name: storeNames.logStream,
      subjects: [subjects.logAll],
      num_replicas: replicas,
    });
  }
  const js: JetStreamClient = jetstream(nc);
  const last = async (sid: string): Promise<{ seq: number; epoch: number }> => {
    // null when the subject has no message; a failure throws.
    const m = await jsm.streams
      .getMessage(storeNames.logStream, { last_by_subj: subjects.log(sid) })
      .catch((err: unknown) => {
        throw storeError(`the last message of the log of ${sid}`, err);
      });
    return { seq: m?.seq ?? 0, epoch: Number(m?.header?.get(epochHeader) ?? 0) || 0 };
  };
  return {
    async append(sid, data, { msgId, expectLast, epoch }) {
      try {
        const h = headers();
        h.set(epochHeader, String(epoch));
        const ack = await js.publish(subjects.log(sid), data, {
          msgID: msgId,
          expect: { lastSubjectSequence: expectLast },
          headers: h,
          timeout: opTimeoutMs,
        });
        return ack.seq;
      } catch (err) {
        if (isWrongLastSequence(err))
          throw new LogConflictError(
            `log of ${sid}: another writer appended after stream seq ${expectLast}`,
            { cause: err },
          );
        throw storeError(`append to the log of ${sid}`, err);
      }
    },
    last,
    async read(sid) {
      const subject = subjects.log(sid);
      const lastSeq = (await last(sid)).seq;
      if (!lastSeq) return [];
      const consumer = await js.consumers.get(storeNames.logStream, { filter_subjects: subject });
      const out: LogMessage[] = [];
      let seen = 0;
      while (seen < lastSeq) {
        const batch = await consumer.fetch({ max_messages: 256, expires: 2_000 });
        let got = 0;
        for await (const m of batch) {
          got++;
          seen = m.seq;
          out.push({
            seq: m.seq,
            data: m.data.slice(),
            epoch: Number(m.headers?.get(epochHeader) ?? 0) || 0,
          });
          if (seen >= lastSeq) break;
        }
        if (got === 0)
          throw new FtmError(
            `log of ${sid}: read stopped at stream seq ${seen} of ${lastSeq}; JetStream may be electing a leader, retry`,
          );
      }
      return out;
    },
    async purgeBefore(sid, seq) {
      // JetStream takes a filtered purge "up to seq 1" as a purge of everything: nothing is below 1.
      if (seq <= 1) return;
      await jsm.streams.purge(storeNames.logStream, { filter: subjects.log(sid), seq });
    },
    async purgeAll(sid) {
      await jsm.streams.purge(storeNames.logStream, { filter: subjects.log(sid) });
    },
  };
}

/** A store operation's failure: a timeout stays retryable. */
function storeError(what: string, err: unknown): FtmError {
  const e = transportError(what, err);
  // Retryable stays retryable; a closed connection stays a ClosedError (nothing to retry).
  return e.retryable || e.code === 'closed'
    ? e
    : new FtmError(`${what}: ${(err as Error)?.message ?? err}`, { cause: err });
}
