// One container's life in the guest: created by the agent on the disks its placement gives it
// (vm/placement.ts decides where its VM comes from), its init process and its execs (started,
// signalled, paused and resumed with the VM, their exits), its resources and counters, and
// leaving its VM again. Used by the containerd task service and by `smolvm run` alike.
import { AGENT_PROTOCOL_MINOR_CGROUPS, type ProcessStdio } from '../agent/client';
import type { SmolvmConfig } from '../config/config';
import { alreadyExists, Code, codeOf, failedPrecondition, invalidArgument, notFound, RpcError } from '../errdefs';
import type { Mounts as AgentMounts, StatsContainerResponse } from '../gen/smolvm/agent';
import { ensureImage, type RootfsSource } from '../image';
import type { Logger } from '../log';
import { agentProcess } from '../oci/agent-process';
import { guestContainerConfig, withShareSubpaths } from '../oci/guest-config';
import { AGENT_PROTOCOL_MINOR_OCI } from '../oci/protocol';
import { guestResources } from '../oci/resources';
import type { OciProcess, OciSpec } from '../oci/spec';
import type { VmRecord } from '../state/store';
import { resolveCgroupsPath } from '../vm/host-cgroup';
import { assertDirSharesSupported } from '../vm/host-mounts';
import type { Placement, VmPlacer } from '../vm/placement';
import type { Vm } from '../vm/vm';
import { GuestProcess } from './guest-process';
import { maxLimitForVm, vmMemoryMiB } from './memory-sizing';
import { ProcessState, type ExitInfo } from './process';
import { writableDiskBytes } from './writable-disk';

/** Exit status reported when the VM is gone before the process reported its own. */
export const EXIT_STATUS_VM_LOST = 137;

const SIGKILL = 9;

/** The daemon's defaults a container's spec may change (config.toml). */
export interface ContainerSizing {
  /** The VM's memory, unless the container's memory limit needs more (memory-sizing.ts). */
  memoryMiB: number;
  vcpus: number;
  /** The writable disk's size unless the container's annotation asks for another (config
   *  writable_disk_mib; task/writable-disk.ts). */
  writableDiskBytes: number;
  /** The largest size the annotation may ask for (config writable_disk_max_mib). */
  writableDiskMaxBytes?: number;
}

/** A daemon's defaults from its config. */
export function containerSizing(config: SmolvmConfig): ContainerSizing {
  return {
    memoryMiB: config.memoryMiB, vcpus: config.vcpus,
    writableDiskBytes: config.writableDiskMiB * 1024 * 1024, writableDiskMaxBytes: config.writableDiskMaxMiB * 1024 * 1024,
  };
}

export interface ContainerOptions {
  id: string;
  spec: OciSpec;
  rootfs: RootfsSource;
  stdio: ProcessStdio;
  /** terminal=true for the init process (containerd's request may say so when the spec does not). */
  terminal?: boolean;
  log: Logger;
  /** Where its VM comes from. */
  placer: VmPlacer;
  sizing: ContainerSizing;
  /** CRI's pod (io.kubernetes.cri.sandbox-id) it belongs to, or null for a VM of its own. */
  podId: string | null;
  /** Records its VM in the container's state file, as soon as the VMM exists. */
  record: (vm: VmRecord) => void;
  /** Called with every host mount point of this container's host directories (bind mounts
   *  into the VM's 9p share) before they are made: record them on disk for `delete`. */
  onHostMounts?: (points: string[]) => void;
  /** Called after the init process exited and all its output was delivered. */
  onExit?: (info: ExitInfo) => void;
  /** Called when the container's guest cgroup saw a new OOM kill: before the TaskExit of a
   *  process it killed (TaskOOM, then TaskExit), or on its own when it killed a child. */
  onOom?: () => void;
}

export interface ExecOptions {
  process: OciProcess;
  terminal: boolean;
  stdio: ProcessStdio;
  /** Called after the exec exited and all its output was delivered. */
  onExit?: (info: ExitInfo) => void;
}

/** What a Pause or a Kill of a paused container did, for the events the service publishes. */
export type KillOutcome = 'sent' | 'held until resume' | 'resumed to deliver';

export class Container {
  /** The init process's state. */
  readonly init: ProcessState;
  private readonly initProcess: GuestProcess;
  private readonly execs = new Map<string, GuestProcess>();
  /** Exec ids whose ExecProcess is in flight: a second exec with one of them is AlreadyExists. */
  private readonly pendingExecs = new Set<string>();
  private leaving: Promise<void> | null = null;
  /** OOM kills of the guest cgroup already reported (TaskOOM published once per kill). */
  private oomSeen = 0n;
  /** Pause, Resume and a kill that resumes run one at a time. */
  private pauseQueue: Promise<unknown> = Promise.resolve();
  /** Signals sent while paused wait for the resume, as for a frozen cgroup: delivered in order. */
  private readonly heldSignals: Array<{ execId: string; signal: number; all: boolean }> = [];

  private constructor(
    readonly id: string,
    private readonly placement: Placement,
    readonly guestPid: number,
    initProcess: (container: Container) => GuestProcess,
    private readonly opts: ContainerOptions,
    /** The VM's memory, fixed when it was made. */
    private readonly vmMemoryMiB: number,
  ) {
    this.initProcess = initProcess(this);
    this.init = this.initProcess.state;
    this.watchOom();
  }

  /** The VM the container runs in. */
  get vm(): Vm {
    return this.placement.vm;
  }

  /** The pid containerd sees: the VMM process's. */
  get pid(): number {
    return this.vm.vmm.identity.pid;
  }

  /** The pod whose VM it runs in, or null for a VM of its own. */
  get podId(): string | null {
    return this.placement.podId;
  }

  /** True while other containers run in the same VM (a pod with more than this one). */
  get sharesVm(): boolean {
    return this.placement.sharesVm;
  }

  /** Paused (or being paused): its whole VM is stopped on purpose. */
  get paused(): boolean {
    return this.init.status === 'paused' || this.init.status === 'pausing';
  }

  /**
   * Everything the guest will apply is checked (and host files read) before a VM exists; then
   * the container gets its place in a VM (placement.ts) and is created there by the agent. A
   * failure leaves nothing: the place is given back.
   */
  static async create(opts: ContainerOptions): Promise<Container> {
    const { id, spec, log, placer, sizing } = opts;
    const what = `container ${id}`;
    if (!spec.process) throw invalidArgument(`${what}: config.json has no process`);
    // linux.resources are checked before a VM exists; memory.limit sizes the VM (the guest
    // cgroup enforces the limit itself).
    const limits = guestResources(spec.linux?.resources, what);
    if (limits.notApplied.length > 0) log.warn('linux.resources not applied in the guest', { sections: limits.notApplied.join(',') });
    const memoryMiB = vmMemoryMiB(sizing.memoryMiB, limits.memoryLimitBytes, what);
    const writable = writableDiskBytes(spec.annotations, { defaultBytes: sizing.writableDiskBytes, maxBytes: sizing.writableDiskMaxBytes }, what);
    const terminal = opts.terminal ?? spec.process.terminal ?? false;
    const guestConfig = guestContainerConfig(spec, id);
    const initSpec = agentProcess(spec.process, terminal, what);
    const cgroupPath = resolveCgroupsPath(spec.linux?.cgroupsPath);
    assertDirSharesSupported(placer.builder.backend, guestConfig.shares, id);
    // The image is built (or found in the cache) while the VM starts.
    const image = ensureImage(opts.rootfs, { cacheDir: placer.builder.paths.cacheDir, log: (m: string) => log.info(m) });
    image.then((built) => log.info(built.built ? 'guest image built' : 'guest image cache hit', { image: built.key }), () => undefined);
    const placement = await placer.place({
      containerId: id, podId: opts.podId, memoryMiB, vcpus: sizing.vcpus, image, writableDiskBytes: writable, cgroupPath,
      log, record: opts.record,
    });
    const vm = placement.vm;
    try {
      if (vm.agent.info.protocolMinor < AGENT_PROTOCOL_MINOR_OCI) {
        // An older agent would ignore the security settings and mounts: refuse instead.
        throw new RpcError(Code.FailedPrecondition, `${what}: the guest agent speaks protocol 1.${vm.agent.info.protocolMinor}; the OCI security settings and mounts need 1.${AGENT_PROTOCOL_MINOR_OCI} (rebuild the guest initramfs)`);
      }
      if (limits.resources && vm.agent.info.protocolMinor < AGENT_PROTOCOL_MINOR_CGROUPS) {
        throw new RpcError(Code.FailedPrecondition, `${what}: the guest agent speaks protocol 1.${vm.agent.info.protocolMinor}; linux.resources need 1.${AGENT_PROTOCOL_MINOR_CGROUPS} (rebuild the guest initramfs)`);
      }
      // Host directories: bind-mounted into the VM's share (undone by destroy).
      const mounts = await shareHostDirectories(vm, id, guestConfig, opts.onHostMounts);
      const created = await vm.agent.createContainer({
        containerId: id,
        image: { serial: placement.image.serial, sizeBytes: BigInt(placement.image.sizeBytes), fsType: 'erofs', readOnly: true },
        writable: { serial: placement.writable.serial, sizeBytes: BigInt(placement.writable.sizeBytes), fsType: 'ext4', readOnly: false },
        process: initSpec,
        hostname: spec.hostname ?? '',
        readonlyRootfs: spec.root?.readonly ?? false,
        linux: guestConfig.linux,
        mounts,
        resources: limits.resources,
      }, opts.stdio);
      const container = new Container(id, placement, created.pid, (self) => new GuestProcess({
        agent: vm.agent, containerId: id, execId: '', guestPid: created.pid, io: created.io, terminal, log,
        describeLoss: () => vm.lossReport(), onExit: (info) => opts.onExit?.(info),
        onOomCount: (count) => self.noteOomCount(count),
      }), opts, memoryMiB);
      container.initProcess.watchExit();
      return container;
    } catch (err) {
      await placement.release(() => removeFromGuest(vm, id, log));
      await vm.shares?.release(id);
      throw err;
    }
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
    if (this.paused) throw failedPrecondition(`${what}: container is paused; resume it first`);
    this.pendingExecs.add(execId);
    try {
      const vm = this.vm;
      const created = await vm.agent.execProcess(this.id, execId, agentProcess(options.process, options.terminal, what), options.stdio);
      const exec = new GuestProcess({
        agent: vm.agent, containerId: this.id, execId, guestPid: created.pid, io: created.io,
        terminal: options.terminal, log: this.opts.log.child({ exec: execId }),
        describeLoss: () => vm.lossReport(), onExit: options.onExit,
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
    if (exec.state.live) throw failedPrecondition(`container ${this.id} exec ${execId}: still running; kill it first`);
    try {
      await this.vm.agent.removeProcess(this.id, execId);
    } catch (err) {
      // The VM (or its container) is already gone, or was just given up: so is the exec.
      if (!(err instanceof RpcError && (err.code === Code.Unavailable || err.code === Code.NotFound || this.vm.lost))) throw err;
    }
    exec.state.markExited({ exitStatus: EXIT_STATUS_VM_LOST, exitedAt: new Date() });
    this.execs.delete(execId);
  }

  /**
   * Signals the init (or an exec; `all`: every process of the container). While paused, as
   * runc with a frozen cgroup: SIGKILL to the container takes effect at once, so the VM runs
   * again to let the guest carry it out (then the container stops: no /tasks/resumed); any
   * other signal waits for the resume.
   */
  async kill(execId: string, signal: number, all: boolean): Promise<KillOutcome> {
    const target = this.process(execId);
    if (!this.paused) {
      await this.signal(target, signal, all);
      return 'sent';
    }
    const what = execId ? `container ${this.id} exec ${execId}` : `container ${this.id}`;
    if (target.state.status === 'stopped') throw notFound(`${what}: process already finished`);
    if (signal === SIGKILL && !execId) {
      const resumed = await this.serializePause(async () => {
        if (!this.paused) return false;
        this.heldSignals.length = 0;
        await this.resumeVm();
        return true;
      });
      await this.signal(target, signal, all);
      return resumed ? 'resumed to deliver' : 'sent';
    }
    this.heldSignals.push({ execId, signal, all });
    this.opts.log.info('signal held until resume (task paused)', { exec: execId, signal });
    return 'held until resume';
  }

  /**
   * Sends the signal through the agent. When the guest does not take it within its deadline
   * the VM is declared lost (killed): for SIGKILL that is what was asked, the process is dead
   * (its exit, 137, follows), so the Kill succeeds and `ctr task rm -f` goes on to Delete;
   * any other signal fails with DeadlineExceeded naming the call.
   */
  private async signal(target: GuestProcess, signal: number, all: boolean): Promise<void> {
    try {
      await target.kill(signal, all);
    } catch (err) {
      if (signal === SIGKILL && codeOf(err) === Code.DeadlineExceeded && this.vm.lost) {
        this.opts.log.warn('SIGKILL not answered in time: the VM was declared lost, which ends the process', {
          exec: target.execId, error: (err as Error).message,
        });
        return;
      }
      throw err;
    }
  }

  /**
   * Pause stops the whole VM (QMP `stop` on tcg, the VMM's pause on kvm): every process of the
   * container stops making progress, and so does the guest agent. Pausing a paused task is
   * refused, as by runc; so is pausing one container of a pod whose VM others share.
   */
  pause(): Promise<void> {
    return this.serializePause(async () => {
      const what = `container ${this.id}`;
      const status = this.init.status;
      if (this.paused) throw failedPrecondition(`${what}: cannot pause a paused task`);
      if (status !== 'running' || this.leaving) throw failedPrecondition(`${what}: cannot pause a ${status} task`);
      if (this.sharesVm) {
        // Pause stops the whole VM, which would freeze the pod's other containers too.
        throw failedPrecondition(`${what}: cannot pause one container of pod ${this.podId} while others run in its VM (freezing a single container is not supported yet)`);
      }
      const processes = this.liveProcesses();
      for (const state of processes) state.markPausing();
      try {
        await this.vm.pause();
      } catch (err) {
        for (const state of processes) if (state.status === 'pausing') state.markResumed();
        throw new Error(`${what}: pause failed: ${(err as Error).message}`);
      }
      for (const state of processes) if (state.status === 'pausing') state.markPaused();
    });
  }

  /** Lets the VM run again, then delivers the signals sent while it was paused. */
  resume(): Promise<void> {
    return this.serializePause(async () => {
      if (!this.paused) throw failedPrecondition(`container ${this.id}: cannot resume a task that is not paused (it is ${this.init.status})`);
      await this.resumeVm();
    });
  }

  private async resumeVm(): Promise<void> {
    try {
      await this.vm.resume();
    } catch (err) {
      throw new Error(`container ${this.id}: resume failed: ${(err as Error).message}`);
    }
    for (const state of this.liveProcesses()) if (state.status !== 'running') state.markResumed();
    for (const held of this.heldSignals.splice(0)) {
      try {
        await this.process(held.execId).kill(held.signal, held.all);
      } catch (err) {
        this.opts.log.warn('signal sent while paused not delivered', { exec: held.execId, signal: held.signal, error: (err as Error).message });
      }
    }
  }

  private liveProcesses(): ProcessState[] {
    return [this.init, ...[...this.execs.values()].map((exec) => exec.state)].filter((state) => state.live);
  }

  private serializePause<T>(work: () => Promise<T>): Promise<T> {
    const run = this.pauseQueue.then(work);
    this.pauseQueue = run.catch(() => undefined);
    return run;
  }

  async closeStdin(): Promise<void> {
    await this.initProcess.closeStdin();
  }

  /** The container's processes in the guest, each with its exec id ("" for the init's). */
  async guestProcesses(): Promise<Array<{ pid: number; execId: string }>> {
    if (this.init.status === 'stopped') return [];
    if (this.paused) throw failedPrecondition(`container ${this.id}: cannot list the processes of a paused task; resume it first`);
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
    // The agent is frozen with the VM: it cannot apply anything.
    if (this.paused) throw failedPrecondition(`${what}: cannot update the resources of a paused task; resume it first`);
    const max = maxLimitForVm(this.vmMemoryMiB);
    if (memoryLimitBytes !== undefined && memoryLimitBytes > max) {
      throw failedPrecondition(`${what}: memory limit ${memoryLimitBytes} bytes does not fit the VM (${this.vmMemoryMiB} MiB, fixed when the task was created; at most ${max} bytes can be enforced)`);
    }
    if (notApplied.length > 0) this.opts.log.warn('linux.resources not applied in the guest', { sections: notApplied.join(',') });
    if (!resources) return;
    await this.vm.agent.updateContainer(this.id, resources);
  }

  /** The guest cgroup's counters (Stats). */
  async stats(): Promise<StatsContainerResponse> {
    if (this.paused) throw failedPrecondition(`container ${this.id}: cannot read the metrics of a paused task; resume it first`);
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

  /** Kills whatever runs and gives the VM back (placement.ts): its own VM stops, a pod's VM
   *  loses only this container. Idempotent. */
  async destroy(): Promise<void> {
    this.heldSignals.length = 0;
    this.leaving ??= this.placement.release(() => removeFromGuest(this.vm, this.id, this.opts.log));
    await this.leaving;
    // The guest no longer uses them: this container's host bind mounts go.
    await this.vm.shares?.release(this.id);
    const lost = { exitStatus: EXIT_STATUS_VM_LOST, exitedAt: new Date() };
    this.init.markExited(lost);
    for (const exec of this.execs.values()) exec.state.markExited(lost);
  }
}

/**
 * Bind-mounts the container's host directories into its VM's 9p share (host-mounts.ts) and
 * returns the guest mounts naming their subpaths there.
 */
async function shareHostDirectories(vm: Vm, id: string, guestConfig: ReturnType<typeof guestContainerConfig>, onHostMounts?: (points: string[]) => void): Promise<AgentMounts | undefined> {
  if (guestConfig.shares.length === 0) return guestConfig.mounts;
  if (!vm.shares) throw new RpcError(Code.InvalidArgument, `container ${id}: mount ${guestConfig.shares[0]!.destination}: this VM has no 9p share for host directories`);
  const subpaths = await vm.shares.add(id, guestConfig.shares, onHostMounts);
  return withShareSubpaths(guestConfig.mounts, guestConfig.shares, subpaths);
}

/** The agent kills what is left of the container in the guest and unmounts it. */
async function removeFromGuest(vm: Vm, id: string, log: Logger): Promise<void> {
  try {
    await vm.agent.removeContainer(id);
  } catch (err) {
    // The VM (or the container in it) is already gone, or was just given up: nothing to remove.
    if (!(err instanceof RpcError && (err.code === Code.Unavailable || err.code === Code.NotFound || vm.lost))) {
      log.warn('removing the container from the pod VM failed', { error: String(err) });
    }
  }
}
