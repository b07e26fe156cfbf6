// Typed service descriptions, taken straight from ts-proto's generic definitions
// (outputServices=generic-definitions, e.g. TaskDefinition or AgentDefinition): the server
// registers implementations against them and the client calls through them, so request and
// response types follow the .proto files with no hand-written glue.
import type { BinaryReader, BinaryWriter } from '@bufbuild/protobuf/wire';

/** The encode/decode pair every generated message exposes. */
export interface MessageCodec<T> {
  encode(message: T, writer?: BinaryWriter): BinaryWriter;
  decode(input: BinaryReader | Uint8Array, length?: number): T;
}

/** One unary method (ttrpc 1.1 as vendored by containerd 1.6 has no streaming RPCs). */
export interface UnaryMethodDefinition<Req = unknown, Res = unknown> {
  /** The method's name on the wire, e.g. "Create". */
  readonly name: string;
  readonly requestType: MessageCodec<Req>;
  readonly responseType: MessageCodec<Res>;
  readonly requestStream: false;
  readonly responseStream: false;
}

export interface ServiceDefinition {
  /** The service's name on the wire, e.g. "containerd.task.v2.Task". */
  readonly fullName: string;
  readonly methods: { readonly [key: string]: UnaryMethodDefinition };
}

/** A method's key in the definition (e.g. "create"), not its wire name. */
export type MethodKey<D extends ServiceDefinition> = keyof D['methods'] & string;

export type RequestOf<D extends ServiceDefinition, K extends MethodKey<D>> = ReturnType<
  D['methods'][K]['requestType']['decode']
>;

export type ResponseOf<D extends ServiceDefinition, K extends MethodKey<D>> = ReturnType<
  D['methods'][K]['responseType']['decode']
>;

/** What a handler knows about the call besides its request. */
export interface CallContext {
  /** Aborted when the request's timeout passes (reason: RpcError DeadlineExceeded) or the connection is lost. */
  readonly signal: AbortSignal;
  /** The request's ttrpc metadata; a key may carry several values. */
  readonly metadata: ReadonlyMap<string, readonly string[]>;
  /** Absolute deadline (ms since the epoch) when the request had a timeout. */
  readonly deadline: number | undefined;
  readonly service: string;
  readonly method: string;
  readonly streamId: number;
  /** Names the connection, for log lines. */
  readonly connection: string;
}

export type MethodImpl<D extends ServiceDefinition, K extends MethodKey<D>> = (
  request: RequestOf<D, K>,
  ctx: CallContext,
) => Promise<ResponseOf<D, K>>;

export type ServiceImpl<D extends ServiceDefinition> = { [K in MethodKey<D>]: MethodImpl<D, K> };
