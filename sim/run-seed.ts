import { stateHash } from '../runtime/state-hash.ts';
import { SimClient } from './client.ts';
import { Faults, type FaultKind } from './faults.ts';
import { Checker, type Violation } from './invariants.ts';
import { Mesh } from './mesh.ts';
import { World } from './world.ts';

/** Options of {@link runSeed}. */
export type SeedOptions = {
  /** The log ignores expected last sequences: what fencing prevents becomes possible. */
  fenceOff?: boolean;
  /** Hangs and partitions may outlast the restore grace (beyond the protocol's assumption). */
  longPauses?: boolean;
  /** Keep checking after the first violation (default: stop there). */
  continueAfterViolation?: boolean;
  /** Called with the mesh when the seed ends (debugging). */
  onEnd?: (mesh: Mesh, world: World) => void;
};

/** What one seed did and found. */
export type SeedResult = {
  seed: number;
  steps: number;
  faults: Partial<Record<FaultKind, number>>;
  failovers: number;
  violations: Violation[];
  notes: string[];
  /** Every trace line, and their digest: the same seed gives the same fingerprint. */
  trace: string[];
  fingerprint: string;
  virtualMs: number;
  wallMs: number;
  releases: number;
};

/** Virtual time of the quiet period after the faults. */
const quiesceMs = 2_000;

/**
 * Runs one seed: 3–5 hosts and 2–3 sessions (a `ledger`, a `journal`,
 * maybe a `ticker`), a client sending requests, a seeded mix of faults for
 * 1–1.5 s of virtual time, then a quiet period, then the liveness checks:
 * every open session has one serving primary that answers, and its named
 * standby holds the same state. Invariants are checked after every step.
 */
export async function runSeed(seed: number, options: SeedOptions = {}): Promise<SeedResult> {
  const started = performance.now();
  const world = new World(seed);
  const mesh = new Mesh(world, { fenceOff: options.fenceOff ?? false });
  const checker = new Checker(world, mesh);
  checker.stopOnViolation = !options.continueAfterViolation;
  world.afterStep = () => checker.check();
  world.onStall = (detail) => checker.fail('no-zero-time-loop', detail);
  world.onThrow = (err) =>
    checker.fail(
      'no-escaping-exceptions',
      `an event threw: ${(err as Error)?.stack ?? String(err)}`,
    );
  const onRejection = (reason: unknown) =>
    checker.fail('no-unhandled-rejection', (reason as Error)?.stack ?? String(reason));
  process.on('unhandledRejection', onRejection);
  const client = new SimClient(world, mesh, checker);
  const faults = new Faults(world, mesh, options.longPauses ?? false);
  try {
    await scenario(world, mesh, client, faults, checker);
  } finally {
    process.off('unhandledRejection', onRejection);
  }
  options.onEnd?.(mesh, world);
  const failovers = mesh.started.reduce((n, h) => n + h.failovers().length, 0);
  return {
    seed,
    steps: world.steps,
    faults: faults.counts,
    failovers,
    violations: checker.violations,
    notes: checker.notes,
    trace: world.trace.lines,
    fingerprint: world.trace.fingerprint,
    virtualMs: world.now,
    wallMs: performance.now() - started,
    releases: checker.releases.length,
  };
}

async function scenario(
  world: World,
  mesh: Mesh,
  client: SimClient,
  faults: Faults,
  checker: Checker,
): Promise<void> {
  const rng = world.rng.fork();
  const ids = Array.from({ length: rng.int(3, 5) }, (_, i) => `h${i + 1}`);
  const up = await world.runUntilSettled(Promise.all(ids.map((id) => mesh.start(id))), 3_000);
  if (!up) return checker.fail('liveness', 'the hosts did not start');
  if (!(await world.runUntilSettled(client.start(), 1_000)))
    return checker.fail('liveness', 'the client did not start');
  const sessions: [string, string][] = [
    ['ledger', 'l-1'],
    ['journal', 'j-1'],
  ];
  if (rng.chance(0.5)) sessions.push(['ticker', 't-1']);
  for (const [actor, sid] of sessions) {
    const placed = client.place(actor, sid);
    if (!(await world.runUntilSettled(placed, 2_000)))
      return checker.fail('liveness', `${sid} was not placed`);
    await placed.catch((err: unknown) =>
      checker.fail('liveness', `${sid} not placed: ${String(err)}`),
    );
  }
  if (world.stopped) return;
  const start = world.now + 5;
  const windowMs = rng.range(1_000, 1_500);
  faults.plan(start, windowMs, rng.int(2, 6));
  const drivers = sessions.map(([, sid]) => client.drive(sid, start + windowMs));
  await world.run(start + windowMs);
  if (world.stopped) return;
  faults.endAll();
  await world.runUntilSettled(Promise.all(drivers), quiesceMs);
  await world.run(world.now + quiesceMs);
  if (world.stopped) return;
  await checkLiveness(
    world,
    mesh,
    client,
    checker,
    sessions.map(([, sid]) => sid),
  );
}

/**
 * After the quiet period: every open session has exactly one serving
 * primary (the record's), it answers a request within a bound, and the
 * standby the record names ends with the same state.
 */
async function checkLiveness(
  world: World,
  mesh: Mesh,
  client: SimClient,
  checker: Checker,
  sids: string[],
): Promise<void> {
  for (const sid of sids) {
    const answered = client.add(sid, `${sid}.final`, 500, 6);
    const pos = (await world.runUntilSettled(answered, 4_000)) ? await answered : undefined;
    if (pos === undefined) {
      const r = mesh.record(sid);
      const stuckAt = world.now;
      // How long until it serves again, if ever: a slow recovery and a stuck session are different bugs.
      const late = client.add(sid, `${sid}.late`, 1_000, 20);
      const recovered = (await world.runUntilSettled(late, 20_000)) ? await late : undefined;
      checker.fail(
        'liveness',
        `${sid}: no reply within the bound (record: epoch ${r?.epoch} primary ${r?.primary || '-'} standby ${r?.standby || '-'}); ` +
          (recovered === undefined
            ? 'still no reply 20 s later'
            : `it answered again ${((world.now - stuckAt) / 1000).toFixed(1)} s later`),
      );
      return;
    }
  }
  await world.run(world.now + 200);
  for (const sid of sids) {
    const r = mesh.record(sid);
    if (!r || r.closed) continue;
    const primary = mesh.hosts.get(r.primary);
    const info = primary?.proc.crashed ? undefined : primary?.host?.info(sid);
    if (!info || info.status !== 'primary' || info.epoch !== r.epoch) {
      checker.fail(
        'liveness',
        `${sid}: the record names ${r.primary} primary in epoch ${r.epoch}; it is ${info ? `${info.status} in epoch ${info.epoch}` : 'not serving'}`,
      );
      continue;
    }
    if (!r.standby) continue;
    const standby = mesh.hosts.get(r.standby);
    const sInfo = standby?.proc.crashed ? undefined : standby?.host?.info(sid);
    const same = () =>
      sInfo !== undefined &&
      stateHash(primary!.host!.state(sid)) === stateHash(standby!.host!.state(sid));
    for (let i = 0; i < 10 && !same(); i++) await world.run(world.now + 50);
    if (!same())
      checker.fail(
        'liveness',
        `${sid}: standby ${r.standby} ${sInfo ? `(${sInfo.status}, seq ${sInfo.seq}) differs from` : 'holds no copy of'} primary ${r.primary} (seq ${info.seq})`,
      );
  }
}
