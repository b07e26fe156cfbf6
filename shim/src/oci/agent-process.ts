// An OCI process (config.json's, or an exec's) as the guest agent takes it.
import { Code, RpcError } from '../errdefs';
import type { Process as AgentProcess } from '../gen/smolvm/agent';
import { guestCapabilities } from './guest-config';
import type { OciProcess } from './spec';

const UINT64_MAX = (1n << 64n) - 1n;

/** JSON numbers lose precision past 2^53: RLIM_INFINITY (2^64-1) arrives as 2^64. Clamp. */
function toUint64(n: number): bigint {
  if (!Number.isFinite(n) || n < 0) return 0n;
  const b = BigInt(Math.floor(n));
  return b > UINT64_MAX ? UINT64_MAX : b;
}

function clampUint16(n: number): number {
  return Number.isFinite(n) && n > 0 ? Math.min(Math.floor(n), 0xffff) : 0;
}

/** The OCI process for the agent; `where` names it in errors (bad capability names). */
export function agentProcess(proc: OciProcess, terminal = proc.terminal ?? false, where = 'process'): AgentProcess {
  const size = proc.consoleSize;
  const umask = proc.user.umask;
  if (umask !== undefined && !(Number.isInteger(umask) && umask >= 0 && umask <= 0o777)) {
    throw new RpcError(Code.InvalidArgument, `${where}: process.user.umask must be 0-0777`);
  }
  return {
    args: proc.args ?? [],
    env: proc.env ?? [],
    cwd: proc.cwd,
    user: { uid: proc.user.uid, gid: proc.user.gid, additionalGids: proc.user.additionalGids ?? [] },
    terminal,
    rlimits: (proc.rlimits ?? []).map((r) => ({ type: r.type, hard: toUint64(r.hard), soft: toUint64(r.soft) })),
    noNewPrivileges: proc.noNewPrivileges ?? false,
    consoleSize: terminal && size ? { height: clampUint16(size.height), width: clampUint16(size.width) } : undefined,
    capabilities: guestCapabilities(proc, where),
    umask,
  };
}
