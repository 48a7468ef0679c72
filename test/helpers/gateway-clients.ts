import { createSocket, type Socket } from 'node:dgram';
import { WebSocket } from 'ws';
import {
  SUBPROTOCOL,
  decodeClientDatagram,
  encodeUdpDatagram,
  type ServerFrame,
  type Welcome,
} from '../../gateway/index.ts';
import { fromBase64Url } from '../../gateway/protocol.ts';
import { until } from './until.ts';

/**
 * A WebSocket client that speaks the gateway protocol by hand (PROTOCOL.md),
 * frame by frame: what tests use to send what no SDK would (bad frames,
 * floods) and to watch every frame and the close code.
 */
export class RawClient {
  readonly frames: ServerFrame[] = [];
  readonly datagrams: { from: string; payload: Uint8Array }[] = [];
  /** Resolves with the close code and reason once the socket closed. */
  readonly closed: Promise<{ code: number; reason: string }>;
  closeCode: number | undefined;
  welcome: Welcome | undefined;
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        const d = decodeClientDatagram(new Uint8Array(data as Buffer));
        if (d) this.datagrams.push(d);
      } else {
        const f = JSON.parse((data as Buffer).toString('utf8')) as ServerFrame;
        if (f.type === 'welcome') this.welcome = f;
        this.frames.push(f);
      }
    });
    this.closed = new Promise((resolve) =>
      ws.on('close', (code, reason) => {
        this.closeCode = code;
        resolve({ code, reason: reason.toString() });
      }),
    );
    ws.on('error', () => undefined);
  }

  /** Opens a socket to `url` (offering the v1 subprotocol) and waits for it to be open. */
  static async open(url: string): Promise<RawClient> {
    const ws = new WebSocket(url, [SUBPROTOCOL]);
    const client = new RawClient(ws);
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    return client;
  }

  /** Opens a socket and says hello; resolves once welcomed. @throws when closed instead */
  static async hello(url: string, token: string, extra: object = {}): Promise<RawClient> {
    const c = await RawClient.open(url);
    c.send({ type: 'hello', v: 1, token, ...extra });
    await Promise.race([
      until(() => c.welcome, { message: 'welcome' }),
      c.closed.then(({ code, reason }) => {
        throw new Error(`closed with ${code} ${reason} instead of a welcome`);
      }),
    ]);
    return c;
  }

  send(frame: object | string | Buffer): void {
    this.ws.send(
      typeof frame === 'string' || Buffer.isBuffer(frame) ? frame : JSON.stringify(frame),
      { binary: Buffer.isBuffer(frame) },
    );
  }

  /** Resolves with the first frame (seen so far or later) matching `match`. */
  next<F extends ServerFrame>(match: (f: ServerFrame) => boolean, timeoutMs = 5_000): Promise<F> {
    return until(() => this.frames.find(match), {
      timeoutMs,
      message: `a frame matching ${match.toString()}`,
    }) as Promise<F>;
  }

  /** The reply or error frame answering `id`. */
  answer(id: string, timeoutMs = 5_000): Promise<ServerFrame> {
    return this.next((f) => (f.type === 'reply' || f.type === 'error') && f.id === id, timeoutMs);
  }

  /** Sends a request and resolves with its answer frame. */
  async request(id: string, name: string, payload?: unknown): Promise<ServerFrame> {
    this.send({ type: 'request', id, name, ...(payload === undefined ? {} : { payload }) });
    return this.answer(id);
  }

  close(): void {
    this.ws.terminate();
  }
}

/** A UDP socket speaking the gateway's datagram layout (PROTOCOL.md, "Datagrams"). */
export class UdpClient {
  readonly received: { from: string; payload: Uint8Array; at: number }[] = [];
  private constructor(
    private readonly socket: Socket,
    private readonly key: Uint8Array,
    private readonly port: number,
  ) {
    socket.on('message', (msg) => {
      const d = decodeClientDatagram(new Uint8Array(msg));
      if (d) this.received.push({ ...d, at: performance.timeOrigin + performance.now() });
    });
  }

  /** Binds a socket for the connection `welcome` describes and registers its address. */
  static async register(welcome: Welcome): Promise<UdpClient> {
    if (!welcome.udp) throw new Error('the welcome offers no UDP');
    const socket = createSocket('udp4');
    await new Promise<void>((r) => socket.bind(0, '127.0.0.1', r));
    const c = new UdpClient(socket, fromBase64Url(welcome.udp.key), welcome.udp.port);
    // The gateway answers an empty datagram with [1][0]: the address is known then.
    await until(
      () => {
        c.send(new Uint8Array(0));
        return c.received.some((d) => d.from === '' && d.payload.length === 0);
      },
      { message: 'the registration answered', intervalMs: 50 },
    );
    return c;
  }

  send(payload: Uint8Array): void {
    this.socket.send(encodeUdpDatagram(this.key, payload), this.port, '127.0.0.1');
  }

  /** Sends raw bytes, header and all. */
  sendRaw(bytes: Uint8Array): void {
    this.socket.send(bytes, this.port, '127.0.0.1');
  }

  close(): void {
    this.socket.close();
  }
}
