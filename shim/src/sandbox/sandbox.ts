// A Sandbox is one microVM, booted generic up to "agent ready": the guest agent has answered
// the handshake and no container exists yet. Containers arrive afterwards through the agent,
// on disks the VMM put in fixed slots. Everything of the VM lives in its own two directories:
// small state (sockets) under the state dir, what grows with the guest (disks, logs) in its
// data dir on disk (config/paths.ts); both are removed with the VM.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentClient } from '../agent/client';
import { vmDataDir, type Paths } from '../config/paths';
import { RpcError } from '../errdefs';
import type { Logger } from '../log';
import { removeQuietly } from '../util/fsutil';
import type { Backend, DiskSlot, VmConfig, VmInstance } from './backend';
import { DEFAULT_LOG_MAX_BYTES } from './capped-log';
import { guestArtifacts } from './guest';
import { HostShares, sharesDirOf } from './host-mounts';
import { startVm } from './template/start';

export interface SandboxOptions {
  backend: Backend;
  paths: Paths;
  memoryMiB: number;
  vcpus: number;
  /** Called with the VM's directories: returns the files to put behind the disk slots (made
   *  in `dataDir`, on disk: never under the state dir). */
  prepareSlots: (dirs: VmDirs) => Promise<DiskSlot[]>;
  log: Logger;
  /** Called as soon as the VMM process exists (before the guest is ready). */
  onVmStarted?: (vm: VmInstance) => void;
  /** Time for the guest to boot and answer the handshake. */
  bootTimeoutMs?: number;
  /** Restore from a template snapshot when one is valid (default true; config `templates`). */
  templates?: boolean;
  /** Boot with the backend's disk hotplug controller (VmConfig.diskHotplug): a pod VM. */
  diskHotplug?: boolean;
  /** Cap of the console log and of the VMM's log (config console_log_max_kib). */
  logMaxBytes?: number;
}

/** A VM's two directories (config/paths.ts). */
export interface VmDirs {
  /** `<stateDir>/vms/<vmId>`: sockets and other small state. */
  dir: string;
  /** `<cacheDir>/vms/<vmId>`: disks, slot files, logs. */
  dataDir: string;
}

export class Sandbox {
  private destroyed: Promise<void> | null = null;
  /** The VM's one 9p share (`<dir>/shares`), null when the backend has none: host
   *  directories are bind-mounted into it for the containers (host-mounts.ts). */
  readonly shares: HostShares | null;

  private constructor(
    readonly vmId: string,
    readonly dir: string,
    /** On disk: this VM's disks and logs (removed with it). */
    readonly dataDir: string,
    readonly vm: VmInstance,
    readonly agent: AgentClient,
    readonly slots: DiskSlot[],
    private readonly log: Logger,
    backend: Backend,
    /** The template key it was restored from, null when cold-booted. */
    readonly restoredFrom: string | null,
  ) {
    this.shares = backend.supportsDirShares ? new HostShares(sharesDirOf(dir), log) : null;
  }

  static vmDir(paths: Paths, vmId: string): string {
    return path.join(paths.stateDir, 'vms', vmId);
  }

  static async boot(opts: SandboxOptions): Promise<Sandbox> {
    const vmId = randomBytes(6).toString('hex');
    const dir = Sandbox.vmDir(opts.paths, vmId);
    const dataDir = vmDataDir(opts.paths, vmId);
    const log = opts.log.child({ vm: vmId });
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    // Set by onVmStarted (inside startVm): the VM to kill should anything fail after it.
    let vm = null as VmInstance | null;
    try {
      fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      const [guest, slots] = await Promise.all([guestArtifacts(opts.paths.cacheDir), opts.prepareSlots({ dir, dataDir })]);
      const config: VmConfig = {
        vmId, dir, dataDir, logMaxBytes: opts.logMaxBytes ?? DEFAULT_LOG_MAX_BYTES,
        kernel: guest.kernel.vmlinux, initramfs: guest.initramfs, cmdline: `${guest.cmdline} ${opts.backend.kernelArgs}`.trim(),
        memoryMiB: opts.memoryMiB, vcpus: opts.vcpus, slots,
        ...(opts.diskHotplug ? { diskHotplug: true } : {}),
      };
      // Restored from a template when a valid one exists, else cold-booted (template/start.ts).
      const { vm: ready, agent, restoredFrom } = await startVm({
        backend: opts.backend, config, paths: opts.paths, log, templates: opts.templates,
        bootTimeoutMs: opts.bootTimeoutMs ?? 60_000,
        onVmStarted: (started) => {
          vm = started;
          opts.onVmStarted?.(started);
        },
      });
      return new Sandbox(vmId, dir, dataDir, ready, agent, slots, log, opts.backend, restoredFrom);
    } catch (err) {
      const detail = vm ? vm.diagnostics() : '';
      if (vm) await vm.kill();
      removeQuietly(dir);
      removeQuietly(dataDir);
      const msg = err instanceof Error ? err.message : String(err);
      const full = detail && !msg.includes(detail) ? `${msg}\n${detail}` : msg;
      // Keep the errdefs code (bad input stays InvalidArgument for containerd).
      throw err instanceof RpcError ? new RpcError(err.code, full) : new Error(full);
    }
  }

  /** Stops the VM and removes its directories (disks, sockets, logs). Idempotent. */
  destroy(): Promise<void> {
    if (!this.destroyed) {
      this.destroyed = (async () => {
        this.agent.close();
        await this.vm.kill();
        // Host bind mounts first: the removal below never descends into a mount anyway.
        await this.shares?.releaseAll();
        const left = [...removeQuietly(this.dir), ...removeQuietly(this.dataDir)];
        if (left.length > 0) this.log.warn('vm directory not fully removed (mounts left?)', { left: left.join(' ') });
        this.log.debug('vm destroyed');
      })();
    }
    return this.destroyed;
  }
}
