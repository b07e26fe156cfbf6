// Where smolvm keeps state (per running VM/container), per-VM data and caches (kernels, images,
// initramfs, templates). SMOLVM_ROOT moves all of them, for tests.
//
//   <stateDir>/vms/<vmId>/   small state only: sockets, pids, the VMM's exit record
//                            (/run/smolvm is a tmpfs on real hosts: every byte there is host RAM)
//   <cacheDir>/vms/<vmId>/   what grows with the guest: writable disks, slot files, console
//                            and VMM logs (on disk; created and removed with the VM)
import * as path from 'node:path';

export interface Paths {
  /** Runtime state: sockets, state files, pids. Small; gone after reboot (a tmpfs). */
  readonly stateDir: string;
  /** On disk: caches keyed by their inputs (kernels, guest images, initramfs, templates) and
   *  per-VM data under vms/ (vmDataDir). */
  readonly cacheDir: string;
}

export function smolvmPaths(env: NodeJS.ProcessEnv = process.env): Paths {
  const root = env.SMOLVM_ROOT;
  if (root) {
    return { stateDir: path.join(root, 'run'), cacheDir: path.join(root, 'lib') };
  }
  return { stateDir: '/run/smolvm', cacheDir: '/var/lib/smolvm' };
}

/** Where every VM's data directory lives: `<cacheDir>/vms`. */
export function vmDataRoot(paths: Paths): string {
  return path.join(paths.cacheDir, 'vms');
}

/** A VM's data directory: its writable disks, slot files and logs (see the top of this file). */
export function vmDataDir(paths: Paths, vmId: string): string {
  return path.join(vmDataRoot(paths), vmId);
}

/**
 * `dir` resolved, when it lies strictly below `root` (never `root` itself, never outside it
 * through `..`); else null. For removals that work from paths read back from disk.
 */
export function pathBelow(root: string, dir: unknown): string | null {
  if (typeof dir !== 'string' || dir === '') return null;
  const resolved = path.resolve(dir);
  const prefix = path.resolve(root) + path.sep;
  return resolved.startsWith(prefix) && resolved.length > prefix.length ? resolved : null;
}

/**
 * A VM data dir read back from disk (a state file, a pool entry), resolved, when it is a
 * direct child of this data root; else null: removals never follow a path elsewhere.
 */
export function recordedVmDataDir(paths: Paths, recorded: unknown): string | null {
  const dir = pathBelow(vmDataRoot(paths), recorded);
  return dir !== null && path.dirname(dir) === path.resolve(vmDataRoot(paths)) ? dir : null;
}

/** The repository root (bin/, rootfs-builder/ ...), from this compiled file's location. */
export function repoRoot(): string {
  // dist/shim/src/config/paths.js -> repo root is four levels up.
  return path.resolve(__dirname, '..', '..', '..', '..');
}
