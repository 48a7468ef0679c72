import type { NatsConnection } from '@nats-io/transport-node';
import { createValueCodec } from '../../runtime/codec.ts';
import { natsKv } from '../../runtime/nats-stores.ts';
import { Ownership } from '../../runtime/ownership.ts';
import { applyHost, parseHostRecord } from '../../runtime/membership-record.ts';
import { storeNames } from '../../runtime/subjects.ts';

/**
 * The ownership records as a test changes them by hand: what another host
 * would write (a promotion elsewhere, a restore), through the same pure
 * changes and compare-and-swap the runtime uses.
 */
export async function openOwnership(nc: NatsConnection): Promise<Ownership> {
  return new Ownership(await natsKv(nc, storeNames.owners), createValueCodec(), (key, err) => {
    throw new Error(`a malformed ownership record for ${key}: ${String(err)}`);
  });
}

/**
 * Writes a verdict of death for `hostId` (its current incarnation), as a
 * host whose detector fired falsely would: the way to test a false detection.
 */
export async function declareDead(nc: NatsConnection, hostId: string, by = 'test'): Promise<void> {
  const codec = createValueCodec();
  const kv = await natsKv(nc, storeNames.hosts);
  const e = await kv.get(hostId);
  if (!e?.value) throw new Error(`host ${hostId} has no membership record`);
  const record = parseHostRecord(codec.decode(e.value));
  const next = applyHost(record, {
    type: 'declare-dead',
    incarnation: record.incarnation,
    cause: 'heartbeat',
    by,
  });
  if (next.refused) throw new Error(`cannot declare ${hostId} dead: ${next.reason}`);
  await kv.update(hostId, codec.encode(next.record), e.revision);
}
