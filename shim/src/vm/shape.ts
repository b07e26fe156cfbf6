// What a VM is made of: the one description that a cold boot and a restore both start from
// (Firecracker's VmResources) and that a template is keyed by. Everything a container brings
// (its image, its writable disk, its host directories) reaches a VM later, behind the shape's
// slots; nothing of it is in the shape, so one template serves every container of a shape.

/** What a backend can give a VM (Backend has these): the shapes below depend on it. */
export interface BackendDevices {
  /** A shared directory device in every VM. */
  readonly supportsDirShares: boolean;
  /** Disks come and go while a VM runs (a hotplug controller). */
  readonly hotplugDisks?: boolean;
  /** Most disk slots one VM can have. */
  readonly maxDiskSlots: number;
}

/** A virtio-blk slot the VM boots with: the guest finds it by serial. */
export interface DiskSlotShape {
  serial: string;
  readOnly: boolean;
}

/** A network interface slot (the pod's NICs: issue 11). None yet. */
export interface NicShape {
  /** The guest's name for it. */
  name: string;
}

/** A shared host directory device: the guest mounts it by its tag. */
export interface ShareShape {
  tag: string;
}

/** How the VMM is confined (issue 14). Nothing yet: the VMM runs as the shim does. */
export type JailShape = Record<string, never>;

export interface VmShape {
  memoryMiB: number;
  vcpus: number;
  /** Disk slots fixed at boot, in order (files come behind them at start). */
  disks: DiskSlotShape[];
  /** A disk hotplug controller (Backend.hotplugDisks): disks come and go while it runs. */
  diskHotplug: boolean;
  nics: NicShape[];
  shares: ShareShape[];
  jail: JailShape;
}

/** The tag of the VM's one shared directory device (the guest agent mounts it by this tag). */
export const SHARE_MOUNT_TAG = 'smolvm';

/** Slot serials of a VM of one container: its image and its writable layer. */
export const IMAGE_SLOT = 'slot0';
export const WRITABLE_SLOT = 'slot1';

/** The devices every VM of this backend has besides its disks. */
function commonDevices(backend: BackendDevices): Pick<VmShape, 'nics' | 'shares' | 'jail'> {
  return { nics: [], shares: backend.supportsDirShares ? [{ tag: SHARE_MOUNT_TAG }] : [], jail: {} };
}

/** A VM of one container: its image and its writable disk in two fixed slots. */
export function containerVmShape(backend: BackendDevices, memoryMiB: number, vcpus: number): VmShape {
  return {
    memoryMiB, vcpus, diskHotplug: false, ...commonDevices(backend),
    disks: [{ serial: IMAGE_SLOT, readOnly: true }, { serial: WRITABLE_SLOT, readOnly: false }],
  };
}

/** Containers a pod VM of this backend can hold: two disk slots each, unless it hot-plugs. */
export function podCapacity(backend: BackendDevices, requested: number): number {
  if (backend.hotplugDisks) return Math.max(1, requested);
  return Math.max(1, Math.min(requested, Math.floor(backend.maxDiskSlots / 2)));
}

/**
 * A pod's VM (also a warm spare's, an early VM's): no disk and a hotplug controller where the
 * backend hot-plugs (tcg), else `capacity` pairs of slots (an image's, a writable disk's),
 * refilled in place as containers come and go (kvm: virtio-mmio has no hotplug).
 */
export function podVmShape(backend: BackendDevices, memoryMiB: number, vcpus: number, maxContainers: number): VmShape {
  const disks: DiskSlotShape[] = [];
  if (!backend.hotplugDisks) {
    for (let i = 0; i < podCapacity(backend, maxContainers) * 2; i++) disks.push({ serial: `slot${i}`, readOnly: i % 2 === 0 });
  }
  return { memoryMiB, vcpus, disks, diskHotplug: backend.hotplugDisks === true, ...commonDevices(backend) };
}

/** The shape's canonical text (fixed key order): template keys and families hash it. */
export function canonicalShape(shape: VmShape): string {
  return JSON.stringify([
    shape.memoryMiB, shape.vcpus, shape.disks.map((d) => [d.serial, d.readOnly]), shape.diskHotplug,
    shape.nics.map((n) => n.name), shape.shares.map((s) => s.tag), Object.entries(shape.jail).sort(),
  ]);
}
