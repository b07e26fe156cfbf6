// A pod's VM: one Vm shared by the containers of a Kubernetes pod. Each container needs
// two disks (its image, its writable layer); how they reach the running VM depends on the
// backend:
// - hotplug (Backend.hotplugDisks: tcg's virtio-scsi): the VM boots with no disk at all and a
//   joining container's disks are hot-added (VmInstance.attachDisk): the content-addressed
//   erofs image from the cache read-only as it is, a fresh sparse ext4 file in the VM's data
//   dir (on disk); removed again (detachDisk) when it leaves. Only pod_max_containers caps the pod.
// - slot pairs (virtio-mmio has no hotplug: kvm): the VM boots with a fixed number of disk slot
//   pairs behind empty placeholder files (in the VM's data dir). A joining container takes a free pair: its image and
//   a fresh ext4 disk are written into the pair's files in place, the VMM is told the sizes
//   changed (VmInstance.refreshSlot), and the agent mounts them once the guest sees those sizes
//   (DiskSlot.size_bytes).
// Either way the writable disk has the size the container asked for (its annotation, else the
// config's): it is the most the container can write. The VM lives as long as one of its
// containers.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createWritableDisk, rewriteWritableDisk } from '../image';
import { Code, RpcError, unavailable } from '../errdefs';
import type { Logger } from '../log';
import type { DiskSlot, Vmm } from './backend';
import type { VmBuilder } from './builder';
import type { VmmCgroup } from './host-cgroup';
import { podCapacity, type VmShape } from './shape';
import type { Vm, VmDirs } from './vm';
import { copyIntoSlot, createPlaceholder, emptySlotFile } from './slot-files';

/** A slot as the agent's CreateContainer names it: the serial and the size to wait for. */
export interface FilledSlot {
  serial: string;
  sizeBytes: number;
}

/** One pod VM to start (PodVm.start). */
export interface PodVmRequest {
  podId: string;
  /** A pod shape (shape.ts podVmShape): no disk and hotplug, or slot pairs. */
  shape: VmShape;
  /** Containers it may hold (pod_max_containers; slot pairs cap it further). */
  maxContainers: number;
  log: Logger;
  /** As VmRequest.onVmm: the VMM exists, the guest has not run (the host cgroup goes here). */
  onVmm?: (vmm: Vmm, dirs: VmDirs) => void;
}

export interface PodContent {
  /** The container's guest image (erofs): hot-added as it is, or copied into a slot pair. */
  imagePath: string;
  writableDiskBytes: number;
  cacheDir: string;
}

interface SlotPair {
  image: DiskSlot;
  writable: DiskSlot;
  member: string | null;
  /** Order in which pairs were freed: the longest-free pair is reused first, so a slot
   *  the guest has just let go of (lazily unmounted) gets the most time to settle. */
  freedSeq: number;
}

/** What a member holds in hotplug mode: serials hot-added and files created for it. */
interface HotplugMember {
  attached: string[];
  ownFiles: string[];
}

export class PodVm {
  private readonly pairs: SlotPair[];
  private log: Logger;
  private freedCounter = 0;
  /** Hotplug mode: members (reserved or joined) and their disks. */
  private readonly hotplugMembers = new Map<string, HotplugMember>();
  /** Hotplug mode: disk serials are never reused within the VM (a removed disk may linger in
   *  the guest for a moment under its old serial). */
  private diskSeq = 0;
  private destroying: Promise<void> | null = null;
  private vmGone = false;
  /** Hotplug: a fresh writable disk attached ahead of time (a warm spare's) for the next member. */
  private readyWritable: { slot: DiskSlot; bytes: number } | null = null;
  /** The VMM's host cgroup (its first container's linux.cgroupsPath), removed after the VM. */
  private cgroup: VmmCgroup | null = null;

  private constructor(
    readonly podId: string,
    readonly vm: Vm,
    private readonly maxDiskSlots: number,
    private readonly backendName: string,
    private readonly hotplugCapacity: number | null,
    log: Logger,
  ) {
    this.log = log;
    this.pairs = [];
    for (let i = 0; i + 1 < vm.slots.length; i += 2) {
      this.pairs.push({ image: vm.slots[i]!, writable: vm.slots[i + 1]!, member: null, freedSeq: 0 });
    }
    void vm.vmm.exited.then(() => { this.vmGone = true; });
  }

  /** The host cgroup directories smolvm made for the VMM (recorded in state files). */
  get hostCgroupDirs(): string[] {
    return this.cgroup?.createdDirs ?? [];
  }

  /**
   * The VMM's host cgroup: placed by whoever made or adopted the VM (placement.ts), removed
   * once the VM is gone. A VM booted for nobody in particular (a warm spare's) gets the
   * cgroup and the logs of the container that takes it.
   */
  placedIn(cgroup: VmmCgroup, log?: Logger): void {
    this.cgroup = cgroup;
    if (log) this.log = log;
  }

  /** Whether this VM's disks are hot-plugged (else slot pairs). */
  get hotplug(): boolean {
    return this.hotplugCapacity !== null;
  }

  /** Builds a pod's VM (builder.ts): slot pairs behind empty placeholder files, or no disk. */
  static async start(builder: VmBuilder, req: PodVmRequest): Promise<PodVm> {
    const log = req.log.child({ pod: req.podId });
    const vm = await builder.start({
      shape: req.shape, log, onVmm: req.onVmm,
      slotFiles: async (dirs) => req.shape.disks.map((_disk, i) => {
        const file = path.join(dirs.dataDir, `slot${i}.disk`);
        createPlaceholder(file);
        return file;
      }),
    });
    const hotplugCapacity = req.shape.diskHotplug ? podCapacity(builder.backend, req.maxContainers) : null;
    const pod = new PodVm(req.podId, vm, builder.backend.maxDiskSlots, builder.backend.name, hotplugCapacity, log);
    log.info('pod vm ready', { containers_max: pod.capacity, disks: pod.hotplug ? 'hotplug' : 'slot pairs', pid: vm.vmm.identity.pid });
    return pod;
  }

  get capacity(): number {
    return this.hotplugCapacity ?? this.pairs.length;
  }

  get memberCount(): number {
    if (this.hotplug) return this.hotplugMembers.size;
    return this.pairs.filter((p) => p.member !== null).length;
  }

  /** False once the VMM has exited, the VM is declared lost, or it is being torn down. */
  get alive(): boolean {
    return !this.vmGone && !this.destroying && !this.vm.lost;
  }

  /**
   * Takes a place for `member`: a free slot pair, or (hotplug) one of pod_max_containers
   * (synchronously, so concurrent joins never share one).
   * A full pod: ResourceExhausted naming the limit; a dead VM: Unavailable.
   */
  reserve(member: string): void {
    if (!this.alive) throw unavailable(`pod ${this.podId}: its VM is gone; delete the pod's containers and create it again`);
    if (this.pairs.some((p) => p.member === member) || this.hotplugMembers.has(member)) {
      throw new RpcError(Code.AlreadyExists, `pod ${this.podId}: container ${member} is already in it`);
    }
    if (this.hotplugCapacity !== null) {
      if (this.hotplugMembers.size >= this.hotplugCapacity) {
        throw new RpcError(Code.ResourceExhausted, `pod ${this.podId} is full: its VM holds ${this.hotplugCapacity} containers (pod_max_containers)`);
      }
      this.hotplugMembers.set(member, { attached: [], ownFiles: [] });
      return;
    }
    const free = this.pairs.filter((p) => p.member === null).sort((a, b) => a.freedSeq - b.freedSeq)[0];
    if (!free) {
      throw new RpcError(Code.ResourceExhausted, `pod ${this.podId} is full: its VM holds ${this.pairs.length} containers (pod_max_containers, capped at ${Math.floor(this.maxDiskSlots / 2)} by the ${this.backendName} backend's ${this.maxDiskSlots} disk slots)`);
    }
    free.member = member;
  }

  /**
   * Gets the member's image and a fresh writable disk into the VM: hot-added (see attach), or
   * written into its pair's files (in place) with the VMM told their sizes. Returns the disks
   * for the agent's CreateContainer.
   */
  async fill(member: string, content: PodContent): Promise<{ image: FilledSlot; writable: FilledSlot }> {
    if (this.hotplug) return this.attach(member, content);
    const pair = this.pairOf(member);
    const [imageBytes] = await Promise.all([
      copyIntoSlot(pair.image.path, content.imagePath),
      rewriteWritableDisk(pair.writable.path, content.writableDiskBytes, { cacheDir: content.cacheDir }),
    ]);
    await this.vm.vmm.refreshSlot(pair.image.serial);
    await this.vm.vmm.refreshSlot(pair.writable.serial);
    return {
      image: { serial: pair.image.serial, sizeBytes: imageBytes },
      writable: { serial: pair.writable.serial, sizeBytes: content.writableDiskBytes },
    };
  }

  /**
   * Gives the member's disks back (after the agent removed the container: its disks are
   * unmounted): hot-removed and its writable file deleted, or its pair's files emptied. The VM stays: the registry destroys it when the pod
   * has no member left.
   */
  async release(member: string): Promise<void> {
    if (this.hotplug) return this.detach(member);
    const pair = this.pairs.find((p) => p.member === member);
    if (!pair) return;
    pair.member = null;
    pair.freedSeq = ++this.freedCounter;
    if (!this.alive) return;
    // The guest no longer reads them; give the blocks back to the host now.
    await Promise.all([emptySlotFile(pair.image.path), emptySlotFile(pair.writable.path)]).catch((err: unknown) => {
      this.log.warn('could not empty a freed pod slot', { pod: this.podId, error: String(err) });
    });
  }

  /**
   * Hotplug: makes and attaches the next member's writable disk now (a warm spare does this
   * while it waits), so that a Create only hot-adds its image. A no-op for slot pairs.
   */
  async prepareWritable(bytes: number, cacheDir: string): Promise<void> {
    const vm = this.vm.vmm;
    if (!this.hotplug || this.readyWritable || !vm.attachDisk) return;
    const n = this.diskSeq++;
    const slot: DiskSlot = { serial: `pod${n}-rw`, path: path.join(this.vm.dataDir, `pod${n}-rw.ext4`), readOnly: false };
    await createWritableDisk(slot.path, bytes, { cacheDir });
    await vm.attachDisk(slot);
    this.readyWritable = { slot, bytes };
  }

  /**
   * Hotplug: the image hot-added read-only as it is (no copy), a fresh sparse ext4 file in the
   * VM's data dir hot-added writable. Fresh devices: the agent mounts them as soon as it finds them
   * (size 0: no capacity change to wait for). On a failure what was attached stays recorded
   * and `release` (which the caller always runs) takes it away.
   */
  private async attach(member: string, content: PodContent): Promise<{ image: FilledSlot; writable: FilledSlot }> {
    const disks = this.hotplugMembers.get(member);
    if (!disks) throw new Error(`pod ${this.podId}: container ${member} holds no place in the VM`);
    const vm = this.vm.vmm;
    if (!vm.attachDisk || !vm.detachDisk) throw new Error(`pod ${this.podId}: the ${vm.backend} VM cannot hot-add disks`);
    const n = this.diskSeq++;
    const image: DiskSlot = { serial: `pod${n}-img`, path: content.imagePath, readOnly: true };
    const ready = this.readyWritable?.bytes === content.writableDiskBytes ? this.readyWritable : null;
    // Made ahead with the config's size, but this container asked for another (its annotation):
    // it gets a disk of its own size; the one made ahead is of no use to anyone, it goes.
    if (!ready) await this.discardReadyWritable();
    if (ready) {
      // Made and attached before this container came (prepareWritable): it is this member's now.
      this.readyWritable = null;
      disks.ownFiles.push(ready.slot.path);
      disks.attached.push(ready.slot.serial);
      await vm.attachDisk(image);
      disks.attached.push(image.serial);
      return { image: { serial: image.serial, sizeBytes: 0 }, writable: { serial: ready.slot.serial, sizeBytes: 0 } };
    }
    const writable: DiskSlot = { serial: `pod${n}-rw`, path: path.join(this.vm.dataDir, `pod${n}-rw.ext4`), readOnly: false };
    await createWritableDisk(writable.path, content.writableDiskBytes, { cacheDir: content.cacheDir });
    disks.ownFiles.push(writable.path);
    await vm.attachDisk(writable);
    disks.attached.push(writable.serial);
    await vm.attachDisk(image);
    disks.attached.push(image.serial);
    return { image: { serial: image.serial, sizeBytes: 0 }, writable: { serial: writable.serial, sizeBytes: 0 } };
  }

  /** Hotplug: detaches and removes the writable disk made ahead (prepareWritable), if any. */
  private async discardReadyWritable(): Promise<void> {
    const ready = this.readyWritable;
    if (!ready) return;
    this.readyWritable = null;
    try {
      await this.vm.vmm.detachDisk?.(ready.slot.serial);
      await fs.promises.rm(ready.slot.path, { force: true });
    } catch (err) {
      // Still attached: it goes with the VM's data dir.
      this.log.warn('could not remove an unused writable disk', { pod: this.podId, serial: ready.slot.serial, error: String(err) });
    }
  }

  /** Hotplug: removes the member's disks from the VM and its writable file. */
  private async detach(member: string): Promise<void> {
    const disks = this.hotplugMembers.get(member);
    if (!disks) return;
    this.hotplugMembers.delete(member);
    const vm = this.vm.vmm;
    for (const serial of [...disks.attached].reverse()) {
      if (!this.alive || !vm.detachDisk) break;
      try {
        await vm.detachDisk(serial);
      } catch (err) {
        // QEMU may still hold the file: the VM's end closes it.
        this.log.warn('could not hot-remove a pod disk', { pod: this.podId, member, serial, error: String(err) });
      }
    }
    // Only files made for this member (never the shared image). Unlinking one QEMU still holds
    // open is harmless: its blocks go when QEMU closes it.
    for (const file of disks.ownFiles) {
      await fs.promises.rm(file, { force: true }).catch((err: unknown) => {
        this.log.warn('could not remove a pod writable disk', { pod: this.podId, member, file, error: String(err) });
      });
    }
  }

  /** Stops the VM, frees its files, then its host cgroup (only an empty one goes). Idempotent. */
  destroy(): Promise<void> {
    if (!this.destroying) {
      this.destroying = (async () => {
        await this.vm.destroy();
        await this.cgroup?.release(this.log);
      })();
    }
    return this.destroying;
  }

  private pairOf(member: string): SlotPair {
    const pair = this.pairs.find((p) => p.member === member);
    if (!pair) throw new Error(`pod ${this.podId}: container ${member} holds no slot pair`);
    return pair;
  }
}
