import type { DroppedMessages } from '../runtime/dropped-messages.ts';
import type { SimProcess } from './process.ts';
import type { Prng } from './prng.ts';
import { subjectMatches } from './subject-match.ts';
import type { World } from './world.ts';

/** A message as the simulated server routes it. */
export type SimMessage = {
  readonly subject: string;
  readonly data: Uint8Array;
  readonly replyTo: string | undefined;
  readonly from: Connection;
  readonly publishedAt: number;
  /** The publisher's incarnation when it published ('' for the client and the server). */
  readonly incarnation: string;
  /** Injected by the garbage fault: exceptions it causes are expected. */
  readonly garbage: boolean;
  /** The server's "no responders" status for a request nobody subscribes to. */
  readonly noResponders?: boolean;
};

/** One subscription; its callback runs on its connection's process. */
export type Subscription = {
  readonly subject: string;
  readonly conn: Connection;
  readonly onMessage: (m: SimMessage) => void;
  /** When the server has it (the SUB travelled up the connection). */
  readonly activeAt: number;
  closed: boolean;
};

/** A client connection to the simulated server, owned by a process. */
export class Connection {
  readonly subs: Subscription[] = [];
  /** Latest arrival at the server, and at this client: each direction is FIFO. */
  lastUp = 0;
  lastDown = 0;
  closed = false;
  /** Flushes waiting for a partition to heal. */
  readonly parkedFlushes: (() => void)[] = [];

  constructor(
    readonly id: number,
    /** The NATS connection name (`ftm-host-h1`): what disconnect advisories carry. */
    readonly name: string,
    readonly proc: SimProcess | undefined,
    /** Where an exception thrown by a callback is counted (as nats-transport.ts does). */
    readonly dropped: DroppedMessages | undefined,
  ) {}
}

/** Network conditions the faults change. */
export type Conditions = {
  /** Every delay is multiplied by this (a delay spike). */
  delayFactor: number;
  /** Probability that a delivery is lost. */
  loss: number;
  /** While true, deliveries are not FIFO per connection. */
  reorder: boolean;
};

/**
 * The simulated NATS server and the links to it: subject pub/sub with
 * wildcards, per-connection FIFO in each direction, sampled delays, loss,
 * reordering and partitions. A message reaches the server after its
 * publisher's uplink delay, is routed to the subscriptions the server has
 * then, and reaches each subscribing connection after its downlink delay,
 * in one event per connection (its subscriptions in the order they were made).
 */
export class Network {
  readonly conditions: Conditions = { delayFactor: 1, loss: 0, reorder: false };
  /** Called once per routed message with the connections it goes to (the invariants watch acks and commits here). */
  onRoute: ((m: SimMessage, to: number) => void) | undefined;
  /** Called when a callback throws on a message. */
  onThrow: ((m: SimMessage, conn: Connection, err: unknown) => void) | undefined;
  /** The server's own connection: advisories and injected garbage come from it. */
  readonly server: Connection;
  messages = 0;
  private nextConn = 1;
  private readonly subs: Subscription[] = [];
  private readonly routes = new Map<string, Subscription[]>();

  constructor(
    private readonly world: World,
    private readonly rng: Prng,
  ) {
    this.server = new Connection(0, 'nats-server', undefined, undefined);
  }

  connect(proc: SimProcess | undefined, name: string, dropped?: DroppedMessages): Connection {
    return new Connection(this.nextConn++, name, proc, dropped);
  }

  private jitter(lo: number, hi: number): number {
    const c = this.conditions;
    const d = this.rng.range(lo, hi) * c.delayFactor;
    return c.reorder ? d + this.rng.range(0, 2) : d;
  }

  /** When something sent by `conn` now reaches the server. */
  upTime(conn: Connection): number {
    let t = this.world.now + this.jitter(0.02, 0.2);
    if (!this.conditions.reorder) t = Math.max(t, conn.lastUp);
    conn.lastUp = t;
    return t;
  }

  /** When something the server sends `conn` now reaches it. */
  downTime(conn: Connection): number {
    let t = this.world.now + this.jitter(0.03, 0.3);
    if (!this.conditions.reorder) t = Math.max(t, conn.lastDown);
    conn.lastDown = t;
    return t;
  }

  subscribe(conn: Connection, subject: string, onMessage: (m: SimMessage) => void): Subscription {
    const sub: Subscription = {
      subject,
      conn,
      onMessage,
      activeAt: conn.proc ? this.upTime(conn) : this.world.now,
      closed: false,
    };
    conn.subs.push(sub);
    this.subs.push(sub);
    this.routes.clear();
    return sub;
  }

  unsubscribe(sub: Subscription): void {
    if (sub.closed) return;
    sub.closed = true;
    const i = this.subs.indexOf(sub);
    if (i >= 0) this.subs.splice(i, 1);
    const j = sub.conn.subs.indexOf(sub);
    if (j >= 0) sub.conn.subs.splice(j, 1);
    this.routes.clear();
  }

  /** Sends a message from `conn`; dropped at once if its process is cut off from the server. */
  publish(
    conn: Connection,
    subject: string,
    data: Uint8Array,
    replyTo?: string,
    garbage = false,
  ): void {
    const proc = conn.proc;
    if (conn.closed || proc?.crashed || proc?.partitioned) return;
    const m: SimMessage = {
      subject,
      data: data.slice(),
      replyTo,
      from: conn,
      publishedAt: this.world.now,
      incarnation: proc?.incarnation ?? '',
      garbage,
    };
    this.messages++;
    const at = proc ? this.upTime(conn) : this.world.now;
    this.world.atServer(at, () => this.route(m));
  }

  private matching(subject: string): Subscription[] {
    let r = this.routes.get(subject);
    if (!r) {
      r = this.subs.filter((s) => subjectMatches(s.subject, subject));
      this.routes.set(subject, r);
    }
    return r;
  }

  /** At the server: route to every subscription it has now, one delivery per connection. */
  private route(m: SimMessage): void {
    const now = this.world.now;
    const byConn = new Map<Connection, Subscription[]>();
    for (const s of this.matching(m.subject)) {
      if (s.closed || s.activeAt > now || s.conn.closed) continue;
      let list = byConn.get(s.conn);
      if (!list) byConn.set(s.conn, (list = []));
      list.push(s);
    }
    this.onRoute?.(m, byConn.size);
    if (!byConn.size && m.replyTo && !m.noResponders) {
      // A request nobody listens to: the server answers "no responders" at once.
      this.route({ ...m, subject: m.replyTo, replyTo: undefined, noResponders: true });
      return;
    }
    for (const [conn, subs] of byConn) {
      if (conn.proc && m.from !== this.server && this.conditions.loss > 0) {
        if (this.rng.chance(this.conditions.loss)) continue;
      }
      const at = conn.proc ? this.downTime(conn) : now;
      this.world.at(at, () => this.deliver(m, conn, subs), conn.proc);
    }
  }

  private deliver(m: SimMessage, conn: Connection, subs: Subscription[]): void {
    if (conn.closed || conn.proc?.partitioned) return;
    for (const s of subs) {
      if (s.closed) continue;
      try {
        s.onMessage(m);
      } catch (err) {
        conn.dropped?.drop(m.subject, err);
        this.onThrow?.(m, conn, err);
      }
    }
  }

  /** Resolves once everything `conn` sent before reached the server (after a partition heals, if cut off). */
  flush(conn: Connection): Promise<void> {
    return new Promise((resolve) => {
      const answer = () => this.world.at(this.downTime(conn), resolve, conn.proc);
      const atServer = () => {
        if (conn.proc?.partitioned) conn.parkedFlushes.push(answer);
        else answer();
      };
      if (conn.proc?.partitioned) conn.parkedFlushes.push(answer);
      else this.world.atServer(this.upTime(conn), atServer);
    });
  }

  /** A process's connection is gone (it crashed): its subscriptions end. */
  close(conn: Connection): void {
    conn.closed = true;
    for (const s of [...conn.subs]) this.unsubscribe(s);
  }

  /** A partition healed: parked flushes complete. */
  healed(conn: Connection): void {
    for (const answer of conn.parkedFlushes.splice(0)) answer();
  }
}
