// Public API of gateway/: the server side (createGateway, tokens) and the client SDK.
// Browsers import gateway/sdk.ts directly: this file pulls in node:http, node:dgram and ws.
export { createGateway } from './gateway.ts';
export type { Gateway, GatewayOptions, GatewayStats } from './gateway.ts';
export { mintToken, verifyToken } from './token.ts';
export type { MintOptions, Role, TokenClaims, TokenSecret } from './token.ts';
export { connect } from './sdk.ts';
export type {
  ConnectOptions,
  ConnectionEvent,
  Session,
  WebSocketConstructor,
  WebSocketLike,
} from './sdk.ts';
export {
  CloseCode,
  ErrorCode,
  PROTOCOL_VERSION,
  SUBPROTOCOL,
  defaultLimits,
  decodeClientDatagram,
  encodeClientDatagram,
  encodeUdpDatagram,
} from './protocol.ts';
export type { Limits, ClientFrame, ServerFrame, Welcome } from './protocol.ts';
export {
  ConnectionClosedError,
  DeadlineError,
  FrameTooLargeError,
  GatewayError,
  InvalidOptionError,
  QueueFullError,
  RequestError,
  TokenError,
} from './errors.ts';
export type { TokenProblem } from './errors.ts';
