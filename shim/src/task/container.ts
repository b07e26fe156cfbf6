// One container in a sandbox: its guest image and writable disk in the VM's slots, its init
// process and its execs in the guest (created by the agent, started on Start), their exits,
// its teardown. Used by the containerd task service and by `smolvm run` alike.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createWritableDisk, ensureImage, type RootfsSource } from '../image';
import { AGENT_PROTOCOL_MINOR_CGROUPS, type ProcessIo, type ProcessStdio } from '../agent/client';
import type { Paths } from '../config/paths';
import { alreadyExists, Code, failedPrecondition, notFound, RpcError } from '../errdefs';
import { AGENT_PROTOCOL_MINOR_OCI } from '../oci/protocol';
import type { Process as AgentProcess, LinuxResources as AgentLinuxResources, Mounts as AgentMounts, StatsContainerResponse } from '../gen/smolvm/agent';
import type { Logger } from '../log';
import { guestCapabilities, guestContainerConfig, withShareSubpaths } from '../oci/guest-config';
import { guestResources } from '../oci/resources';
import type { OciProcess, OciSpec } from '../oci/spec';
import type { Backend, DiskSlot, Vmm } from '../vm/backend';
import { assertDirSharesSupported } from '../vm/host-mounts';
import { Vm, type VmDirs } from '../vm/vm';
import { resolveCgroupsPath, VmmCgroup } from '../vm/host-cgroup';
import { PodRegistry } from '../vm/pods';
import type { PodVm } from '../vm/pod-vm';
import { GuestProcess } from './guest-process';
import { maxLimitForVm, vmMemoryMiB } from './memory-sizing';
import { joinPod, type PodMembership } from './pod-member';
import { writableDiskBytes } from './writable-disk';
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
  /** The writable disk's size unless the container's annotation asks for another (config
   *  writable_disk_mib; task/writable-disk.ts). */
  writableDiskBytes: number;
  /** The largest size the annotation may ask for (config writable_disk_max_mib). */
  writableDiskMaxBytes?: number;
  /** Cap of the VM's console log and of its VMM's log (config console_log_max_kib). */
  logMaxBytes?: number;
  /** Restore the VM from a template when one is valid (default true; config `templates`). */
  templates?: boolean;
  log: Logger;
  /** Called as soon as the VMM exists (already in its host cgroup): record it on disk. The
   *  cgroup directories smolvm created and the VM's data dir are passed so that `delete` can
   *  remove them too. */
  onVmStarted?: (vm: Vmm, vmDir: string, hostCgroupDirs: string[], dataDir: string) => void;
  /** Called after the init process exited and all its output was delivered. */
  onExit?: (info: ExitInfo) => void;
  /** terminal=true for the init process (containerd's request may say so when the spec does not). */
  terminal?: boolean;
  /** Called when the container's guest cgroup saw a new OOM kill: before the TaskExit of a
   *  process it killed (TaskOOM, then TaskExit), or on its own when it killed a child. */
  onOom?: () => void;
  /** Run in this pod's shared VM (io.kubernetes.cri.sandbox-id) instead of a VM of its own. */
  pod?: { registry: PodRegistry; podId: string; maxContainers: number };
  /** Called with every host mount point of this container's host directories (bind mounts
   *  into the VM's 9p share) before they are made: record them on disk for `delete`. */
  onHostMounts?: (points: string[]) => void;
  /** A running VM to take instead of booting one (a warm-pool spare's), when it fits. */
  warm?: WarmVmSource;
  /** Multiplies the agent calls' deadlines (config `agent_deadline_scale`; agent/deadlines.ts). */
  agentDeadlineScale?: number;
}

/** A VM started before its container came (a pool spare's, pool/spare.ts, or one the daemon
 *  started with, pool/early-vm.ts): a Create takes it at most once. */
export interface WarmVmSource {
  /** The VM (once it is up) when it has this memory and vCPU count and lives; null otherwise. */
  take(memoryMiB: number, vcpus: number): Promise<PodVm | null>;
}

const UINT64_MAX = (1n << 64n) - 1n;

/** JSON numbers lose precision past 2^53: RLIM_INFINITY (2^64-1) arrives as 2^64. Clamp. */
function toUint64(n: number): bigint {
  if (!Number.isFinite(n) || n < 0) return 0n;
  const b = BigInt(Math.floor(n));
  return b > UINT64_MAX ? UINT64_MAX : b;
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

/** The spec's linux.resources for CreateContainer; refused when the agent cannot apply them. */
function createResources(sandbox: Vm, opts: ContainerOptions): AgentLinuxResources | undefined {
  const { resources } = guestResources(opts.spec.linux?.resources, `container ${opts.id}`);
  if (resources && sandbox.agent.info.protocolMinor < AGENT_PROTOCOL_MINOR_CGROUPS) {
    throw new RpcError(Code.FailedPrecondition, `container ${opts.id}: the guest agent speaks protocol 1.${sandbox.agent.info.protocolMinor}; linux.resources need 1.${AGENT_PROTOCOL_MINOR_CGROUPS} (rebuild the guest initramfs)`);
  }
  return resources;
}

/**
 * Bind-mounts the container's host directories into its VM's 9p share (host-mounts.ts) and
 * returns the guest mounts naming their subpaths there.
 */
async function shareHostDirectories(sandbox: Vm, opts: ContainerOptions, guestConfig: ReturnType<typeof guestContainerConfig>): Promise<AgentMounts | undefined> {
  if (guestConfig.shares.length === 0) return guestConfig.mounts;
  if (!sandbox.shares) throw new RpcError(Code.InvalidArgument, `container ${opts.id}: mount ${guestConfig.shares[0]!.destination}: this VM has no 9p share for host directories`);
  const subpaths = await sandbox.shares.add(opts.id, guestConfig.shares, opts.onHostMounts);
  return withShareSubpaths(guestConfig.mounts, guestConfig.shares, subpaths);
}

function clampUint16(n: number): number {
  return Number.isFinite(n) && n > 0 ? Math.min(Math.floor(n), 0xffff) : 0;
}

export interface ExecOptions {
  process: OciProcess;
  terminal: boolean;
  stdio: ProcessStdio;
  /** Called after the exec exited and all its output was delivered. */
  onExit?: (info: ExitInfo) => void;
}

/** The size of the file behind a slot, as the guest must see it before mounting. */
function slotBytes(sandbox: Vm, serial: string): bigint {
  const slot = sandbox.slots.find((s) => s.serial === serial);
  if (!slot) throw new RpcError(Code.Internal, `VM has no disk slot ${serial}`);
  return BigInt(fs.statSync(slot.path).size);
}

export class Container {
  /** The init process's state (created → running → stopped). */
  readonly init: ProcessState;
  private readonly initProcess: GuestProcess;
  private readonly execs = new Map<string, GuestProcess>();
  /** Exec ids whose ExecProcess is in flight: a second exec with one of them is AlreadyExists. */
  private readonly pendingExecs = new Set<string>();
  /** The VMM's host cgroup (spec linux.cgroupsPath) when the VM is its own, released on destroy. */
  private hostCgroup: VmmCgroup | null = null;
  /** Set when the container runs in a pod's shared VM: leaving it, not a VM teardown. */
  private podMembership: PodMembership | null = null;
  private leaving: Promise<void> | null = null;
  /** OOM kills of the guest cgroup already reported (TaskOOM published once per kill). */
  private oomSeen = 0n;

  private constructor(
    readonly id: string,
    readonly vm: Vm,
    readonly guestPid: number,
    io: ProcessIo,
    terminal: boolean,
    private readonly opts: ContainerOptions,
  ) {
    this.initProcess = new GuestProcess({
      agent: vm.agent, containerId: id, execId: '', guestPid, io, terminal, log: opts.log,
      describeLoss: () => vm.lossReport(), onExit: (info) => opts.onExit?.(info),
      onOomCount: (count) => this.noteOomCount(count),
    });
    this.init = this.initProcess.state;
    this.watchOom();
  }

  /** The pid containerd sees: the VMM process's. */
  get pid(): number {
    return this.vm.vmm.identity.pid;
  }

  static async create(opts: ContainerOptions): Promise<Container> {
    // linux.resources are checked before a VM exists; memory.limit sizes the VM (the guest
    // cgroup enforces the limit itself).
    const limits = guestResources(opts.spec.linux?.resources, `container ${opts.id}`);
    if (limits.notApplied.length > 0) opts.log.warn('linux.resources not applied in the guest', { sections: limits.notApplied.join(',') });
    opts = {
      ...opts,
      memoryMiB: vmMemoryMiB(opts.memoryMiB, limits.memoryLimitBytes, `container ${opts.id}`),
      writableDiskBytes: writableDiskBytes(opts.spec.annotations, { defaultBytes: opts.writableDiskBytes, maxBytes: opts.writableDiskMaxBytes }, `container ${opts.id}`),
    };
    const { id, spec, log } = opts;
    if (!spec.process) throw new RpcError(3, `container ${id}: config.json has no process`);
    const terminal = opts.terminal ?? spec.process.terminal ?? false;
    // Everything the guest will apply is checked (and host files read) before a VM exists.
    const guestConfig = guestContainerConfig(spec, id);
    const initSpec = agentProcess(spec.process, terminal, `container ${id}`);
    const cgroupPath = resolveCgroupsPath(spec.linux?.cgroupsPath);
    assertDirSharesSupported(opts.backend, guestConfig.shares, id);
    let dirsSeen: VmDirs = { dir: '', dataDir: '' };
    const takeWarm = async (): Promise<PodVm | undefined> => {
      const warm = (await opts.warm?.take(opts.memoryMiB, opts.vcpus)) ?? undefined;
      if (warm) log.info('vm taken from the warm pool', { spare: warm.podId, restored_from: warm.vm.restoredFrom ?? 'cold boot', pid: warm.vm.vmm.identity.pid });
      return warm;
    };
    if (opts.pod) {
      // A pod's first container (usually its sandbox) may bring the VM of a warm spare.
      const warm = opts.pod.registry.membersOf(opts.pod.podId) === 0 ? await takeWarm() : undefined;
      return Container.createInPod(opts, opts.pod, terminal, initSpec, guestConfig, cgroupPath, warm);
    }
    const warm = await takeWarm();
    if (warm) {
      // A pod of one: the spare's VM takes its disks the way a pod member's do.
      const own = { registry: new PodRegistry(), podId: `warm-${id}`, maxContainers: warm.capacity };
      return Container.createInPod(opts, own, terminal, initSpec, guestConfig, cgroupPath, warm);
    }
    const hostCgroup = new VmmCgroup(cgroupPath);
    const sandbox = await Vm.boot({
      backend: opts.backend,
      paths: opts.paths,
      memoryMiB: opts.memoryMiB,
      vcpus: opts.vcpus,
      templates: opts.templates,
      logMaxBytes: opts.logMaxBytes,
      log,
      prepareSlots: async (dirs: VmDirs): Promise<DiskSlot[]> => {
        dirsSeen = dirs;
        // On disk, in the VM's data dir: what the container writes is never host RAM.
        const writable = path.join(dirs.dataDir, 'writable.ext4');
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
      onVmStarted: (vm) => {
        // Before the guest runs anything, so the host accounts and limits the whole VM. A
        // failure here throws out of boot, which kills the VM.
        hostCgroup.place(vm.identity.pid);
        opts.onVmStarted?.(vm, dirsSeen.dir, hostCgroup.createdDirs, dirsSeen.dataDir);
      },
    }).catch(async (err: unknown) => {
      await hostCgroup.release();
      throw err;
    });
    try {
      // The sizes let the agent wait for the capacity a template restore refreshes.
      const container = await Container.createInGuest(sandbox, opts, terminal, initSpec, guestConfig, {
        image: { serial: IMAGE_SLOT, sizeBytes: slotBytes(sandbox, IMAGE_SLOT) },
        writable: { serial: WRITABLE_SLOT, sizeBytes: slotBytes(sandbox, WRITABLE_SLOT) },
      });
      container.hostCgroup = hostCgroup;
      return container;
    } catch (err) {
      await sandbox.destroy();
      await hostCgroup.release();
      throw err;
    }
  }

  /**
   * The container itself in a VM that is ready (its own or its pod's): host directories into
   * the VM's share, then the agent's CreateContainer on the given disks; exits are watched.
   */
  private static async createInGuest(
    sandbox: Vm, opts: ContainerOptions, terminal: boolean, initSpec: AgentProcess,
    guestConfig: ReturnType<typeof guestContainerConfig>,
    disks: { image: { serial: string; sizeBytes: bigint }; writable: { serial: string; sizeBytes: bigint } },
  ): Promise<Container> {
    const { id, spec } = opts;
    if (sandbox.agent.info.protocolMinor < AGENT_PROTOCOL_MINOR_OCI) {
      // An older agent would ignore the security settings and mounts: refuse instead.
      throw new RpcError(Code.FailedPrecondition, `container ${id}: the guest agent speaks protocol 1.${sandbox.agent.info.protocolMinor}; the OCI security settings and mounts need 1.${AGENT_PROTOCOL_MINOR_OCI} (rebuild the guest initramfs)`);
    }
    // The daemon's config sets the deadlines of the VM's agent calls (a pod's members share it).
    if (opts.agentDeadlineScale !== undefined) sandbox.agent.setDeadlineScale(opts.agentDeadlineScale);
    // Host directories: bind-mounted into the VM's share (undone by destroy or leave).
    const mounts = await shareHostDirectories(sandbox, opts, guestConfig);
    const created = await sandbox.agent.createContainer({
      containerId: id,
      image: { ...disks.image, fsType: 'erofs', readOnly: true },
      writable: { ...disks.writable, fsType: 'ext4', readOnly: false },
      process: initSpec,
      hostname: spec.hostname ?? '',
      readonlyRootfs: spec.root?.readonly ?? false,
      linux: guestConfig.linux,
      mounts,
      resources: createResources(sandbox, opts),
    }, opts.stdio);
    const container = new Container(id, sandbox, created.pid, created.io, terminal, opts);
    container.initProcess.watchExit();
    return container;
  }

  /** A container of a pod: it joins the pod's VM (booting it when it is the first). */
  private static async createInPod(
    opts: ContainerOptions, pod: NonNullable<ContainerOptions['pod']>, terminal: boolean,
    initSpec: AgentProcess, guestConfig: ReturnType<typeof guestContainerConfig>, cgroupPath: string | null,
    adopt?: PodVm,
  ): Promise<Container> {
    const { id, log } = opts;
    const membership = await joinPod({
      registry: pod.registry, podId: pod.podId, containerId: id, rootfs: opts.rootfs,
      writableDiskBytes: opts.writableDiskBytes, backend: opts.backend, paths: opts.paths,
      memoryMiB: opts.memoryMiB, vcpus: opts.vcpus, maxContainers: pod.maxContainers, cgroupPath, log,
      templates: opts.templates, onVmStarted: opts.onVmStarted, adopt, logMaxBytes: opts.logMaxBytes,
    });
    const sandbox = membership.vm;
    try {
      // The pod's share exists from the VM's boot: this container's directories join it.
      const container = await Container.createInGuest(sandbox, opts, terminal, initSpec, guestConfig, {
        image: { serial: membership.image.serial, sizeBytes: BigInt(membership.image.sizeBytes) },
        writable: { serial: membership.writable.serial, sizeBytes: BigInt(membership.writable.sizeBytes) },
      });
      container.podMembership = membership;
      return container;
    } catch (err) {
      await membership.leave();
      await sandbox.shares?.release(id);
      throw err;
    }
  }

  /** The pod this container runs in (its sandbox id), or null for a VM of its own. */
  get podId(): string | null {
    return this.podMembership?.podId ?? null;
  }

  /** True while other containers run in the same VM (a pod with more than this one). */
  get sharesVm(): boolean {
    return this.podMembership !== null && this.podMembership.pod.memberCount > 1;
  }

  /** The init process for "", else the exec; NotFound when there is no such exec. */
  process(execId: string): GuestProcess {
    if (!execId) return this.initProcess;
    const exec = this.execs.get(execId);
    if (!exec) throw notFound(`container ${this.id}: exec ${execId} not found`);
    return exec;
  }

  /** Lets the init process exec; `afterStart` runs before any exit can be reported. */
  start(afterStart?: () => void): Promise<void> {
    return this.initProcess.start(afterStart);
  }

  /**
   * Prepares an exec in the container's namespaces, blocked before exec until
   * `process(execId).start()`. A missing binary fails here; a stopped container with
   * FailedPrecondition.
   */
  async exec(execId: string, options: ExecOptions): Promise<GuestProcess> {
    const what = `container ${this.id} exec ${execId}`;
    if (this.execs.has(execId) || this.pendingExecs.has(execId)) throw alreadyExists(`${what}: exec id already in use`);
    if (this.init.status === 'stopped') throw failedPrecondition(`${what}: container is stopped`);
    this.pendingExecs.add(execId);
    try {
      const created = await this.vm.agent.execProcess(this.id, execId, agentProcess(options.process, options.terminal, what), options.stdio);
      const exec = new GuestProcess({
        agent: this.vm.agent, containerId: this.id, execId, guestPid: created.pid, io: created.io,
        terminal: options.terminal, log: this.opts.log.child({ exec: execId }),
        describeLoss: () => this.vm.lossReport(), onExit: options.onExit,
        onOomCount: (count) => this.noteOomCount(count),
      });
      this.execs.set(execId, exec);
      exec.watchExit();
      return exec;
    } finally {
      this.pendingExecs.delete(execId);
    }
  }

  /** Forgets a stopped (or never started) exec in the guest; the container is untouched. */
  async removeExec(execId: string): Promise<void> {
    const exec = this.process(execId);
    if (exec.state.status === 'running') throw failedPrecondition(`container ${this.id} exec ${execId}: still running; kill it first`);
    try {
      await this.vm.agent.removeProcess(this.id, execId);
    } catch (err) {
      // The VM (or its container) is already gone, or was just given up: so is the exec.
      if (!(err instanceof RpcError && (err.code === Code.Unavailable || err.code === Code.NotFound || this.vm.lost))) throw err;
    }
    exec.state.markExited({ exitStatus: EXIT_STATUS_VM_LOST, exitedAt: new Date() });
    this.execs.delete(execId);
  }

  async kill(signal: number, all: boolean): Promise<void> {
    await this.initProcess.kill(signal, all);
  }

  async closeStdin(): Promise<void> {
    await this.initProcess.closeStdin();
  }

  async guestPids(): Promise<number[]> {
    return (await this.guestProcesses()).map((p) => p.pid);
  }

  /** The container's processes in the guest, each with its exec id ("" for the init's). */
  async guestProcesses(): Promise<Array<{ pid: number; execId: string }>> {
    if (this.init.status === 'stopped') return [];
    const procs = await this.vm.agent.listProcesses(this.id);
    return procs.map((p) => ({ pid: p.pid, execId: p.execId }));
  }

  /**
   * Update: applies cpu/memory/pids limits to the guest cgroup (fields not set keep their
   * values). The VM's memory is fixed at boot: a memory limit beyond what it can hold is
   * refused rather than silently capped.
   */
  async update(rawResources: unknown): Promise<void> {
    const what = `container ${this.id}`;
    const { resources, memoryLimitBytes, notApplied } = guestResources(rawResources, what);
    if (this.init.status === 'stopped') throw failedPrecondition(`${what}: cannot update the resources of a stopped task`);
    const max = maxLimitForVm(this.opts.memoryMiB);
    if (memoryLimitBytes !== undefined && memoryLimitBytes > max) {
      throw failedPrecondition(`${what}: memory limit ${memoryLimitBytes} bytes does not fit the VM (${this.opts.memoryMiB} MiB, fixed when the task was created; at most ${max} bytes can be enforced)`);
    }
    if (notApplied.length > 0) this.opts.log.warn('linux.resources not applied in the guest', { sections: notApplied.join(',') });
    if (!resources) return;
    await this.vm.agent.updateContainer(this.id, resources);
  }

  /** The guest cgroup's counters (Stats). */
  async stats(): Promise<StatsContainerResponse> {
    return this.vm.agent.statsContainer(this.id);
  }

  /** A new OOM-kill count from the guest: reports each increase once. */
  private noteOomCount(count: bigint): void {
    if (count <= this.oomSeen) return;
    this.oomSeen = count;
    this.opts.log.warn('OOM kill in the container\'s cgroup', { oom_kill: count.toString() });
    this.opts.onOom?.();
  }

  /** Long-polls the agent for OOM kills that end no process we wait for (a child's). */
  private watchOom(): void {
    const agent = this.vm.agent;
    if (agent.info.protocolMinor < AGENT_PROTOCOL_MINOR_CGROUPS) return;
    void (async () => {
      while (!agent.closed && !this.leaving) {
        const seen = this.oomSeen;
        let answer;
        try {
          answer = await agent.watchOom(this.id, seen);
        } catch (err) {
          // The channel closed (VM gone), or this agent has no cgroups: nothing to watch.
          if (!agent.closed) this.opts.log.info('OOM watch stopped', { error: (err as Error).message });
          return;
        }
        if (answer.removed) return;
        if (answer.oomKill <= seen) {
          this.opts.log.warn('OOM watch: the agent answered without a new kill; stopping', { oom_kill: answer.oomKill.toString() });
          return;
        }
        this.noteOomCount(answer.oomKill);
      }
    })();
  }

  /** Kills whatever runs, stops the VM, frees its files. Idempotent. */
  async destroy(): Promise<void> {
    if (this.podMembership) {
      // In a pod's VM: only this container goes (the agent kills what is left of it and
      // unmounts it); the VM ends with the pod's last container.
      this.leaving ??= this.podMembership.leave();
      await this.leaving;
      // The guest no longer uses them: this container's host bind mounts go.
      await this.vm.shares?.release(this.id);
    } else {
      await this.vm.destroy();
    }
    // After the VMM is gone: only an empty cgroup can be removed.
    await this.hostCgroup?.release(this.opts.log);
    const lost = { exitStatus: EXIT_STATUS_VM_LOST, exitedAt: new Date() };
    this.init.markExited(lost);
    for (const exec of this.execs.values()) exec.state.markExited(lost);
  }
}
