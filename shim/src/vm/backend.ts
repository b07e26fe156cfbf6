// The seam between a VM and whatever runs it: QEMU's TCG (portable) or our own
// KVM VMM. A backend boots a generic VM — the same kernel, command line and initramfs for every
// container — with a fixed set of disk slots, and hands back a byte stream to the guest agent.
// Nothing about a container reaches the backend except the files behind the slots.
import type { Duplex } from 'node:stream';
import type { Logger } from '../log';
import type { ProcessIdentity } from '../util/proc';
import { readLogTail, tailLog } from './capped-log';
import type { VmShape } from './shape';

export type BackendName = 'tcg' | 'kvm';

/** A virtio-blk device the guest finds by its serial; the agent mounts it only when told to. */
export interface DiskSlot {
  serial: string;
  path: string;
  readOnly: boolean;
}

/** The generic guest every VM boots (vm/guest.ts): the same for every container. */
export interface GuestBoot {
  kernel: string;
  initramfs: string;
  /** The whole kernel command line (the guest's and the backend's arguments). */
  cmdline: string;
}

/** One VM to start: its shape, its guest, its directories and the files behind its slots. */
export interface VmConfig {
  /** Short id, used in process names and paths. */
  vmId: string;
  /** The VM's own directory under the state dir (a tmpfs: host RAM): sockets and other small
   *  state only. Exists; removed by the caller. */
  dir: string;
  /** The VM's data directory on disk (`<cacheDir>/vms/<vmId>`, config/paths.ts): the console
   *  and VMM logs, and the caller's disks. Exists; removed by the caller. */
  dataDir: string;
  /** Cap of the console log and of the VMM's own log on the host, each (capped-log.ts;
   *  default DEFAULT_LOG_MAX_BYTES). */
  logMaxBytes?: number;
  shape: VmShape;
  guest: GuestBoot;
  /** The files behind `shape.disks`, in the same order. */
  slots: DiskSlot[];
  /** Start from this saved VM state (a template, see vm/template; files the backend keeps
   *  next to it, e.g. kvm's memory.bin, come along) instead of booting: the same shape and
   *  guest as the VM that saved it, other files behind the slots. Only backends with
   *  `restoresState`; the guest runs once the state is loaded. */
  incomingState?: string;
}

/** What a saved VM depends on besides its guest and shape: part of a template's key. */
export interface TemplateIdentity {
  /** The VMM and its version: tcg `qemu-system-x86_64 --version`; kvm the VMM build. */
  vmm: string;
  /** The machine as the VMM is told it, paths abstracted (a change to it changes the key). */
  machine: string;
  /** The host the state depends on (kvm: host kind and CPUID; tcg emulates its CPU: none). */
  host: string;
}

export interface VmExit {
  code: number | null;
  signal: string | null;
}

export interface Vmm {
  readonly backend: BackendName;
  /** The VMM process: its pid is what containerd sees as the task's pid. */
  readonly identity: ProcessIdentity;
  /** Files and sockets to record in the state file (teardown works from these alone). */
  readonly sockets: Record<string, string>;
  /** The guest console on the host: a capped log (`<file>` and `<file>.1`: readLogTail). */
  readonly consoleLog: string;
  /** Resolves when the VMM process has exited and its logs are written. Never rejects. */
  readonly exited: Promise<VmExit>;
  /** Resolves true once the guest console prints `text` after this call; false after
   *  `timeoutMs` or when the VMM is gone first. */
  consoleSays(text: string, timeoutMs: number): Promise<boolean>;
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
  /**
   * The file behind disk slot `serial` was rewritten in place (same inode: the VMM holds it
   * open), maybe with another size: the VMM takes the new size and raises virtio-blk's
   * config-change interrupt, on which the guest re-reads the capacity (asynchronously: the
   * agent waits for the size it is told before mounting). A pod's slot given to a container
   * joining it; a template's slot after a restore.
   */
  refreshSlot(serial: string): Promise<void>;
  /**
   * Hot-adds a disk (VMs whose shape has diskHotplug): the guest finds it by its serial
   * (unique within the VM, never reused). The file is used in place; a read-only disk is
   * read-only for the guest. Rejects naming the serial; on a rejection nothing stays attached.
   */
  attachDisk?(disk: DiskSlot): Promise<void>;
  /**
   * Hot-removes a disk attached with attachDisk: the device goes away from the guest (waited
   * for, bounded), then the VMM closes its file. Idempotent for a serial already detached.
   */
  detachDisk?(serial: string): Promise<void>;
}

export interface Backend {
  readonly name: BackendName;
  /** Kernel arguments this backend needs, the same for every VM it boots. */
  readonly kernelArgs: string;
  /** Whether every VM exports `<dir>/shares` over virtio-9p (tag "smolvm"): host directories
   *  are bind-mounted into it for containers (vm/host-mounts.ts). */
  readonly supportsDirShares: boolean;
  /** Most disk slots one VM can have (virtio-mmio transports left for disks). */
  readonly maxDiskSlots: number;
  /** Whether VMs whose shape has diskHotplug take disks by Vmm.attachDisk /
   *  detachDisk (then only pod_max_containers caps a pod); else a pod's disks are slot pairs
   *  fixed at boot and refilled in place (refreshSlot). */
  readonly hotplugDisks?: boolean;
  /** Whether VmConfig.incomingState (a restore from a template's saved state) works. */
  readonly restoresState?: boolean;
  boot(config: VmConfig, log: Logger): Promise<Vmm>;
  /** What this backend's saved VMs of `shape` depend on, for the template key (`memoDir`
   *  caches program versions and file hashes across processes). */
  templateIdentity(shape: VmShape, memoDir: string): Promise<TemplateIdentity>;
  /**
   * Stops the VM and writes its whole state to `stateFile` (a backend may put more files next
   * to it, e.g. kvm's memory.bin): a template. The VM stays stopped; the caller kills it.
   */
  saveState(vmm: Vmm, stateFile: string): Promise<void>;
}

/** The VMM program of each backend, for log lines about its process. */
export const VMM_PROGRAM: Record<BackendName, string> = { tcg: 'qemu-system-x86_64', kvm: 'smolvm-vmm' };

/** How much of the guest console is searched for a panic (the panic is among its last lines). */
const CONSOLE_SCAN_BYTES = 64 * 1024;

/**
 * The guest kernel's own panic line ("Kernel panic - not syncing: <reason>") from console
 * output, without the printk timestamp, or null when the guest did not panic.
 */
export function kernelPanicLine(consoleText: string): string | null {
  const match = /Kernel panic - not syncing:[^\r\n]*/.exec(consoleText);
  return match ? match[0].trim() : null;
}

/** One line on how a VMM process ended (or that it still runs). */
export function describeVmmEnd(backend: BackendName, pid: number, exit: VmExit | null): string {
  const vmm = `the VMM (${VMM_PROGRAM[backend]}, pid ${pid})`;
  if (exit === null) return `${vmm} still runs, but the guest agent's channel closed`;
  if (exit.signal) return `${vmm} was killed by ${exit.signal}`;
  return `${vmm} exited with code ${exit.code}`;
}

/**
 * Why a VM went away under its processes, as one line for the log: a guest kernel panic (the
 * kernel's panic line from the console; with panic=-1 and QEMU's -no-reboot the VMM then
 * exits), else the VMM's end (e.g. killed by SIGKILL from outside). Waits up to `waitMs` for
 * the VMM's exit status, since the agent channel may close a moment before the VMM is reaped.
 */
export async function describeVmLoss(vm: Vmm, waitMs = 2_000): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const exit = await Promise.race([
    vm.exited,
    new Promise<null>((resolve) => { timer = setTimeout(() => resolve(null), waitMs); }),
  ]).finally(() => clearTimeout(timer));
  const end = describeVmmEnd(vm.backend, vm.identity.pid, exit);
  const panic = kernelPanicLine(readLogTail(vm.consoleLog, CONSOLE_SCAN_BYTES));
  return panic ? `the guest kernel panicked: "${panic}"; ${end}` : end;
}

export interface VmLossReport {
  /** One line: why the VM is gone (see describeVmLoss). */
  reason: string;
  /** The VMM's and the guest console's last words (VmInstance.diagnostics()). */
  diagnostics: string;
}

export async function vmLossReport(vm: Vmm): Promise<VmLossReport> {
  const reason = await describeVmLoss(vm);
  return { reason, diagnostics: vm.diagnostics() };
}

/** The last lines of a log file, capped or plain, for error messages (a guest panic names
 *  itself there). */
export function tailFile(file: string, maxLines = 20): string {
  return tailLog(file, maxLines);
}
