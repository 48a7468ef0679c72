import { connect, type ConnectionOptions, type NatsConnection } from '@nats-io/transport-node';

/**
 * Connection defaults for ftmesh, changed from the client's on measurement
 * (see NATS-FACTS): a 100 ms reconnect wait instead of 2 s (reconnect after a
 * server kill in ~5 ms instead of ~1.5 s), reconnect forever, ping every 2 s.
 */
export const natsDefaults = {
  reconnectTimeWait: 100,
  maxReconnectAttempts: -1,
  pingInterval: 2_000,
  maxPingOut: 2,
} as const satisfies Partial<ConnectionOptions>;

/**
 * Connects to NATS with ftmesh's defaults. `servers` is one URL, a
 * comma-separated list, or an array.
 */
export async function connectNats(
  servers: string | string[],
  options: Partial<ConnectionOptions> = {},
): Promise<NatsConnection> {
  const list = Array.isArray(servers) ? servers : servers.split(',').map((s) => s.trim());
  return connect({ ...natsDefaults, ...options, servers: list });
}
