// What a guest root can do at the root of a VM's 9p share, and the host mounts behind it
// (shim/src/vm/host-mounts.ts), for the share and pod tests.
import * as fs from 'node:fs';

/** The guest's 9p mount tag of the share (host-mounts.ts SHARE_MOUNT_TAG). */
const SHARE_TAG = 'smolvm';

/**
 * A shell script a guest root runs: mounts the VM's share itself (a privileged container; the
 * agent mounts it only once a container has a host directory, and one virtio-9p channel takes
 * one mount), then tries to write, mkdir, mknod, chmod u+s and symlink at its root; one line
 * per attempt, then unmounts (freeing the channel for the agent).
 */
export const SHARE_ROOT_PROBE = [
  `mkdir -p /mnt/share && mount -t 9p -o trans=virtio,version=9p2000.L ${SHARE_TAG} /mnt/share && echo mounted`,
  'echo x > /mnt/share/planted && echo write-ok || echo write-refused',
  'mkdir /mnt/share/dir && echo mkdir-ok || echo mkdir-refused',
  'mknod /mnt/share/null c 1 3 && echo mknod-ok || echo mknod-refused',
  'chmod u+s /mnt/share && echo chmod-ok || echo chmod-refused',
  'ln -s /etc /mnt/share/etc && echo symlink-ok || echo symlink-refused',
  'umount /mnt/share && echo unmounted',
].join('; ');
export const SHARE_ROOT_REFUSED = ['mounted', 'write-refused', 'mkdir-refused', 'mknod-refused', 'chmod-refused', 'symlink-refused', 'unmounted'];

/** The flags that matter of the mount at `point` (the top one), from /proc/self/mountinfo. */
export function hostMountFlags(point: string): string[] | null {
  let options: string[] | null = null;
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const fields = line.split(' ');
    if (fields[4] === point) options = (fields[5] ?? '').split(',');
  }
  if (!options) return null;
  return [options.includes('ro') ? 'ro' : 'rw', ...['nosuid', 'nodev'].filter((o) => options!.includes(o))];
}

/** The mounts every VM with a 9p share holds for its whole life: the export and its work tmpfs. */
export function isShareExportMount(point: string): boolean {
  return /\/(shares|share-work)$/.test(point);
}
