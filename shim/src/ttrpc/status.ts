// google.rpc.Status <-> RpcError (containerd errdefs codes), shared by server and client.
import { Code, RpcError } from '../errdefs';
import type { Status } from '../gen/google/rpc/status';

const knownCodes = new Set<number>(Object.values(Code).filter((v): v is number => typeof v === 'number'));

/** The status a handler's failure is answered with: RpcError keeps its code, anything else is Unknown. */
export function statusFromError(err: unknown): Status {
  if (err instanceof RpcError) return { code: err.code, message: err.message, details: [] };
  if (err instanceof Error) return { code: Code.Unknown, message: err.message, details: [] };
  return { code: Code.Unknown, message: String(err), details: [] };
}

export function statusOf(code: Code, message: string): Status {
  return { code, message, details: [] };
}

/** A non-OK status received from the peer, as the RpcError a caller sees. */
export function errorFromStatus(status: Status): RpcError {
  const code: Code = knownCodes.has(status.code) ? (status.code as Code) : Code.Unknown;
  const message = status.message || Code[code] || `status code ${status.code}`;
  return new RpcError(code, message);
}
