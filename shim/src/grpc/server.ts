// A gRPC server (@grpc/grpc-js) for the services containerd 2.x calls on a shim: the same
// ts-proto generic definitions and the same handler signatures (request, CallContext) as the
// ttrpc server, so one implementation serves both transports. Connections are handed in one by
// one (`serveConnection`), because the shim's single socket carries ttrpc and gRPC alike and
// the endpoint tells them apart before either protocol sees a byte.
import * as grpc from '@grpc/grpc-js';
import type { Duplex } from 'node:stream';
import { Code, RpcError, messageOf } from '../errdefs';
import { type Logger, stderrLogger } from '../log';
import type { CallContext, MethodKey, ServiceDefinition, ServiceImpl } from '../ttrpc/service';

export interface GrpcServerOptions {
  readonly logger?: Logger;
  /** Largest request accepted, in bytes (containerd's own default is 16 MiB). */
  readonly maxReceiveBytes?: number;
}

export interface GrpcCloseOptions {
  /** How long calls in flight may take to finish before their connections are cut. */
  readonly timeoutMs?: number;
}

const DEFAULT_MAX_RECEIVE = 16 << 20;
const knownCodes = new Set<number>(Object.values(Code).filter((v): v is number => typeof v === 'number'));

/** A handler's failure as a gRPC status: RpcError keeps its errdefs code (they are gRPC's codes). */
export function grpcStatusOf(err: unknown): Partial<grpc.ServiceError> {
  if (err instanceof RpcError && knownCodes.has(err.code)) return { code: err.code as number as grpc.status, details: err.message };
  return { code: grpc.status.UNKNOWN, details: messageOf(err) };
}

function metadataOf(metadata: grpc.Metadata): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [key, value] of Object.entries(metadata.toJSON())) {
    out.set(key, value.map((v) => (typeof v === 'string' ? v : v.toString('base64'))));
  }
  return out;
}

function deadlineOf(deadline: grpc.Deadline): number | undefined {
  const ms = deadline instanceof Date ? deadline.getTime() : deadline;
  return Number.isFinite(ms) ? ms : undefined;
}

export class GrpcServer {
  private readonly server: grpc.Server;
  private readonly injector: grpc.ConnectionInjector;
  private readonly logger: Logger;
  private readonly services = new Set<string>();
  private nextConnectionNumber = 1;
  private closing = false;

  constructor(options: GrpcServerOptions = {}) {
    this.logger = options.logger ?? stderrLogger('warn', { component: 'grpc' });
    this.server = new grpc.Server({
      'grpc.max_receive_message_length': options.maxReceiveBytes ?? DEFAULT_MAX_RECEIVE,
    });
    // Plain text, as containerd dials its shims (a 0600 unix socket is the access control).
    this.injector = this.server.createConnectionInjector(grpc.ServerCredentials.createInsecure());
  }

  /**
   * Registers an implementation of a generated service definition. Methods left out of `impl`
   * answer UNIMPLEMENTED (grpc-js does so for any path without a handler).
   */
  register<D extends ServiceDefinition>(definition: D, impl: Partial<ServiceImpl<D>>): void {
    if (this.services.has(definition.fullName)) throw new Error(`grpc: duplicate service ${definition.fullName} registered`);
    this.services.add(definition.fullName);
    const service: Record<string, grpc.MethodDefinition<unknown, unknown>> = {};
    const handlers: grpc.UntypedServiceImplementation = {};
    for (const key of Object.keys(definition.methods) as Array<MethodKey<D>>) {
      const handler = impl[key];
      if (handler === undefined) continue;
      const method = definition.methods[key]!;
      const path = `/${definition.fullName}/${method.name}`;
      service[key] = {
        path,
        originalName: key,
        requestStream: false,
        responseStream: false,
        requestSerialize: (value: unknown) => Buffer.from(method.requestType.encode(value).finish()),
        requestDeserialize: (bytes: Buffer) => method.requestType.decode(bytes),
        responseSerialize: (value: unknown) => Buffer.from(method.responseType.encode(value).finish()),
        responseDeserialize: (bytes: Buffer) => method.responseType.decode(bytes),
      };
      const call = handler as (request: unknown, ctx: CallContext) => Promise<unknown>;
      const unary: grpc.handleUnaryCall<unknown, unknown> = (serverCall, callback) => {
        const controller = new AbortController();
        serverCall.once('cancelled', () => controller.abort(new RpcError(Code.Canceled, `${path}: canceled by the client`)));
        const ctx: CallContext = {
          signal: controller.signal,
          metadata: metadataOf(serverCall.metadata),
          deadline: deadlineOf(serverCall.getDeadline()),
          service: definition.fullName,
          method: method.name,
          streamId: 0,
          connection: 'grpc',
        };
        let pending: Promise<unknown>;
        try {
          pending = call.call(impl, serverCall.request, ctx);
        } catch (err) {
          pending = Promise.reject(err);
        }
        pending.then(
          (response) => {
            if (response === undefined || response === null) {
              callback({ code: grpc.status.INTERNAL, details: `grpc: ${path} returned no response` });
              return;
            }
            callback(null, response);
          },
          (err: unknown) => {
            if (!(err instanceof RpcError)) this.logger.warn(`grpc: ${path} failed: ${messageOf(err)}`);
            callback(grpcStatusOf(err));
          },
        );
      };
      handlers[key] = unary;
    }
    this.server.addService(service as grpc.ServiceDefinition, handlers);
  }

  /** Serves one accepted byte stream that starts with the HTTP/2 client preface. */
  serveConnection(stream: Duplex): void {
    if (this.closing) {
      stream.destroy();
      return;
    }
    this.logger.debug('grpc: connection', { conn: this.nextConnectionNumber++ });
    this.injector.injectConnection(stream);
  }

  /** Lets calls in flight finish for up to `timeoutMs` (default 0), then cuts every connection. */
  async close(options: GrpcCloseOptions = {}): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const graceMs = options.timeoutMs ?? 0;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      timer.unref();
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.injector.destroy();
  }
}
