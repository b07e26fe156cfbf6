// Where a container's VM comes from: the one place that decides it. A container of a pod
// joins the pod's VM (its first container brings it: a warm VM when one fits, else a new
// one); a container without a pod takes a warm VM when one fits, else gets a VM of its own.
// A new VM is built from its shape (builder.ts: a template restore or a cold boot); a warm VM
// was built before the container came (a pool spare's, pool/spare.ts, or the daemon's early
// VM, pool/early-vm.ts). Here too: the VMM's host cgroup (the container's
// linux.cgroupsPath) and recording the VM in the container's state file as soon as its VMM
// exists, so that `delete` finds it should the daemon die. The container then only lives in
// the guest (task/container.ts), on the disks its placement names, and gives it back.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createWritableDisk, type GuestImage } from '../image';
import { Code, RpcError } from '../errdefs';
import type { Logger } from '../log';
import type { VmRecord } from '../state/store';
import type { Vmm } from './backend';
import type { VmBuilder } from './builder';
import { VmmCgroup } from './host-cgroup';
import { PodVm, type FilledSlot } from './pod-vm';
import { PodRegistry } from './pods';
import { containerVmShape, IMAGE_SLOT, podVmShape, WRITABLE_SLOT } from './shape';
import type { Vm, VmDirs } from './vm';

/** A VM started before its container came (a pool spare's, or one the daemon started with):
 *  a placement takes it at most once. */
export interface WarmVmSource {
  /** The VM (once it is up) when it has this memory and vCPU count and lives; null otherwise. */
  take(memoryMiB: number, vcpus: number): Promise<PodVm | null>;
}

export interface PlacementRequest {
  containerId: string;
  /** CRI's pod (io.kubernetes.cri.sandbox-id) the container belongs to, or null. */
  podId: string | null;
  /** What the container's VM needs (config, sized by the container's memory limit). */
  memoryMiB: number;
  vcpus: number;
  /** The container's guest image (built while the VM starts). */
  image: Promise<GuestImage>;
  /** The container's writable disk: the most it can write. */
  writableDiskBytes: number;
  /** The container's linux.cgroupsPath, resolved: the VMM's host cgroup when the VM is new. */
  cgroupPath: string | null;
  log: Logger;
  /** Records the VM in the container's state file: called as soon as its VMM exists. */
  record: (vm: VmRecord) => void;
}

export interface Placement {
  readonly vm: Vm;
  /** The container's disks in the VM, as the agent's CreateContainer names them. */
  readonly image: FilledSlot;
  readonly writable: FilledSlot;
  /** The pod whose VM it is in, or null for a VM of its own. */
  readonly podId: string | null;
  /** Whether other containers run in the same VM now (a pod of more than this one). */
  readonly sharesVm: boolean;
  /**
   * Gives the VM back: a VM of its own is destroyed; from a pod's VM the container is taken
   * out of the guest (`removeFromGuest`, unless it was the last, whose leaving ends the VM at
   * once) and its disks out of the VM. The VMM's host cgroup goes with the VM. Idempotent.
   */
  release(removeFromGuest: () => Promise<void>): Promise<void>;
}

export interface VmPlacerOptions {
  /** Containers one pod VM holds (config pod_max_containers; the backend may cap it). */
  podMaxContainers: number;
  /** A VM started ahead (a spare's, an early one), for the first placement it fits. */
  warm?: WarmVmSource;
}

/** The VmRecord of a state file for `vm` (teardown by `delete` works from it alone). */
export function vmRecordOf(vmm: Vmm, dirs: VmDirs, hostCgroupDirs: string[]): VmRecord {
  return { backend: vmm.backend, vmm: vmm.identity, stateDir: dirs.dir, dataDir: dirs.dataDir, sockets: vmm.sockets, hostCgroupDirs };
}

export class VmPlacer {
  /** Pod VMs by pod id: the containers of a pod share one. */
  private readonly pods = new PodRegistry();

  constructor(readonly builder: VmBuilder, private readonly opts: VmPlacerOptions) {}

  /** Whether a pod has a VM (or one is starting). */
  hasPod(podId: string): boolean {
    return this.podMembers(podId) > 0;
  }

  /** Containers in (or joining) a pod's VM. */
  podMembers(podId: string): number {
    return this.pods.membersOf(podId);
  }

  /** Pods with a VM (or one starting). */
  get podCount(): number {
    return this.pods.size;
  }

  async place(req: PlacementRequest): Promise<Placement> {
    if (req.podId) {
      // A pod's first container (usually its sandbox) may bring a warm VM.
      const warm = this.hasPod(req.podId) ? null : await this.takeWarm(req);
      return this.joinPod(req, req.podId, warm);
    }
    const warm = await this.takeWarm(req);
    // A warm VM is pod-shaped: a container alone takes it as a pod of one.
    if (warm) return this.joinPod(req, `warm-${req.containerId}`, warm);
    return this.ownVm(req);
  }

  private async takeWarm(req: PlacementRequest): Promise<PodVm | null> {
    const warm = (await this.opts.warm?.take(req.memoryMiB, req.vcpus)) ?? null;
    if (warm) req.log.info('vm taken from the warm pool', { spare: warm.podId, restored_from: warm.vm.restoredFrom ?? 'cold boot', pid: warm.vm.vmm.identity.pid });
    return warm;
  }

  /** A VM of the container's own: its image and writable disk in two fixed slots. */
  private async ownVm(req: PlacementRequest): Promise<Placement> {
    const { builder } = this;
    const cgroup = new VmmCgroup(req.cgroupPath);
    let vm: Vm;
    try {
      vm = await builder.start({
        shape: containerVmShape(builder.backend, req.memoryMiB, req.vcpus),
        log: req.log,
        slotFiles: async (dirs) => {
          // On disk, in the VM's data dir: what the container writes is never host RAM.
          const writable = path.join(dirs.dataDir, 'writable.ext4');
          const [image] = await Promise.all([
            req.image,
            createWritableDisk(writable, req.writableDiskBytes, { cacheDir: builder.paths.cacheDir }),
          ]);
          return [image.path, writable];
        },
        onVmm: (vmm, dirs) => {
          // Before the guest runs anything, so that the host accounts and limits the whole VM.
          cgroup.place(vmm.identity.pid);
          req.record(vmRecordOf(vmm, dirs, cgroup.createdDirs));
        },
      });
    } catch (err) {
      await cgroup.release();
      throw err;
    }
    // The sizes let the agent wait for the capacity a template restore refreshes.
    const slotBytes = (serial: string): number => {
      const slot = vm.slots.find((s) => s.serial === serial);
      if (!slot) throw new RpcError(Code.Internal, `VM has no disk slot ${serial}`);
      return fs.statSync(slot.path).size;
    };
    let released: Promise<void> | null = null;
    return {
      vm, podId: null, sharesVm: false,
      image: { serial: IMAGE_SLOT, sizeBytes: slotBytes(IMAGE_SLOT) },
      writable: { serial: WRITABLE_SLOT, sizeBytes: slotBytes(WRITABLE_SLOT) },
      release: () => {
        released ??= (async () => {
          await vm.destroy();
          // After the VMM is gone: only an empty cgroup can be removed.
          await cgroup.release(req.log);
        })();
        return released;
      },
    };
  }

  /**
   * A place in the pod's VM: the pod's first container brings the VM (`warm`, else a new one
   * of the pod's shape); every container gets its image and a fresh writable disk into it.
   */
  private async joinPod(req: PlacementRequest, podId: string, warm: PodVm | null): Promise<Placement> {
    const { containerId: id, log } = req;
    let adopted = false;
    let pod: PodVm;
    try {
      pod = await this.pods.join(podId, id, async () => {
        adopted = warm !== null;
        return warm ? this.adopt(req, warm) : this.startPodVm(req, podId);
      });
    } finally {
      // Another container of the pod brought its VM first: the warm one is not needed.
      if (warm && !adopted) {
        log.info('warm vm not needed: the pod has its VM', { pod: podId });
        void warm.destroy();
      }
    }
    try {
      req.record(vmRecordOf(pod.vm.vmm, pod.vm, pod.hostCgroupDirs));
      const image = await req.image;
      const slots = await pod.fill(id, { imagePath: image.path, writableDiskBytes: req.writableDiskBytes, cacheDir: this.builder.paths.cacheDir });
      log.info('joined pod vm', { pod: podId, image_disk: slots.image.serial, writable_disk: slots.writable.serial, disks: pod.hotplug ? 'hotplug' : 'slot pair', members: pod.memberCount });
      let released: Promise<void> | null = null;
      const pods = this.pods;
      return {
        vm: pod.vm, podId, image: slots.image, writable: slots.writable,
        get sharesVm(): boolean { return pod.memberCount > 1; },
        release: (removeFromGuest) => {
          released ??= pods.leaveGuest(podId, id, async () => {
            if (pod.alive) await removeFromGuest();
          });
          return released;
        },
      };
    } catch (err) {
      await this.pods.leave(podId, id);
      throw err;
    }
  }

  /** A new pod VM; its VMM goes into the host cgroup of the container that brings it. */
  private async startPodVm(req: PlacementRequest, podId: string): Promise<PodVm> {
    const { builder } = this;
    const cgroup = new VmmCgroup(req.cgroupPath);
    try {
      const pod = await PodVm.start(builder, {
        podId, log: req.log, maxContainers: this.opts.podMaxContainers,
        shape: podVmShape(builder.backend, req.memoryMiB, req.vcpus, this.opts.podMaxContainers),
        onVmm: (vmm, dirs) => {
          // Before the guest runs: the host accounts and limits the whole pod VM. Recorded at
          // once: a daemon killed during the boot must not leak the VM.
          cgroup.place(vmm.identity.pid);
          req.record(vmRecordOf(vmm, dirs, cgroup.createdDirs));
        },
      });
      pod.placedIn(cgroup);
      return pod;
    } catch (err) {
      await cgroup.release();
      throw err;
    }
  }

  /** A warm VM becomes this pod's: into the container's host cgroup now (the pages it touched
   *  so far stay charged where they were), torn down as a new one would be. */
  private async adopt(req: PlacementRequest, warm: PodVm): Promise<PodVm> {
    const cgroup = new VmmCgroup(req.cgroupPath);
    warm.placedIn(cgroup, req.log);
    try {
      cgroup.place(warm.vm.vmm.identity.pid);
    } catch (err) {
      // Nobody else holds this VM: it goes with the failed Create (and the placement with it).
      await warm.destroy();
      throw err;
    }
    return warm;
  }
}
