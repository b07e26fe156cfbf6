// The size of a container's writable disk: the most it can write (overlay upper dir on a
// sparse ext4 in the VM's data dir; a full disk is ENOSPC in the guest, never more on the
// host). The config's writable_disk_mib, or the container's own annotation, up to the config's
// writable_disk_max_mib.
import { DEFAULT_CONFIG, MIN_WRITABLE_DISK_MIB } from '../config/config';
import { invalidArgument } from '../errdefs';

/** The OCI annotation a container sets to ask for another writable disk size, in MiB. */
export const WRITABLE_DISK_ANNOTATION = 'io.smolvm.writable-disk-mib';

const MiB = 1024 * 1024;

export interface WritableDiskSizing {
  /** The size when the container asks for none (config writable_disk_mib), in bytes. */
  defaultBytes: number;
  /** The largest the annotation may ask for (config writable_disk_max_mib), in bytes. */
  maxBytes?: number;
}

/**
 * The writable disk's size for a container with these annotations. A value that is not a
 * plain decimal number of MiB within MIN_WRITABLE_DISK_MIB..max is InvalidArgument naming
 * the annotation (checked before any VM exists).
 */
export function writableDiskBytes(annotations: Record<string, string> | undefined, sizing: WritableDiskSizing, what: string): number {
  const raw = annotations?.[WRITABLE_DISK_ANNOTATION];
  if (raw === undefined) return sizing.defaultBytes;
  const maxMiB = Math.floor((sizing.maxBytes ?? Math.max(sizing.defaultBytes, DEFAULT_CONFIG.writableDiskMaxMiB * MiB)) / MiB);
  const bad = (why: string): Error =>
    invalidArgument(`${what}: annotation ${WRITABLE_DISK_ANNOTATION}=${JSON.stringify(raw.slice(0, 40))}: ${why}`);
  if (typeof raw !== 'string' || !/^[0-9]{1,12}$/.test(raw)) throw bad('must be a whole number of MiB');
  const mib = Number(raw);
  if (mib < MIN_WRITABLE_DISK_MIB || mib > maxMiB) {
    throw bad(`must be from ${MIN_WRITABLE_DISK_MIB} to ${maxMiB} MiB (config writable_disk_max_mib)`);
  }
  return mib * MiB;
}
