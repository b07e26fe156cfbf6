// A Sandbox is one microVM, booted generic up to "agent ready": the guest agent has answered
// the handshake and no container exists yet. Containers arrive afterwards through the agent,
// on disks the VMM put in fixed slots. Everything of the VM lives in its own two directories:
// small state (sockets) under the state dir, what grows with the guest (disks, logs) in its
// data dir on disk (config/paths.ts); both are removed with the VM.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AgentClient, type DeadlineExpiry } from '../agent/client';
import { vmDataDir, type Paths } from '../config/paths';
import { RpcError } from '../errdefs';
import type { Logger } from '../log';
import { removeQuietly } from '../util/fsutil';
import { killIdentified } from '../util/proc';
import { VMM_PROGRAM, vmLossReport, type Backend, type DiskSlot, type VmConfig, type Vmm, type VmLossReport } from './backend';
import { DEFAULT_LOG_MAX_BYTES } from './capped-log';
import { guestArtifacts } from './guest';
import { HostShares } from './host-mounts';
import { startVm } from './template/start';
import { markVmDirOwner } from './vmm-exec';

export interface VmBootOptions {
  backend: Backend;
  paths: Paths;
  memoryMiB: number;
  vcpus: number;
  /** Called with the VM's directories: returns the files to put behind the disk slots (made
   *  in `dataDir`, on disk: never under the state dir). */
  prepareSlots: (dirs: VmDirs) => Promise<DiskSlot[]>;
  log: Logger;
  /** Called as soon as the VMM process exists (before the guest is ready). */
  onVmStarted?: (vm: Vmm) => void;
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

export class Vm {
  private destroyed: Promise<void> | null = null;
  /** Set once the VM is declared lost (declareLost): why, and what it said last. */
  private lostReport: VmLossReport | null = null;

  private constructor(
    readonly vmId: string,
    readonly dir: string,
    /** On disk: this VM's disks and logs (removed with it). */
    readonly dataDir: string,
    readonly vmm: Vmm,
    readonly agent: AgentClient,
    readonly slots: DiskSlot[],
    private readonly log: Logger,
    /** The template key it was restored from, null when cold-booted. */
    readonly restoredFrom: string | null,
    /** The VM's one 9p share (`<dir>/shares`), null when the backend has none: host
     *  directories are bind-mounted into it for the containers (host-mounts.ts). */
    readonly shares: HostShares | null,
  ) {
    // A call the guest did not answer in time: the guest is wedged, the VM is given up.
    agent.on('deadlineExceeded', (expiry: DeadlineExpiry) => this.declareLost(expiry.error.message));
  }

  /** True once the VM was declared lost: its VMM is killed, its processes end with 137. */
  get lost(): boolean {
    return this.lostReport !== null;
  }

  /**
   * The one place a VM is given up: a guest that stopped answering (a call past its deadline)
   * is never waited for again. Records why (with the console's last words, taken before the
   * VM directory goes), closes the agent channel (every pending call and long poll ends, so
   * every process of every container in the VM reports exit 137 naming this cause), kills the
   * VMM with SIGKILL at once (a wedged or stopped VMM would not answer a clean stop) and frees
   * the VM's files. Idempotent; a VM already being torn down by smolvm is left to that.
   */
  declareLost(cause: string): void {
    if (this.lostReport || this.destroyed) return;
    const vmm = `${VMM_PROGRAM[this.vmm.backend]}, pid ${this.vmm.identity.pid}`;
    this.lostReport = {
      reason: `${cause}; the VM was declared lost and its VMM (${vmm}) killed`,
      diagnostics: this.vmm.diagnostics(),
    };
    this.log.error(`vm lost: ${this.lostReport.reason}`, { diagnostics: this.lostReport.diagnostics });
    // Calls still pending fail now, saying why (the rest of the teardown closes nothing new).
    this.agent.close(new Error(`the VM was declared lost: ${cause}`));
    killIdentified(this.vmm.identity, 'SIGKILL');
    this.destroy().catch((err: unknown) => this.log.warn('tearing down the lost vm failed', { error: String(err) }));
  }

  /** Why the VM went away under its processes: the declared loss, else what the VMM and console say. */
  lossReport(): Promise<VmLossReport> {
    return this.lostReport ? Promise.resolve(this.lostReport) : vmLossReport(this.vmm);
  }

  /**
   * Pauses the VM on purpose: the agent's deadlines stop first (a paused guest cannot answer,
   * and that is no wedge); calls sent meanwhile wait for `resume`, then get their full time.
   */
  async pause(): Promise<void> {
    this.agent.deadlineClock.hold();
    try {
      await this.vmm.pause();
    } catch (err) {
      this.agent.deadlineClock.release();
      throw err;
    }
  }

  /** Lets a paused VM run again; the deadlines start over once it runs. */
  async resume(): Promise<void> {
    await this.vmm.resume();
    this.agent.deadlineClock.release();
  }

  static vmDir(paths: Paths, vmId: string): string {
    return path.join(paths.stateDir, 'vms', vmId);
  }

  static async boot(opts: VmBootOptions): Promise<Vm> {
    const vmId = randomBytes(6).toString('hex');
    const dir = Vm.vmDir(opts.paths, vmId);
    const dataDir = vmDataDir(opts.paths, vmId);
    const log = opts.log.child({ vm: vmId });
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    markVmDirOwner(dir); // whose it is, should we die before its VMM runs (vmm-exec.ts)
    // Set by onVmStarted (inside startVm): the VM to kill should anything fail after it.
    let vm = null as Vmm | null;
    // The 9p share is exported (read-only, host-mounts.ts) before the VMM opens it.
    const exporting = opts.backend.supportsDirShares ? HostShares.export(dir, log) : Promise.resolve(null);
    try {
      fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
      const [guest, slots, shares] = await Promise.all([guestArtifacts(opts.paths.cacheDir), opts.prepareSlots({ dir, dataDir }), exporting]);
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
      return new Vm(vmId, dir, dataDir, ready, agent, slots, log, restoredFrom, shares);
    } catch (err) {
      const detail = vm ? vm.diagnostics() : '';
      if (vm) await vm.kill();
      // Its mounts before the directory (removeQuietly does not cross a mount).
      await (await exporting.catch(() => null))?.releaseAll();
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
        await this.vmm.kill();
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
