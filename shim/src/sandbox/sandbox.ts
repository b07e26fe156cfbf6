// A Sandbox is one microVM, booted generic up to "agent ready": the guest agent has answered
// the handshake and no container exists yet. Containers arrive afterwards through the agent,
// on disks the VMM put in fixed slots. Everything of the VM lives in its own directory.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentClient } from '../agent/client';
import type { Paths } from '../config/paths';
import { invalidArgument, RpcError } from '../errdefs';
import type { Logger } from '../log';
import { removeQuietly } from '../util/fsutil';
import type { Backend, DirShare, DiskSlot, VmConfig, VmInstance } from './backend';
import { guestArtifacts } from './guest';

export interface SandboxOptions {
  backend: Backend;
  paths: Paths;
  memoryMiB: number;
  vcpus: number;
  /** Called with the VM's directory: returns the files to put behind the disk slots. */
  prepareSlots: (vmDir: string) => Promise<DiskSlot[]>;
  log: Logger;
  /** Called as soon as the VMM process exists (before the guest is ready). */
  onVmStarted?: (vm: VmInstance) => void;
  /** Time for the guest to boot and answer the handshake. */
  bootTimeoutMs?: number;
  /** Host directories to export over virtio-9p (fixed at boot, like the disk slots). Only
   *  the tcg backend has a 9p device: elsewhere they are refused, naming the mount. */
  sharedDirs?: (DirShare & { destination: string })[];
}

/** Backends that export host directories to the guest (QEMU's virtio-9p-device). */

export class Sandbox {
  private destroyed: Promise<void> | null = null;

  private constructor(
    readonly vmId: string,
    readonly dir: string,
    readonly vm: VmInstance,
    readonly agent: AgentClient,
    readonly slots: DiskSlot[],
    private readonly log: Logger,
  ) {}

  static vmDir(paths: Paths, vmId: string): string {
    return path.join(paths.stateDir, 'vms', vmId);
  }

  static async boot(opts: SandboxOptions): Promise<Sandbox> {
    const shares = opts.sharedDirs ?? [];
    if (shares.length > 0 && !opts.backend.supportsDirShares) {
      throw invalidArgument(`mount ${shares[0]!.destination}: bind mounts of host directories (here ${shares[0]!.hostPath}) need virtio-9p, which the ${opts.backend.name} backend does not have yet; use the tcg backend`);
    }
    const vmId = randomBytes(6).toString('hex');
    const dir = Sandbox.vmDir(opts.paths, vmId);
    const log = opts.log.child({ vm: vmId });
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    let vm: VmInstance | null = null;
    try {
      const [guest, slots] = await Promise.all([guestArtifacts(opts.paths.cacheDir), opts.prepareSlots(dir)]);
      const started = Date.now();
      const config: VmConfig = {
        vmId, dir,
        kernel: guest.kernel.vmlinux, initramfs: guest.initramfs, cmdline: `${guest.cmdline} ${opts.backend.kernelArgs}`.trim(),
        memoryMiB: opts.memoryMiB, vcpus: opts.vcpus, slots,
        shares: shares.map(({ tag, hostPath, readOnly }) => ({ tag, hostPath, readOnly })),
      };
      vm = await opts.backend.boot(config, log);
      opts.onVmStarted?.(vm);
      const bootTimeout = opts.bootTimeoutMs ?? 60_000;
      const channel = await vm.connectAgent(bootTimeout);
      const vmExited = vm.exited.then((exit) => {
        throw new Error(`VM exited during boot (code ${exit.code}, signal ${exit.signal}): ${vm!.diagnostics()}`);
      });
      const agent = await Promise.race([AgentClient.connect(channel, { timeoutMs: bootTimeout }), vmExited]);
      vmExited.catch(() => undefined);
      log.info('vm ready', { backend: vm.backend, pid: vm.identity.pid, ms: Date.now() - started, kernel: agent.info.kernelRelease });
      return new Sandbox(vmId, dir, vm, agent, slots, log);
    } catch (err) {
      const detail = vm ? vm.diagnostics() : '';
      if (vm) await vm.kill();
      removeQuietly(dir);
      const msg = err instanceof Error ? err.message : String(err);
      const full = detail && !msg.includes(detail) ? `${msg}\n${detail}` : msg;
      // Keep the errdefs code (bad input stays InvalidArgument for containerd).
      throw err instanceof RpcError ? new RpcError(err.code, full) : new Error(full);
    }
  }

  /** Stops the VM and removes its directory (disks, sockets, logs). Idempotent. */
  destroy(): Promise<void> {
    if (!this.destroyed) {
      this.destroyed = (async () => {
        this.agent.close();
        await this.vm.kill();
        removeQuietly(this.dir);
        this.log.debug('vm destroyed');
      })();
    }
    return this.destroyed;
  }
}
