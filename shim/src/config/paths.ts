// Where smolvm keeps state (per running VM/container) and caches (kernels, images,
// initramfs, later snapshots). SMOLVM_ROOT moves both, for tests.
import * as path from 'node:path';

export interface Paths {
  /** Runtime state: sockets, state files, per-container disks. Gone after reboot. */
  readonly stateDir: string;
  /** Caches keyed by their inputs: kernels, guest images, initramfs. */
  readonly cacheDir: string;
}

export function smolvmPaths(env: NodeJS.ProcessEnv = process.env): Paths {
  const root = env.SMOLVM_ROOT;
  if (root) {
    return { stateDir: path.join(root, 'run'), cacheDir: path.join(root, 'lib') };
  }
  return { stateDir: '/run/smolvm', cacheDir: '/var/lib/smolvm' };
}

/** The repository root (bin/, rootfs-builder/ ...), from this compiled file's location. */
export function repoRoot(): string {
  // dist/shim/src/config/paths.js -> repo root is four levels up.
  return path.resolve(__dirname, '..', '..', '..', '..');
}
