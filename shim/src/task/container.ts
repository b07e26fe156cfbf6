// One container in a sandbox: its guest image and writable disk in the VM's slots, its init
// process in the guest (created by the agent, started on Start), its exit, its teardown.
// Used by the containerd task service and by `smolvm run` alike.
import * as path from 'node:path';
import { createWritableDisk, ensureImage, type RootfsSource } from '../../../rootfs-builder/image';
import type { ProcessIo, ProcessStdio } from '../agent/client';
import type { Paths } from '../config/paths';
import { notFound, RpcError } from '../errdefs';
import type { Process as AgentProcess } from '../gen/smolvm/agent';
import type { Logger } from '../log';
import type { OciProcess, OciSpec } from '../oci/spec';
import type { Backend, DiskSlot, VmInstance } from '../sandbox/backend';
import { Sandbox } from '../sandbox/sandbox';
import { ProcessState, type ExitInfo } from './process';

/** Fixed slots every VM boots with: the image and the writable layer. */
export const IMAGE_SLOT = 'slot0';
export const WRITABLE_SLOT = 'slot1';

/** Exit status reported when the VM is gone before the process reported its own. */
export const EXIT_STATUS_VM_LOST = 137;

export interface ContainerOptions {
  id: string;
  spec: OciSpec;
  rootfs: RootfsSource;
  stdio: ProcessStdio;
  backend: Backend;
  paths: Paths;
  memoryMiB: number;
  vcpus: number;
  writableDiskBytes: number;
  log: Logger;
  /** Called as soon as the VMM process exists, before it is ready: record it on disk. */
  onVmStarted?: (vm: VmInstance, vmDir: string) => void;
  /** Called after the init process exited and all its output was delivered. */
  onExit?: (info: ExitInfo) => void;
}

const UINT64_MAX = (1n << 64n) - 1n;

/** JSON numbers lose precision past 2^53: RLIM_INFINITY (2^64-1) arrives as 2^64. Clamp. */
function toUint64(n: number): bigint {
  if (!Number.isFinite(n) || n < 0) return 0n;
  const b = BigInt(Math.floor(n));
  return b > UINT64_MAX ? UINT64_MAX : b;
}

export function agentProcess(proc: OciProcess): AgentProcess {
  return {
    args: proc.args ?? [],
    env: proc.env ?? [],
    cwd: proc.cwd,
    user: { uid: proc.user.uid, gid: proc.user.gid, additionalGids: proc.user.additionalGids ?? [] },
    terminal: proc.terminal ?? false,
    rlimits: (proc.rlimits ?? []).map((r) => ({ type: r.type, hard: toUint64(r.hard), soft: toUint64(r.soft) })),
    noNewPrivileges: proc.noNewPrivileges ?? false,
  };
}

export class Container {
  readonly init: ProcessState;
  private startInFlight: Promise<void> = Promise.resolve();

  private constructor(
    readonly id: string,
    readonly sandbox: Sandbox,
    readonly guestPid: number,
    private readonly io: ProcessIo,
    private readonly opts: ContainerOptions,
  ) {
    this.init = new ProcessState(id, '');
  }

  /** The pid containerd sees: the VMM process's. */
  get pid(): number {
    return this.sandbox.vm.identity.pid;
  }

  static async create(opts: ContainerOptions): Promise<Container> {
    const { id, spec, log } = opts;
    if (!spec.process) throw new RpcError(3, `container ${id}: config.json has no process`);
    let vmDirSeen = '';
    const sandbox = await Sandbox.boot({
      backend: opts.backend,
      paths: opts.paths,
      memoryMiB: opts.memoryMiB,
      vcpus: opts.vcpus,
      log,
      prepareSlots: async (vmDir: string): Promise<DiskSlot[]> => {
        vmDirSeen = vmDir;
        const writable = path.join(vmDir, 'writable.ext4');
        const [image] = await Promise.all([
          ensureImage(opts.rootfs, { cacheDir: opts.paths.cacheDir, log: (m: string) => log.info(m) }),
          createWritableDisk(writable, opts.writableDiskBytes, { cacheDir: opts.paths.cacheDir }),
        ]);
        log.info(image.built ? 'guest image built' : 'guest image cache hit', { image: image.key });
        return [
          { serial: IMAGE_SLOT, path: image.path, readOnly: true },
          { serial: WRITABLE_SLOT, path: writable, readOnly: false },
        ];
      },
      onVmStarted: (vm) => opts.onVmStarted?.(vm, vmDirSeen),
    });
    try {
      const created = await sandbox.agent.createContainer({
        containerId: id,
        image: { serial: IMAGE_SLOT, fsType: 'erofs', readOnly: true },
        writable: { serial: WRITABLE_SLOT, fsType: 'ext4', readOnly: false },
        process: agentProcess(spec.process),
        hostname: spec.hostname ?? '',
        readonlyRootfs: spec.root?.readonly ?? false,
      }, opts.stdio);
      const container = new Container(id, sandbox, created.pid, created.io, opts);
      container.watchExit();
      return container;
    } catch (err) {
      await sandbox.destroy();
      throw err;
    }
  }

  private watchExit(): void {
    const log = this.opts.log;
    void (async () => {
      let info: ExitInfo;
      try {
        const result = await this.sandbox.agent.waitProcess(this.id);
        await this.io.outputDone;
        info = { exitStatus: result.exitStatus, exitedAt: result.exitedAt };
      } catch (err) {
        log.warn('VM lost before the container exited; reporting 137', { error: String(err), diagnostics: this.sandbox.vm.diagnostics() });
        info = { exitStatus: EXIT_STATUS_VM_LOST, exitedAt: new Date() };
      }
      // Never report the exit before the start it follows.
      await this.startInFlight;
      if (this.init.markExited(info)) {
        log.info('container exited', { exit_status: info.exitStatus });
        this.opts.onExit?.(info);
      }
    })();
  }

  /** Lets the init process exec; `afterStart` runs before any exit can be reported. */
  start(afterStart?: () => void): Promise<void> {
    const run = (async () => {
      await this.sandbox.agent.startProcess(this.id);
      this.init.markRunning();
      afterStart?.();
    })();
    this.startInFlight = run.catch(() => undefined);
    return run;
  }

  async kill(signal: number, all: boolean): Promise<void> {
    if (this.init.status === 'stopped') throw notFound(`container ${this.id}: process already finished`);
    await this.sandbox.agent.signalProcess(this.id, '', signal, all);
  }

  async closeStdin(): Promise<void> {
    if (this.init.status === 'stopped') return;
    await this.sandbox.agent.closeStdin(this.id);
  }

  async guestPids(): Promise<number[]> {
    if (this.init.status === 'stopped') return [];
    const procs = await this.sandbox.agent.listProcesses(this.id);
    return procs.map((p) => p.pid);
  }

  /** Kills whatever runs, stops the VM, frees its files. Idempotent. */
  async destroy(): Promise<void> {
    await this.sandbox.destroy();
    this.init.markExited({ exitStatus: EXIT_STATUS_VM_LOST, exitedAt: new Date() });
  }
}
