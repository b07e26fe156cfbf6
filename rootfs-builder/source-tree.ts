// Where rootfs-builder's own inputs live (the kernel config, the built agent): the source tree,
// found from this compiled file (dist/rootfs-builder/source-tree.js). rootfs-builder builds what
// the guest runs and imports nothing of the shim, which uses it.
import * as path from 'node:path';

/** The repository's root directory. */
export function sourceTree(): string {
  return path.resolve(__dirname, '..', '..');
}

/** A path under rootfs-builder/ in the source tree. */
export function builderPath(...parts: string[]): string {
  return path.join(sourceTree(), 'rootfs-builder', ...parts);
}
