// Guest images: a container's rootfs as a content-addressed, read-only erofs image, and the
// per-container writable ext4 disk that the guest overlays on it.
export type { RootfsSource, ResolvedSource } from './source';
export { resolveSource } from './source';
export type { GuestImage, EnsureImageOptions } from './ensure';
export { ensureImage } from './ensure';
export type { WritableDiskOptions } from './disk';
export { createWritableDisk, rewriteWritableDisk, MIN_DISK_BYTES, MAX_DISK_BYTES } from './disk';
