/** The actors of the gateway benchmark's processes (bench/gateway.ts, bench/gateway-roles.ts). */
import { exampleActors } from '../actors/index.ts';
import { defineActor } from '../runtime/index.ts';

export const ECHO_SUBJECT = 'bench.gateway.echo';

/** `inc` in each consistency mode: a state change per request, a small reply. */
export const benchActors = (['async', 'standby', 'durable'] as const).map((consistency) =>
  defineActor({
    name: `gw-bench-${consistency}`,
    consistency,
    initialState: { n: 0, last: '' },
    messages: { inc: (p) => typeof p === 'string' || 'a string tag' },
    clientHandlers: ['inc'],
    handlers: {
      inc(s, tag: string) {
        s.n += 1;
        s.last = tag;
        return s.n;
      },
    },
  }),
);

export const allBenchActors = [...benchActors, ...exampleActors];
