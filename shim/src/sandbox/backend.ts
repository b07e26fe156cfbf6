// The seam between the sandbox and whatever runs the VM: QEMU's TCG (portable) or our own
// KVM VMM. A backend boots a generic VM — the same kernel, command line and initramfs for every
// container — with a fixed set of disk slots, and hands back a byte stream to the guest agent.
// Nothing about a container reaches the backend except the files behind the slots.
import * as fs from 'node:fs';
import type { Duplex } from 'node:stream';
import type { Logger } from '../log';
import type { ProcessIdentity } from '../util/proc';

export type BackendName = 'tcg' | 'kvm';

/** A virtio-blk device the guest finds by its serial; the agent mounts it only when told to. */
export interface DiskSlot {
  serial: string;
  path: string;
  readOnly: boolean;
}

/** A host directory exported to the guest (virtio-9p), found there by its mount tag. */
export interface DirShare {
  tag: string;
  hostPath: string;
  readOnly: boolean;
}

export interface VmConfig {
  /** Short id, used in process names and paths. */
  vmId: string;
  /** The VM's own directory: sockets, console log. Exists; removed by the caller. */
  dir: string;
  kernel: string;
  initramfs: string;
  cmdline: string;
  memoryMiB: number;
  vcpus: number;
  slots: DiskSlot[];
  /** Host directories for bind mounts; only backends with `supportsDirShares`. */
  shares?: DirShare[];
}

export interface VmExit {
  code: number | null;
  signal: string | null;
}

export interface VmInstance {
  readonly backend: BackendName;
  /** The VMM process: its pid is what containerd sees as the task's pid. */
  readonly identity: ProcessIdentity;
  /** Files and sockets to record in the state file (teardown works from these alone). */
  readonly sockets: Record<string, string>;
  readonly consoleLog: string;
  /** Resolves when the VMM process has exited. Never rejects. */
  readonly exited: Promise<VmExit>;
  /** A byte stream to the guest agent (not yet handshaken). */
  connectAgent(timeoutMs: number): Promise<Duplex>;
  /** What the VMM and the guest console said last: for error messages. */
  diagnostics(): string;
  /** Kills the VMM and waits for it to be gone. Idempotent. */
  kill(): Promise<void>;
  /** Stops every vCPU: nothing in the guest makes progress until `resume`. */
  pause(): Promise<void>;
  /** Lets a paused VM run again. */
  resume(): Promise<void>;
}

export interface Backend {
  readonly name: BackendName;
  /** Kernel arguments this backend needs, the same for every VM it boots. */
  readonly kernelArgs: string;
  /** Whether VmConfig.shares (host directories over virtio-9p) can be served. */
  readonly supportsDirShares: boolean;
  boot(config: VmConfig, log: Logger): Promise<VmInstance>;
}

/** The last lines of a log file, for error messages (a guest panic names itself there). */
export function tailFile(file: string, maxLines = 20): string {
  try {
    const text = fs.readFileSync(file, 'utf8');
    return text.trimEnd().split('\n').slice(-maxLines).join('\n');
  } catch {
    return '';
  }
}
