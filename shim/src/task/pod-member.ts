// A container's place in its pod's VM: join (booting the VM when the pod has none), get its
// image and a fresh writable disk into the VM (hot-added on tcg, a refilled slot pair on kvm:
// vm/pod.ts), and leave again (the agent removes the container, its disks are removed or
// its pair freed, the last member ends the VM). The pod's
// VMM goes into the host cgroup of the container that booted it.
import { ensureImage, type RootfsSource } from '../image';
import type { Paths } from '../config/paths';
import { Code, RpcError } from '../errdefs';
import type { Logger } from '../log';
import type { Backend, Vmm } from '../vm/backend';
import { VmmCgroup } from '../vm/host-cgroup';
import { PodVm, type FilledSlot } from '../vm/pod-vm';
import type { PodRegistry } from '../vm/pods';
import type { Vm } from '../vm/vm';

export interface PodJoinOptions {
  registry: PodRegistry;
  podId: string;
  containerId: string;
  rootfs: RootfsSource;
  writableDiskBytes: number;
  backend: Backend;
  paths: Paths;
  memoryMiB: number;
  vcpus: number;
  maxContainers: number;
  /** Restore the pod's VM from a template when valid (config `templates`). */
  templates?: boolean;
  /** This container's linux.cgroupsPath, resolved: used if it is the one that boots the VM. */
  cgroupPath: string | null;
  log: Logger;
  /** The VM exists (booted now or before): record it on disk with its host cgroup dirs and
   *  its data dir. */
  onVmStarted?: (vm: Vmm, vmDir: string, hostCgroupDirs: string[], dataDir: string) => void;
  /** Cap of the console log and of the VMM's log of a VM booted here. */
  logMaxBytes?: number;
  /** A VM that is already running (a warm-pool spare's): taken instead of booting one. */
  adopt?: PodVm;
}

export interface PodMembership {
  readonly podId: string;
  readonly pod: PodVm;
  readonly vm: Vm;
  readonly image: FilledSlot;
  readonly writable: FilledSlot;
  /** Removes the container from the guest (if the VM still runs) and gives its slots back. */
  leave(): Promise<void>;
}

function bootPod(opts: PodJoinOptions, hostCgroupDirs: string[]): Promise<PodVm> {
  const cgroup = new VmmCgroup(opts.cgroupPath, hostCgroupDirs);
  return PodVm.boot({
    podId: opts.podId, backend: opts.backend, paths: opts.paths, memoryMiB: opts.memoryMiB,
    vcpus: opts.vcpus, maxContainers: opts.maxContainers, log: opts.log, templates: opts.templates,
    logMaxBytes: opts.logMaxBytes,
    onVmStarted: (vm, vmDir, dataDir) => {
      // Before the guest runs: the host accounts and limits the whole pod VM.
      cgroup.place(vm.identity.pid);
      // Recorded at once: a daemon killed during the boot must not leak the VM.
      opts.onVmStarted?.(vm, vmDir, hostCgroupDirs, dataDir);
    },
    onDestroyed: () => cgroup.release(opts.log),
  }).catch(async (err: unknown) => {
    await cgroup.release();
    throw err;
  });
}

/** Takes a running VM (a warm-pool spare's) as this pod's: into the container's host cgroup
 *  now (the pages it touched so far stay charged where they were), cleaned up as a booted one. */
async function adoptPod(opts: PodJoinOptions, pod: PodVm, hostCgroupDirs: string[]): Promise<PodVm> {
  const cgroup = new VmmCgroup(opts.cgroupPath, hostCgroupDirs);
  pod.adopt(opts.log, () => cgroup.release(opts.log));
  try {
    cgroup.place(pod.vm.vmm.identity.pid);
  } catch (err) {
    // Nobody else holds this VM: it goes with the failed Create (and the placement with it).
    await pod.destroy();
    throw err;
  }
  return pod;
}

/** Pod VMs' host cgroup directories, by VM (the booting container's cgroupsPath). */
const podCgroupDirs = new WeakMap<PodVm, string[]>();

export async function joinPod(opts: PodJoinOptions): Promise<PodMembership> {
  const { registry, podId, containerId: id, log } = opts;
  // The image is built (or found) while the pod's VM boots.
  const image = ensureImage(opts.rootfs, { cacheDir: opts.paths.cacheDir, log: (m: string) => log.info(m) });
  image.catch(() => undefined);
  const dirs: string[] = [];
  let adopted = false;
  let pod: PodVm;
  try {
    pod = await registry.join(podId, id, async () => {
      adopted = opts.adopt !== undefined;
      const booted = opts.adopt ? await adoptPod(opts, opts.adopt, dirs) : await bootPod(opts, dirs);
      podCgroupDirs.set(booted, dirs);
      return booted;
    });
  } finally {
    // Another container of the pod brought its VM first: the warm one is not needed.
    if (opts.adopt && !adopted) {
      log.info('warm vm not needed: the pod has its VM', { pod: podId });
      void opts.adopt.destroy();
    }
  }
  const sandbox = pod.vm;
  const leave = (): Promise<void> => registry.leaveGuest(podId, id, async () => {
    if (!pod.alive) return;
    try {
      await sandbox.agent.removeContainer(id);
    } catch (err) {
      // The VM (or the container in it) is already gone, or was just given up (a removal past
      // its deadline: sandbox.lost): nothing left to remove.
      if (!(err instanceof RpcError && (err.code === Code.Unavailable || err.code === Code.NotFound || sandbox.lost))) {
        log.warn('removing the container from the pod VM failed', { error: String(err) });
      }
    }
  });
  try {
    opts.onVmStarted?.(sandbox.vmm, sandbox.dir, podCgroupDirs.get(pod) ?? [], sandbox.dataDir);
    const built = await image;
    log.info(built.built ? 'guest image built' : 'guest image cache hit', { image: built.key, pod: podId });
    const slots = await pod.fill(id, { imagePath: built.path, writableDiskBytes: opts.writableDiskBytes, cacheDir: opts.paths.cacheDir });
    log.info('joined pod vm', { pod: podId, image_disk: slots.image.serial, writable_disk: slots.writable.serial, disks: pod.hotplug ? 'hotplug' : 'slot pair', members: pod.memberCount });
    return { podId, pod, vm: sandbox, image: slots.image, writable: slots.writable, leave };
  } catch (err) {
    await registry.leave(podId, id);
    throw err;
  }
}
