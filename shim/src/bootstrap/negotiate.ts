// What `start` answers, per containerd version (the daemon serves every combination on one
// socket, see shim/src/grpc/endpoint.ts, so this only has to pick what the caller accepts):
//   1.6       no MAX_SHIM_VERSION                  plain address            (task v2, ttrpc)
//   1.7       MAX_SHIM_VERSION=2, containerd 1.x   {"version":2,"protocol":"ttrpc"}
//   2.0-2.2   MAX_SHIM_VERSION=2, containerd 2.x   {"version":3,"protocol":"grpc"} (task v3, gRPC)
//   2.3+      BootstrapParams on stdin             BootstrapResult{version 3, "grpc"} (protobuf)
// 1.7 and 2.0-2.2 send the same environment; the major version comes from containerd's binary
// (containerd-version.ts). When it cannot be told, version 2 over ttrpc is what both accept.
// SMOLVM_SHIM_PROTOCOL=ttrpc|grpc (in containerd's environment) picks the transport where the
// caller allows it: 2.x takes either with version 3; 1.7 takes gRPC as {"version":2,"protocol":
// "grpc"} (task v3 over gRPC, its grpcBridge); 1.6 only ttrpc.
// Pure decisions, no I/O: the caller gathers the facts.
import type { BootstrapParams } from './wire';

export type TaskProtocol = 'ttrpc' | 'grpc';
/** How the answer is written: a bare address (<= 1.6), JSON (1.7-2.2), BootstrapResult (2.3+). */
export type AnswerFormat = 'plain' | 'json' | 'protobuf';

export interface StartAnswer {
  format: AnswerFormat;
  /** 2: containerd.task.v2.Task; 3: containerd.task.v3.Task. */
  version: 2 | 3;
  protocol: TaskProtocol;
}

export interface CallerProfile {
  /** The BootstrapParams containerd 2.3+ sent on stdin, if it did. */
  bootstrap: BootstrapParams | undefined;
  /** MAX_SHIM_VERSION, 0 when unset (containerd <= 1.6). */
  maxShimVersion: number;
  /** containerd's major version when known. */
  containerdMajor: number | undefined;
  /** SMOLVM_SHIM_PROTOCOL, when set. */
  preferred: TaskProtocol | undefined;
}

/** MAX_SHIM_VERSION as a number; 0 when unset. */
export function parseMaxShimVersion(env: NodeJS.ProcessEnv): number {
  const raw = env.MAX_SHIM_VERSION;
  if (raw === undefined || raw === '') return 0;
  if (!/^\d{1,4}$/.test(raw)) throw new Error(`MAX_SHIM_VERSION=${JSON.stringify(raw)} is not a version number`);
  return Number(raw);
}

/** SMOLVM_SHIM_PROTOCOL: ttrpc, grpc, or empty/auto for the default. */
export function parsePreferredProtocol(env: NodeJS.ProcessEnv): TaskProtocol | undefined {
  const raw = env.SMOLVM_SHIM_PROTOCOL;
  if (raw === undefined || raw === '' || raw === 'auto') return undefined;
  if (raw === 'ttrpc' || raw === 'grpc') return raw;
  throw new Error(`SMOLVM_SHIM_PROTOCOL=${JSON.stringify(raw)}: want ttrpc, grpc or auto`);
}

/** Whether the answer depends on containerd's major version (worth reading its binary for). */
export function needsContainerdMajor(profile: Omit<CallerProfile, 'containerdMajor'>): boolean {
  return !profile.bootstrap && profile.maxShimVersion === 2;
}

export function chooseAnswer(profile: CallerProfile): StartAnswer {
  // containerd 2.3+: task v3, natively (containerd 2.x maps version 2 onto v3 through a bridge).
  if (profile.bootstrap) return { format: 'protobuf', version: 3, protocol: profile.preferred ?? 'grpc' };
  // containerd 1.6 reads a bare address and speaks task v2 over ttrpc, nothing else.
  if (profile.maxShimVersion < 2) return { format: 'plain', version: 2, protocol: 'ttrpc' };
  if (profile.maxShimVersion >= 3 || (profile.containerdMajor ?? 0) >= 2) {
    return { format: 'json', version: 3, protocol: profile.preferred ?? 'grpc' };
  }
  // containerd 1.7, or unknown: a version above 2 would be refused; 1.7 takes gRPC with 2.
  if (profile.preferred === 'grpc' && profile.containerdMajor === 1) return { format: 'json', version: 2, protocol: 'grpc' };
  return { format: 'json', version: 2, protocol: 'ttrpc' };
}

/** The text answer of containerd <= 2.2 (protobuf answers are encoded by wire.ts). */
export function renderTextAnswer(answer: StartAnswer, address: string): string {
  if (answer.format === 'plain') return address;
  if (answer.format === 'json') return JSON.stringify({ version: answer.version, address, protocol: answer.protocol });
  throw new Error('a protobuf answer is not text');
}
