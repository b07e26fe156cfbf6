// ttrpc for the shim: framing, server, client, typed service definitions, status mapping.
export * from './frame';
export { FrameConnection, type FrameConnectionOptions } from './connection';
export * from './service';
export { TtrpcServer, type TtrpcServerOptions, type DataFrameHandler, type CloseOptions } from './server';
export { TtrpcClient, type TtrpcClientOptions, type CallOptions } from './client';
export { statusFromError, errorFromStatus, statusOf } from './status';
