/**
 * The child processes of the gateway benchmark (bench/gateway.ts), one role each:
 *
 *   node --import tsx bench/gateway-roles.ts host --nats URL --id ID
 *   node --import tsx bench/gateway-roles.ts gateway --nats URL --id ID --secret S
 *   node --import tsx bench/gateway-roles.ts echo --nats URL
 *
 * Hosts and the gateway know the example actors plus one `inc` actor per
 * consistency mode (the examples have no `async` one). Each prints one
 * `ready ...` line, then runs until SIGTERM or SIGKILL.
 */
import { parseArgs } from 'node:util';
import { createGateway } from '../gateway/index.ts';
import { setupTelemetry } from '../cli/telemetry.ts';
import { connectNats, createHost } from '../runtime/index.ts';
import { ECHO_SUBJECT, allBenchActors } from './gateway-actors.ts';

async function main(): Promise<void> {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: { nats: { type: 'string' }, id: { type: 'string' }, secret: { type: 'string' } },
  });
  const role = positionals[0];
  if (!values.nats) throw new Error('pass --nats URL');
  // OTEL_* from the benchmark (its --trace-overhead runs); off without an endpoint, as in the CLI.
  const telemetry = await setupTelemetry({
    name: `ftmesh-bench-${role ?? 'role'}`,
    instance: values.id ?? String(process.pid),
  });
  const stopped = new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
    // The benchmark holds our stdin: when it dies, so do we (no orphans).
    process.stdin.once('end', resolve);
    process.stdin.resume();
  });
  if (role === 'host') {
    const host = await createHost({
      nats: values.nats,
      actors: allBenchActors,
      ...(values.id ? { hostId: values.id } : {}),
      onError: () => undefined,
    });
    console.log(`ready host ${host.id}`);
    await stopped;
    await host.close();
    await telemetry.shutdown();
  } else if (role === 'gateway') {
    if (!values.secret) throw new Error('pass --secret S');
    const gw = await createGateway({
      nats: values.nats,
      actors: allBenchActors,
      auth: { secret: values.secret },
      ...(values.id ? { id: values.id } : {}),
      // The benchmark measures the path, not the rate limit.
      limits: { requestsPerSecond: 1_000_000, requestBurst: 100_000, maxInFlight: 4_096 },
      onError: () => undefined,
    });
    console.log(`ready gateway ${gw.id} ${gw.url} ${gw.udpPort}`);
    await stopped;
    await gw.close();
    await telemetry.shutdown();
  } else if (role === 'echo') {
    const nc = await connectNats(values.nats);
    nc.subscribe(ECHO_SUBJECT, { callback: (_e, m) => void m.respond(m.data) });
    await nc.flush();
    console.log('ready echo');
    await stopped;
    await nc.close();
  } else {
    throw new Error(`role ${String(role)}: use host, gateway or echo`);
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exitCode = 1;
});
