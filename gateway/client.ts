/**
 * The client SDK on its own, for Node and browsers (`ftmesh/client`, and the
 * browser bundle built from this file): `connect`, its errors and the
 * protocol's codes. Imports nothing of Node's (the SDK loads `ws` and
 * `node:dgram` only when it runs in Node).
 */
export { connect } from './sdk.ts';
export type {
  ConnectOptions,
  ConnectionEvent,
  Session,
  WebSocketConstructor,
  WebSocketLike,
} from './sdk.ts';
export {
  ConnectionClosedError,
  DeadlineError,
  FrameTooLargeError,
  GatewayError,
  GatewayUnreachableError,
  InvalidOptionError,
  QueueFullError,
  RequestError,
} from './errors.ts';
export { CloseCode, ErrorCode, PROTOCOL_VERSION, SUBPROTOCOL } from './protocol.ts';
export type { ServerFrame, ClientFrame, Welcome, Limits } from './protocol.ts';
