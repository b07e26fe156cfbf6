// Types of the smolvm-vmm control protocol v1 (native-vmm/src/control/protocol.md) as the
// shim sees them: the machine configuration, the events, the exit record. Messages from the
// VMM arrive as `unknown` and are checked here before anything else reads them.
import * as fs from 'node:fs';

export const VMM_PROTOCOL_VERSION = 1;

export type VmmState = 'awaiting_configure' | 'configured' | 'running' | 'paused' | 'exited';

export const EXIT_REASONS = [
  'guest_shutdown', 'guest_reset', 'stopped', 'guest_halt', 'guest_crash', 'internal_error', 'entry_failed', 'vmm_fault',
] as const;
export type VmmExitReason = (typeof EXIT_REASONS)[number];

/** A host resource for the VMM: a path the shim opens and passes as an fd, or an open fd. */
export type HostFile = string | { fd: number };

export interface VmmDisk {
  file: HostFile;
  readOnly: boolean;
  /** virtio-blk serial (≤ 20 bytes): how the guest finds the slot. */
  serial: string;
}

export interface VmmMachineConfig {
  memoryMiB: number;
  vcpus?: number;
  kernel: HostFile;
  initramfs?: HostFile;
  cmdline?: string;
  /** COM1 output; a path is opened for append (created 0600). The kvm backend passes a pipe's
   *  write end, read into a capped log (capped-log.ts); the VMM writes it non-blocking. */
  serial?: HostFile;
  bootProtocol?: 'auto' | 'pvh' | 'linux64';
  disks?: VmmDisk[];
  /** Hybrid vsock: the VMM listens on udsPath (CONNECT <port>\n / OK <port>\n). */
  vsock?: { guestCid: number; udsPath: string };
  rng?: boolean;
  exitRecordPath?: string;
  onControlClose?: 'stop' | 'continue';
}

/** Restore a snapshot instead of booting: the devices get new host files, same layout. */
export interface VmmRestoreConfig {
  restore: { state: HostFile; memory: HostFile };
  /** Checked against the snapshot when given. */
  memoryMiB?: number;
  vcpus?: number;
  serial?: HostFile;
  /** One file per disk slot of the snapshot, in order. */
  disks?: VmmDisk[];
  vsock?: { guestCid: number; udsPath: string };
  exitRecordPath?: string;
  onControlClose?: 'stop' | 'continue';
}

/** What a snapshot wrote, and where it may be restored. */
export interface VmmSnapshotInfo {
  snapshotId: string;
  vmmBuild: string;
  hostKind: string;
  cpuidHash: string;
  stateBytes: number;
  memoryBytes: number;
  warnings: string[];
}

export function parseSnapshotInfo(raw: unknown): VmmSnapshotInfo {
  const r = (typeof raw === 'object' && raw !== null ? raw : {}) as Record<string, unknown>;
  const str = (k: string): string => {
    if (typeof r[k] !== 'string') throw new Error(`smolvm-vmm snapshot reply: ${k} missing`);
    return r[k] as string;
  };
  const num = (k: string): number => (typeof r[k] === 'number' ? (r[k] as number) : 0);
  return {
    snapshotId: str('snapshot_id'), vmmBuild: str('vmm_build'), hostKind: str('host_kind'), cpuidHash: str('cpuid_hash'),
    stateBytes: num('state_bytes'), memoryBytes: num('memory_bytes'),
    warnings: Array.isArray(r.warnings) ? r.warnings.filter((w): w is string => typeof w === 'string') : [],
  };
}

export interface VmmConfigured {
  /** The entry the VMM took, e.g. "PVH 32-bit entry at 0x1000500". */
  boot: string;
  /** The final kernel command line (with the virtio_mmio.device=… the VMM appended). */
  cmdline: string;
}

/** What the VMM (or its process) reported, in the order it happened. */
export type VmmEvent =
  | { kind: 'started' }
  | { kind: 'paused' }
  | { kind: 'resumed' }
  | { kind: 'exited'; reason: string; detail: string; exitCode: number | null }
  | { kind: 'protocol-error'; error: string }
  | { kind: 'process-exit'; code: number | null; signal: string | null };

/** How a VMM ended: its own account (if it gave one) and the process's exit status. */
export interface VmmTermination {
  reason: string | null;
  detail: string;
  code: number | null;
  signal: string | null;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const str = (value: unknown): string => (typeof value === 'string' ? value : '');
const intOrNull = (value: unknown): number | null => (typeof value === 'number' && Number.isInteger(value) ? value : null);

/** Turns what the addon delivered into a VmmEvent; null for hello and anything unknown. */
export function parseVmmEvent(raw: unknown): VmmEvent | null {
  if (!isRecord(raw)) return null;
  switch (raw.type) {
    case 'event':
      switch (raw.event) {
        case 'started':
        case 'paused':
        case 'resumed':
          return { kind: raw.event };
        case 'exited':
          return { kind: 'exited', reason: str(raw.reason) || 'unknown', detail: str(raw.detail), exitCode: intOrNull(raw.exit_code) };
        default:
          return null;
      }
    case 'error':
      return { kind: 'protocol-error', error: str(raw.error) || 'unspecified protocol error' };
    case 'process-exit':
      return { kind: 'process-exit', code: intOrNull(raw.code), signal: typeof raw.signal === 'string' ? raw.signal : null };
    default:
      return null;
  }
}

export function parseConfigured(reply: unknown): VmmConfigured {
  if (!isRecord(reply)) throw new Error('configure: the VMM sent a reply that is not an object');
  return { boot: str(reply.boot), cmdline: str(reply.cmdline) };
}

export function parseState(reply: unknown): VmmState {
  const state = isRecord(reply) ? reply.state : undefined;
  const states: readonly string[] = ['awaiting_configure', 'configured', 'running', 'paused', 'exited'];
  if (typeof state !== 'string' || !states.includes(state)) throw new Error(`status: the VMM reported no valid state (${JSON.stringify(state)})`);
  return state as VmmState;
}

/** The exit record the VMM writes before it exits (write + fsync + rename). */
export interface VmmExitRecord {
  pid: number;
  reason: string;
  detail: string;
  exitCode: number | null;
  startedAtMs: number;
  exitedAtMs: number;
}

/** The record at `file`, or null when absent (a SIGKILLed VMM writes none) or malformed. */
export function readExitRecord(file: string): VmmExitRecord | null {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return null;
  }
  if (!isRecord(parsed) || parsed.v !== VMM_PROTOCOL_VERSION || typeof parsed.pid !== 'number' || typeof parsed.reason !== 'string') return null;
  return {
    pid: parsed.pid,
    reason: parsed.reason,
    detail: str(parsed.detail),
    exitCode: intOrNull(parsed.exit_code),
    startedAtMs: intOrNull(parsed.started_at_ms) ?? 0,
    exitedAtMs: intOrNull(parsed.exited_at_ms) ?? 0,
  };
}
