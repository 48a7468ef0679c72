// Public API of infra/: the nats-server launcher and its errors. Nothing here imports an actor.
export { NatsServerNotFoundError, NatsServerStartError } from './errors.ts';
export { findNatsServer } from './find-nats-server.ts';
export { startNatsCluster, startNatsServer } from './launcher.ts';
export { configString, renderConfig } from './nats-config.ts';
export type { ConfigTemplate } from './nats-config.ts';
export type { NatsClusterHandle, NatsClusterOptions, NatsServerOptions } from './launcher.ts';
export type { NatsServerHandle } from './server-process.ts';
