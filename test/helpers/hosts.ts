import { createHost, type Host, type HostOptions } from '../../runtime/index.ts';
import { exampleActors } from '../../actors/index.ts';
import type { collectErrors } from './errors.ts';
import { purgeMesh } from './nats.ts';

/**
 * Hosts in this process for a suite, each test with its own: after each
 * test they close and the mesh's records are purged, so the last test's
 * hosts never take this one's sessions. Register it after the suite's
 * `reported.assertNone(...)`: what hosts report while they close (their
 * sessions fail over to one another as they go) is not the test's, and is
 * cleared once the test's own errors were checked.
 * @example
 * const host = useHosts(() => nats.url, reported);
 * const a = await host('a');
 */
export function useHosts(
  natsUrl: () => string,
  reported: ReturnType<typeof collectErrors>,
  defaults: Partial<HostOptions> = {},
): (hostId: string, extra?: Partial<HostOptions>) => Promise<Host> {
  const hosts: Host[] = [];
  afterEach(async () => {
    for (const h of hosts.splice(0)) await h.close();
    await purgeMesh(natsUrl());
    reported.errors.length = 0;
  });
  return async (hostId, extra = {}) => {
    const h = await createHost({
      nats: natsUrl(),
      actors: exampleActors,
      hostId,
      onError: reported.onError,
      // Several hosts share this process's cores: detection is not under test
      // here, a wide silence keeps false detections out of it.
      heartbeatTimeoutMs: 500,
      ...(process.env.FTM_TRACE ? { trace: (l: string) => console.log(`[${hostId}] ${l}`) } : {}),
      ...defaults,
      ...extra,
    });
    hosts.push(h);
    return h;
  };
}
