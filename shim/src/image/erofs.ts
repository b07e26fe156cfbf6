// Conversion of a resolved rootfs into one erofs file with Debian's mkfs.erofs (erofs-utils).
//
// Several layers are merged with the kernel's own overlay semantics (whiteouts, opaque dirs)
// by mounting them read-only as an overlay and pointing mkfs.erofs at the mount. Both run in a
// private mount namespace (`unshare --mount`, util-linux) whose only process is mkfs.erofs:
// when it exits, for any reason, including our own death, the kernel drops the mount. No mount
// can leak into the host, and nothing needs unmounting. A single layer is read directly.
import * as path from 'node:path';
import { invalidArgument } from '../errdefs';
import type { ResolvedSource } from './source';
import { findTool, runTool, type Tool } from './tools';

/**
 * mkfs.erofs options, part of the cache key. Uncompressed: measured on this machine it builds
 * as fast as lz4 for small trees (busybox: ~20 ms vs ~30 ms; a 54 MB Python tree: 0.2-0.4 s for
 * both), needs no decompressor in the guest kernel (EROFS_FS_ZIP) and costs no guest CPU to
 * read, which matters most under TCG. mtimes, uid/gid, modes and xattrs are kept (the xattr
 * tolerance default, -x2, keeps them all).
 */
export const MKFS_EROFS_ARGS: readonly string[] = ['--quiet', '--preserve-mtime'];

/** mount(2) data is one page: stay well below it. */
const MAX_MOUNT_DATA = 3900;

/** Finds mkfs.erofs (FailedPrecondition naming erofs-utils when absent). */
export function findMkfsErofs(): Promise<Tool> {
  return findTool('mkfs.erofs', 'erofs-utils');
}

/** What goes in the cache key about the builder: exact binary and options. */
export function builderIdentity(mkfs: Tool): string {
  return `mkfs.erofs@${mkfs.identity} ${MKFS_EROFS_ARGS.join(' ')}`;
}

/** Longest directory that contains every path (all absolute). */
function commonParent(dirs: readonly string[]): string {
  let parts = path.dirname(dirs[0]).split('/');
  for (const dir of dirs.slice(1)) {
    const other = dir.split('/');
    let i = 0;
    while (i < parts.length && i < other.length - 1 && parts[i] === other[i]) i++;
    parts = parts.slice(0, i);
  }
  return parts.join('/') || '/';
}

/**
 * The overlay mount data for the layers, and the cwd to mount from. When absolute paths do not
 * fit in a page (many layers), they are made relative to their common parent, which is then
 * the cwd of mount(8): the kernel resolves relative lowerdirs against the caller's cwd.
 */
export function overlayMountData(source: ResolvedSource): { data: string; cwd: string } {
  for (const dir of source.layers) {
    // mount(8) and overlayfs split options on ',' and lowerdir on ':'.
    if (/[,:\\\n]/.test(dir)) {
      throw invalidArgument(`lowerdir ${JSON.stringify(dir)}: paths with ',', ':' or '\\' cannot be merged`);
    }
  }
  const extra = source.userxattr ? ',userxattr' : '';
  const absolute = `ro,lowerdir=${source.layers.join(':')}${extra}`;
  if (absolute.length <= MAX_MOUNT_DATA) return { data: absolute, cwd: '/' };
  const cwd = commonParent(source.layers);
  const relative = source.layers.map((dir) => path.relative(cwd, dir));
  const data = `ro,lowerdir=${relative.join(':')}${extra}`;
  if (data.length > MAX_MOUNT_DATA) {
    throw invalidArgument(`${source.layers.length} layers: the overlay lowerdir list is too long to mount`);
  }
  return { data, cwd };
}

// Runs in the private namespace: mount, then become mkfs.erofs. Arguments are passed
// positionally, never interpolated into the script.
const MERGE_SCRIPT =
  'data=$1; dir=$2; shift 2; ' +
  'mount -t overlay -o "$data" overlay "$dir" || { echo "mount -t overlay -o $data failed" >&2; exit 111; }; ' +
  'exec "$@"';

/**
 * Writes an erofs image of `source` to `outFile` (which must not exist). `mountDir` is an empty
 * directory to mount the merged layers on, used only when there are several.
 */
export async function buildErofs(source: ResolvedSource, outFile: string, mountDir: string, mkfs: Tool): Promise<void> {
  if (source.layers.length === 1) {
    await runTool(mkfs.path, [...MKFS_EROFS_ARGS, outFile, source.layers[0]]);
    return;
  }
  const unshare = await findTool('unshare', 'util-linux');
  const { data, cwd } = overlayMountData(source);
  await runTool(
    unshare.path,
    ['--mount', '--propagation', 'private', '--', '/bin/sh', '-c', MERGE_SCRIPT, 'smolvm-merge', data, mountDir,
      mkfs.path, ...MKFS_EROFS_ARGS, outFile, mountDir],
    { cwd },
  );
}
