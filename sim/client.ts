import { createValueCodec } from '../runtime/codec.ts';
import { ControlChannel } from '../runtime/control-channel.ts';
import { DroppedMessages } from '../runtime/dropped-messages.ts';
import { FtmError, RequestTimeoutError } from '../runtime/errors.ts';
import { Membership } from '../runtime/membership.ts';
import { meshClient, type MeshClient, type MeshClientDeps } from '../runtime/mesh-client.ts';
import { Ownership, type OwnerRecord } from '../runtime/ownership.ts';
import { Placement } from '../runtime/placement.ts';
import type { SessionClient } from '../runtime/session-client.ts';
import { processClock } from './clock.ts';
import type { Checker } from './invariants.ts';
import type { Mesh } from './mesh.ts';
import type { SimProcess } from './process.ts';
import type { Prng } from './prng.ts';
import { seededRandom } from './random.ts';
import { simTransport } from './transport.ts';
import type { World } from './world.ts';

/** How long a client waits for a reply before it sends the request again (same id). */
const requestTimeoutMs = 400;
/** Sends of one request (the first and the repeats). */
const maxSends = 6;

/** What became of the requests. */
export type ClientStats = { sent: number; released: number; refused: number; abandoned: number };

/**
 * The client of the simulation: one process that never crashes or hangs
 * (the network's loss, delays and reordering still reach it), with a mesh
 * client (`meshClient` on the sim ports) and a `SessionClient` per session.
 * Each request carries a unique id; on a timeout it is sent again with the
 * same id, a bounded number of times. Every reply goes to the checker with
 * the epoch the client released it in.
 */
export class SimClient {
  readonly proc: SimProcess;
  readonly stats: ClientStats = { sent: 0, released: 0, refused: 0, abandoned: 0 };
  private mesh: MeshClient | undefined;
  /** The epoch each released reply was committed in, as the session client reports it. */
  private readonly releasedIn = new Map<string, number>();
  private readonly rng: Prng;

  constructor(
    private readonly world: World,
    private readonly sim: Mesh,
    private readonly checker: Checker,
  ) {
    this.proc = world.process('client', '');
    this.rng = world.rng.fork();
  }

  /** Watches the records and builds the mesh client; resolves once the views hold the existing records. */
  async start(): Promise<void> {
    const { world, sim, proc } = this;
    const clock = processClock(world, proc);
    const random = seededRandom(this.rng.fork());
    const codec = createValueCodec();
    const onError = (err: FtmError) => world.trace.add(`client error: ${err.name}: ${err.message}`);
    const dropped = new DroppedMessages(clock, onError);
    const transport = simTransport(
      world,
      sim.network,
      sim.network.connect(proc, 'ftm-client-sim', dropped),
    );
    const ownership = new Ownership(sim.owners.port(proc), codec, (key, err) =>
      dropped.drop(`$KV.ftm-owners.${key}`, err),
    );
    await ownership.watch(
      () => undefined,
      (err) => onError(new FtmError(`ownership watch ended: ${err.message}`)),
    );
    const membership = new Membership(
      {
        kv: sim.hostsKv.port(proc),
        transport,
        codec,
        clock,
        random,
        dropped,
        onError,
        trace: () => undefined,
      },
      'client-sim',
      { advisories: false },
    );
    await membership.watchOnly();
    const deps: MeshClientDeps = {
      transport,
      codec,
      clock,
      random,
      ownership,
      membership,
      control: new ControlChannel(transport, codec),
      placement: new Placement(() => clock.now()),
      sessionListeners: new Set(),
      requestTimeoutMs: 2_000,
      onDropped: (subject: string, err: unknown) => dropped.drop(subject, err),
      onReleased: (id, at) => this.releasedIn.set(id, at.epoch),
    };
    this.mesh = meshClient(deps);
  }

  /** Opens a session through placement, as an operator's tool would. */
  place(actor: string, sid: string): Promise<OwnerRecord> {
    return this.mesh!.placeSession(actor, sid);
  }

  /**
   * Sends `add(id)` to `sid` until a reply is released, at most
   * {@link maxSends} times; resolves with the position, or undefined.
   */
  async add(
    sid: string,
    id: string,
    timeoutMs = requestTimeoutMs,
    sends = maxSends,
  ): Promise<number | undefined> {
    const client = this.mesh!.client(sid);
    this.stats.sent++;
    for (let attempt = 0; attempt < sends; attempt++) {
      try {
        const { value, epoch } = await this.send(client, id, timeoutMs);
        this.stats.released++;
        this.world.trace.add(`client: ${id} released at ${value} (epoch ${epoch})`);
        this.checker.onRelease({ sid, id, pos: value, epoch, at: this.world.now });
        return value;
      } catch (err) {
        if (err instanceof RequestTimeoutError) continue;
        this.stats.refused++;
        this.world.trace.add(
          `client: ${id} refused: ${(err as Error).name}: ${(err as Error).message}`,
        );
        return undefined;
      }
    }
    this.stats.abandoned++;
    this.world.trace.add(`client: ${id} abandoned after ${sends} sends`);
    return undefined;
  }

  /** One send; resolves with the reply and the epoch it was released in (the client says it). */
  private async send(
    client: SessionClient,
    id: string,
    timeoutMs: number,
  ): Promise<{ value: number; epoch: number }> {
    const value = (await client.request('add', id, { requestId: id, timeoutMs })) as number;
    const epoch = this.releasedIn.get(id)!;
    this.releasedIn.delete(id);
    return { value, epoch };
  }

  /** Sends requests to `sid` until `until`, a few in flight at once, ids `<sid>.<n>`. */
  async drive(sid: string, until: number): Promise<void> {
    const clock = processClock(this.world, this.proc);
    let n = 0;
    const inflight = new Set<Promise<unknown>>();
    while (this.world.now < until) {
      await new Promise<void>((r) => clock.setTimeout(r, this.rng.range(10, 40)));
      if (inflight.size >= 2) await Promise.race(inflight);
      if (this.world.now >= until) break;
      const p = this.add(sid, `${sid}.${++n}`).finally(() => inflight.delete(p));
      inflight.add(p);
    }
  }
}
