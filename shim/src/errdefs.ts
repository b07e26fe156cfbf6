// containerd errdefs as gRPC status codes: every RPC failure maps to one of these, with a
// message that names the container and the cause.
export enum Code {
  OK = 0,
  Canceled = 1,
  Unknown = 2,
  InvalidArgument = 3,
  DeadlineExceeded = 4,
  NotFound = 5,
  AlreadyExists = 6,
  PermissionDenied = 7,
  ResourceExhausted = 8,
  FailedPrecondition = 9,
  Aborted = 10,
  OutOfRange = 11,
  Unimplemented = 12,
  Internal = 13,
  Unavailable = 14,
}

/** An error that carries its errdefs code across RPC boundaries. */
export class RpcError extends Error {
  constructor(readonly code: Code, message: string) {
    super(message);
    this.name = 'RpcError';
  }
}

export const invalidArgument = (msg: string): RpcError => new RpcError(Code.InvalidArgument, msg);
export const notFound = (msg: string): RpcError => new RpcError(Code.NotFound, msg);
export const alreadyExists = (msg: string): RpcError => new RpcError(Code.AlreadyExists, msg);
export const failedPrecondition = (msg: string): RpcError => new RpcError(Code.FailedPrecondition, msg);
export const unimplemented = (msg: string): RpcError => new RpcError(Code.Unimplemented, msg);
export const unavailable = (msg: string): RpcError => new RpcError(Code.Unavailable, msg);
export const internal = (msg: string): RpcError => new RpcError(Code.Internal, msg);

/** The code of any thrown value: RpcError keeps its own, anything else is Unknown. */
export function codeOf(err: unknown): Code {
  return err instanceof RpcError ? err.code : Code.Unknown;
}

export function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
