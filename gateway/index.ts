// Public API of gateway/: the server side (createGateway, tokens) and the client SDK.
// Browsers import gateway/client.ts alone: this file pulls in node:http, node:dgram and ws.
export * from './client.ts';
export { createGateway } from './gateway.ts';
export type { Gateway, GatewayOptions, GatewayStats } from './gateway.ts';
export { mintToken, verifyToken } from './token.ts';
export type { MintOptions, Role, TokenClaims, TokenSecret } from './token.ts';
export {
  defaultLimits,
  decodeClientDatagram,
  encodeClientDatagram,
  encodeUdpDatagram,
} from './protocol.ts';
export { TokenError } from './errors.ts';
export type { TokenProblem } from './errors.ts';
