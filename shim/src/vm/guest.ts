// The generic guest every VM boots: kernel, command line and initramfs. The same for every
// container (nothing about a container goes on the command line), so a VM can later be
// restored from a template instead of booted.
import { cachedKernel, type KernelArtifact } from '../../../rootfs-builder/kernel/build';
import { ensureInitramfs } from '../../../rootfs-builder/initramfs/build';

/** Kernel command line for every guest. QEMU (acpi=off) appends the virtio-mmio devices.
 *  reboot=t: a triple fault resets at once (microvm has no keyboard controller to wait for). */
export const GUEST_CMDLINE = 'console=ttyS0 reboot=t panic=-1 quiet';

export interface GuestArtifacts {
  kernel: KernelArtifact;
  initramfs: string;
  cmdline: string;
}

/** The shared default cache also serves kernels to runs with their own SMOLVM_ROOT (tests). */
const DEFAULT_CACHE = '/var/lib/smolvm';

export async function guestArtifacts(cacheDir: string): Promise<GuestArtifacts> {
  const kernel = cachedKernel(cacheDir) ?? (cacheDir !== DEFAULT_CACHE ? cachedKernel(DEFAULT_CACHE) : null);
  if (!kernel) {
    throw new Error(`no guest kernel in ${cacheDir}/kernels: run \`smolvm kernel build\` first`);
  }
  const initramfs = await ensureInitramfs({ cacheDir });
  return { kernel, initramfs: initramfs.path, cmdline: GUEST_CMDLINE };
}
