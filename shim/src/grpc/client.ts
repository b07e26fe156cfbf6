// A typed unary gRPC client over a unix socket, from the same ts-proto generic definitions as
// the ttrpc client: what containerd 2.x does when it drives a shim that answered
// {"version":3,"protocol":"grpc"}. Used by the tests that play containerd, and by tools.
import * as grpc from '@grpc/grpc-js';
import { Code, RpcError } from '../errdefs';
import type { MethodKey, RequestOf, ResponseOf, ServiceDefinition } from '../ttrpc/service';

export interface GrpcCallOptions {
  /** Sets the call's gRPC deadline. */
  readonly timeoutMs?: number;
  readonly metadata?: Readonly<Record<string, string>>;
}

const knownCodes = new Set<number>(Object.values(Code).filter((v): v is number => typeof v === 'number'));

/** A gRPC status received from the server, as the RpcError a caller sees (errdefs codes are gRPC codes). */
export function errorFromGrpc(err: grpc.ServiceError): RpcError {
  const code = knownCodes.has(err.code) ? (err.code as number as Code) : Code.Unknown;
  return new RpcError(code, err.details || err.message);
}

export class GrpcClient {
  private readonly client: grpc.Client;

  /** Connects to a unix socket path; rejects with Unavailable when nothing answers within `timeoutMs`. */
  static async connect(socketPath: string, options: { timeoutMs?: number } = {}): Promise<GrpcClient> {
    const client = new GrpcClient(socketPath);
    const timeoutMs = options.timeoutMs ?? 10_000;
    await new Promise<void>((resolve, reject) => {
      client.client.waitForReady(Date.now() + timeoutMs, (err) => {
        if (!err) return resolve();
        client.close();
        reject(new RpcError(Code.Unavailable, `grpc: cannot connect to ${socketPath}: ${err.message}`));
      });
    });
    return client;
  }

  constructor(socketPath: string) {
    // No retries and no keepalive games: a shim call either reaches the daemon or fails.
    this.client = new grpc.Client(`unix://${socketPath}`, grpc.credentials.createInsecure(), { 'grpc.enable_retries': 0 });
  }

  call<D extends ServiceDefinition, K extends MethodKey<D>>(
    definition: D,
    key: K,
    request: RequestOf<D, K>,
    options: GrpcCallOptions = {},
  ): Promise<ResponseOf<D, K>> {
    const method = definition.methods[key];
    if (!method) return Promise.reject(new RpcError(Code.Unimplemented, `grpc: ${definition.fullName} has no method ${key}`));
    const metadata = new grpc.Metadata();
    for (const [k, v] of Object.entries(options.metadata ?? {})) metadata.set(k, v);
    const callOptions: grpc.CallOptions = options.timeoutMs !== undefined ? { deadline: Date.now() + options.timeoutMs } : {};
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest<unknown, unknown>(
        `/${definition.fullName}/${method.name}`,
        (value) => Buffer.from(method.requestType.encode(value).finish()),
        (bytes) => method.responseType.decode(bytes),
        request,
        metadata,
        callOptions,
        (err, response) => {
          if (err) reject(errorFromGrpc(err));
          else resolve(response as ResponseOf<D, K>);
        },
      );
    });
  }

  close(): void {
    this.client.close();
  }
}
