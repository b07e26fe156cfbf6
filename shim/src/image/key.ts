// The content-address of a guest image: sha256 over the image format version, the identity of
// the builder (mkfs.erofs binary + options) and the identity of every layer.
//
// Layers of containerd's overlayfs snapshotter are immutable once committed, so a layer is
// identified by its directory alone: (path, st_dev, st_ino, ctime ns, birth time ns). That costs
// one stat per layer on the hot path and stays right across containerd roots (other path/inode)
// and reused snapshot ids (same path, but a new directory: new inode, ctime and birth time).
//
// A plain directory (bundle rootfs/, `smolvm run --rootfs`) or a rw bind may still change, so
// its key covers the whole tree's metadata: per entry the relative path, type+mode, uid, gid,
// size, mtime and ctime (ns), inode, rdev and symlink target. Trade-off: one lstat per file on
// every Create (a few ms for busybox, ~0.1-0.3 s for a 30k-file distro tree), in exchange for
// never serving a stale image. Any write, chmod, chown, xattr change or rename bumps a ctime or
// an inode somewhere, so it changes the key; content is never read (that would cost as much as
// the conversion).
import { createHash, type Hash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ResolvedSource } from './source';

/** Bump when the image layout or anything else that changes the produced bytes changes. */
export const IMAGE_FORMAT_VERSION = 'smolvm-guest-image-v1';

/**
 * The walk uses synchronous lstat: async fs calls cost a thread-pool round trip each (measured:
 * ~25 ms vs ~2 ms for busybox's 280 entries), so instead it yields to the event loop every
 * YIELD_EVERY entries, which bounds any stall to about a millisecond.
 */
const YIELD_EVERY = 256;

function field(hash: Hash, value: string | bigint | number): void {
  // NUL-separated fields: paths cannot contain NUL, so records cannot be confused.
  hash.update(String(value));
  hash.update('\0');
}

/** Identity of an immutable layer directory (see the header comment). */
async function hashLayerDir(hash: Hash, dir: string): Promise<void> {
  const st = await fs.promises.stat(dir, { bigint: true });
  field(hash, 'layer');
  field(hash, dir);
  field(hash, st.dev);
  field(hash, st.ino);
  field(hash, st.ctimeNs);
  field(hash, st.birthtimeNs);
}

function hashEntry(hash: Hash, relative: string, st: fs.BigIntStats, linkTarget: string): void {
  field(hash, relative);
  field(hash, st.mode);
  field(hash, st.uid);
  field(hash, st.gid);
  field(hash, st.size);
  field(hash, st.mtimeNs);
  field(hash, st.ctimeNs);
  field(hash, st.ino);
  field(hash, st.rdev);
  field(hash, linkTarget);
}

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Metadata of a whole tree, in a deterministic order (sorted names, depth first). */
async function hashTree(hash: Hash, root: string): Promise<void> {
  const rootStat = fs.lstatSync(root, { bigint: true });
  field(hash, 'tree');
  field(hash, root);
  field(hash, rootStat.dev);
  hashEntry(hash, '.', rootStat, '');
  let sinceYield = 0;
  // Explicit stack instead of recursion: deep trees cannot overflow it.
  const stack: Array<[string, string]> = [[root, '']];
  while (stack.length > 0) {
    const [dir, rel] = stack.pop() as [string, string];
    const names = fs.readdirSync(dir).sort();
    const subdirs: Array<[string, string]> = [];
    for (const name of names) {
      const abs = path.join(dir, name);
      const relPath = rel === '' ? name : `${rel}/${name}`;
      const st = fs.lstatSync(abs, { bigint: true });
      hashEntry(hash, relPath, st, st.isSymbolicLink() ? fs.readlinkSync(abs) : '');
      if (st.isDirectory()) subdirs.push([abs, relPath]);
      if (++sinceYield >= YIELD_EVERY) {
        sinceYield = 0;
        await yieldToEventLoop();
      }
    }
    // Reversed onto the stack, so the walk order stays sorted depth-first.
    for (let i = subdirs.length - 1; i >= 0; i--) stack.push(subdirs[i]);
  }
}

/**
 * The cache key of an image of `source` made by a builder whose exact identity (binary and
 * options) is `builderIdentity`. 64 hex characters.
 */
export async function computeImageKey(source: ResolvedSource, builderIdentity: string): Promise<string> {
  const hash = createHash('sha256');
  field(hash, IMAGE_FORMAT_VERSION);
  field(hash, builderIdentity);
  field(hash, source.userxattr ? 'userxattr' : 'trusted-xattr');
  field(hash, source.layers.length);
  for (const layer of source.layers) {
    if (source.mutable) await hashTree(hash, layer);
    else await hashLayerDir(hash, layer);
  }
  return hash.digest('hex');
}
