// A pod's VM: one Sandbox shared by the containers of a Kubernetes pod. virtio-mmio has no
// hotplug, so the VM boots with a fixed number of disk slot pairs (image + writable layer per
// container) behind empty placeholder files. A container joining the pod takes a free pair:
// its erofs image and a fresh ext4 disk are written into the pair's files in place, the VMM is
// told the sizes changed (VmInstance.refreshSlot), and the agent mounts them once the guest
// sees those sizes (DiskSlot.size_bytes). The VM lives as long as one of its containers.
import * as path from 'node:path';
import { rewriteWritableDisk } from '../../../rootfs-builder/image';
import type { Paths } from '../config/paths';
import { Code, RpcError, unavailable } from '../errdefs';
import type { Logger } from '../log';
import type { Backend, DiskSlot, VmInstance } from './backend';
import { Sandbox } from './sandbox';
import { copyIntoSlot, createPlaceholder, emptySlotFile } from './slot-files';

/** A slot as the agent's CreateContainer names it: the serial and the size to wait for. */
export interface FilledSlot {
  serial: string;
  sizeBytes: number;
}

export interface PodBootOptions {
  sandboxId: string;
  backend: Backend;
  paths: Paths;
  memoryMiB: number;
  vcpus: number;
  /** Containers the VM can hold (pod_max_containers), capped by the backend's disk slots. */
  maxContainers: number;
  log: Logger;
  bootTimeoutMs?: number;
  /** As Sandbox's: the VMM exists, the guest has not run (the host cgroup goes here). */
  onVmStarted?: (vm: VmInstance, vmDir: string) => void;
  /** After the VM is gone for good (the host cgroup is removed here). */
  onDestroyed?: () => Promise<void>;
}

export interface PodContent {
  /** The container's guest image (erofs), copied into the pair's image slot. */
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

/** Containers a pod VM of this backend can hold, two disk slots each. */
export function podCapacity(backend: Backend, requested: number): number {
  return Math.max(1, Math.min(requested, Math.floor(backend.maxDiskSlots / 2)));
}

export class PodVm {
  private readonly pairs: SlotPair[];
  private freedCounter = 0;
  private destroying: Promise<void> | null = null;
  private vmGone = false;

  private constructor(
    readonly sandboxId: string,
    readonly sandbox: Sandbox,
    slots: DiskSlot[],
    private readonly opts: PodBootOptions,
  ) {
    this.pairs = [];
    for (let i = 0; i + 1 < slots.length; i += 2) {
      this.pairs.push({ image: slots[i]!, writable: slots[i + 1]!, member: null, freedSeq: 0 });
    }
    void sandbox.vm.exited.then(() => { this.vmGone = true; });
  }

  static async boot(opts: PodBootOptions): Promise<PodVm> {
    const capacity = podCapacity(opts.backend, opts.maxContainers);
    const log = opts.log.child({ pod: opts.sandboxId });
    let vmDirSeen = '';
    const sandbox = await Sandbox.boot({
      backend: opts.backend,
      paths: opts.paths,
      memoryMiB: opts.memoryMiB,
      vcpus: opts.vcpus,
      log,
      bootTimeoutMs: opts.bootTimeoutMs,
      prepareSlots: async (vmDir: string): Promise<DiskSlot[]> => {
        vmDirSeen = vmDir;
        const slots: DiskSlot[] = [];
        for (let i = 0; i < capacity * 2; i++) {
          const file = path.join(vmDir, `slot${i}.disk`);
          createPlaceholder(file);
          slots.push({ serial: `slot${i}`, path: file, readOnly: i % 2 === 0 });
        }
        return slots;
      },
      onVmStarted: (vm) => opts.onVmStarted?.(vm, vmDirSeen),
    });
    log.info('pod vm ready', { containers_max: capacity, pid: sandbox.vm.identity.pid });
    return new PodVm(opts.sandboxId, sandbox, sandbox.slots, opts);
  }

  get capacity(): number {
    return this.pairs.length;
  }

  get memberCount(): number {
    return this.pairs.filter((p) => p.member !== null).length;
  }

  /** False once the VMM has exited or the VM is being torn down. */
  get alive(): boolean {
    return !this.vmGone && !this.destroying;
  }

  /**
   * Takes a free slot pair for `member` (synchronously, so concurrent joins never share one).
   * A full pod: ResourceExhausted naming the limit; a dead VM: Unavailable.
   */
  reserve(member: string): void {
    if (!this.alive) throw unavailable(`pod ${this.sandboxId}: its VM is gone; delete the pod's containers and create it again`);
    if (this.pairs.some((p) => p.member === member)) throw new RpcError(Code.AlreadyExists, `pod ${this.sandboxId}: container ${member} is already in it`);
    const free = this.pairs.filter((p) => p.member === null).sort((a, b) => a.freedSeq - b.freedSeq)[0];
    if (!free) {
      throw new RpcError(Code.ResourceExhausted, `pod ${this.sandboxId} is full: its VM holds ${this.pairs.length} containers (pod_max_containers, capped at ${Math.floor(this.opts.backend.maxDiskSlots / 2)} by the ${this.opts.backend.name} backend's ${this.opts.backend.maxDiskSlots} disk slots)`);
    }
    free.member = member;
  }

  /**
   * Writes the member's image and a fresh writable disk into its pair's files (in place) and
   * makes the VMM take their sizes. Returns the slots for the agent's CreateContainer.
   */
  async fill(member: string, content: PodContent): Promise<{ image: FilledSlot; writable: FilledSlot }> {
    const pair = this.pairOf(member);
    const [imageBytes] = await Promise.all([
      copyIntoSlot(pair.image.path, content.imagePath),
      rewriteWritableDisk(pair.writable.path, content.writableDiskBytes, { cacheDir: content.cacheDir }),
    ]);
    await this.sandbox.vm.refreshSlot(pair.image.serial);
    await this.sandbox.vm.refreshSlot(pair.writable.serial);
    return {
      image: { serial: pair.image.serial, sizeBytes: imageBytes },
      writable: { serial: pair.writable.serial, sizeBytes: content.writableDiskBytes },
    };
  }

  /**
   * Gives the member's pair back (after the agent removed the container: its disks are
   * unmounted) and empties its files. The VM stays: the registry destroys it when the pod
   * has no member left.
   */
  async release(member: string): Promise<void> {
    const pair = this.pairs.find((p) => p.member === member);
    if (!pair) return;
    pair.member = null;
    pair.freedSeq = ++this.freedCounter;
    if (!this.alive) return;
    // The guest no longer reads them; give the blocks back to the host now.
    await Promise.all([emptySlotFile(pair.image.path), emptySlotFile(pair.writable.path)]).catch((err: unknown) => {
      this.opts.log.warn('could not empty a freed pod slot', { pod: this.sandboxId, error: String(err) });
    });
  }

  /** Stops the VM, frees its files, runs onDestroyed. Idempotent. */
  destroy(): Promise<void> {
    if (!this.destroying) {
      this.destroying = (async () => {
        await this.sandbox.destroy();
        await this.opts.onDestroyed?.();
      })();
    }
    return this.destroying;
  }

  private pairOf(member: string): SlotPair {
    const pair = this.pairs.find((p) => p.member === member);
    if (!pair) throw new Error(`pod ${this.sandboxId}: container ${member} holds no slot pair`);
    return pair;
  }
}
