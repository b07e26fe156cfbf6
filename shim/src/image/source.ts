// Turns what containerd (or `smolvm run`) gives us as a container's rootfs into a checked list
// of directories to merge. containerd's overlayfs snapshotter hands the shim either
//   - one `bind` mount of a snapshot dir (an image without parent layers, or a view of one
//     layer), options `rbind` + `ro`|`rw`; or
//   - one `overlay` mount with `lowerdir=TOP:...:BOTTOM` (+ `upperdir=`/`workdir=` for an active
//     snapshot: the container's fresh, empty upper layer; our writes go to the writable disk
//     instead, so it must be empty, and is otherwise ignored) and maybe `index=off`, `userxattr`.
// A plain directory (an OCI bundle's rootfs/, `smolvm run --rootfs DIR`) is the third kind.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Mount } from '../gen/containerd/types/mount';
import { invalidArgument, RpcError } from '../errdefs';

export type RootfsSource = { kind: 'mounts'; mounts: Mount[] } | { kind: 'dir'; path: string };

/** A checked rootfs: the directories to merge, topmost first. */
export interface ResolvedSource {
  /** Absolute directories, topmost first (overlay `lowerdir` order). At least one. */
  readonly layers: readonly string[];
  /**
   * True when the content may still change (a plain dir, a rw bind of an active snapshot):
   * the cache key must then cover the whole tree, not just the layer directories.
   */
  readonly mutable: boolean;
  /** The overlay used `userxattr` (rootless): whiteout/opaque markers live in user.* xattrs. */
  readonly userxattr: boolean;
  /** For messages: what this source was. */
  readonly description: string;
}

function describeMount(m: Mount): string {
  return `rootfs mount {type: ${JSON.stringify(m.type)}, source: ${JSON.stringify(m.source)}, options: ${JSON.stringify(m.options)}}`;
}

/** Splits an overlay `lowerdir` value on `:`, honouring overlayfs's `\:` escape. */
export function splitLowerdir(value: string): string[] {
  const dirs: string[] = [];
  let current = '';
  for (let i = 0; i < value.length; i++) {
    const ch = value[i];
    if (ch === '\\' && i + 1 < value.length) {
      current += value[++i];
    } else if (ch === ':') {
      dirs.push(current);
      current = '';
    } else {
      current += ch;
    }
  }
  dirs.push(current);
  return dirs;
}

async function requireDirectory(dir: string, what: string, context: string): Promise<void> {
  if (dir === '') throw invalidArgument(`${context}: empty ${what}`);
  if (!path.isAbsolute(dir)) throw invalidArgument(`${context}: ${what} ${JSON.stringify(dir)} is not an absolute path`);
  let st: fs.Stats;
  try {
    st = await fs.promises.stat(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw invalidArgument(`${context}: ${what} ${dir} is not accessible (${code})`);
  }
  if (!st.isDirectory()) throw invalidArgument(`${context}: ${what} ${dir} is not a directory`);
}

async function requireEmptyDirectory(dir: string, what: string, context: string): Promise<void> {
  await requireDirectory(dir, what, context);
  const handle = await fs.promises.opendir(dir);
  try {
    if ((await handle.read()) !== null) {
      throw invalidArgument(
        `${context}: ${what} ${dir} is not empty; its content would be lost (container writes go to the writable disk)`,
      );
    }
  } finally {
    await handle.close().catch(() => undefined);
  }
}

async function resolveBind(m: Mount): Promise<ResolvedSource> {
  const context = describeMount(m);
  await requireDirectory(m.source, 'source', context);
  // A `ro` bind is a view of one committed (immutable) layer; a `rw` bind is an active snapshot
  // with no parents, i.e. a directory someone may still write to.
  const readOnly = m.options.includes('ro');
  return { layers: [m.source], mutable: !readOnly, userxattr: false, description: `bind ${m.source}` };
}

async function resolveOverlay(m: Mount): Promise<ResolvedSource> {
  const context = describeMount(m);
  let lower: string[] | undefined;
  let upper: string | undefined;
  let userxattr = false;
  for (const option of m.options) {
    const eq = option.indexOf('=');
    const name = eq < 0 ? option : option.slice(0, eq);
    const value = eq < 0 ? '' : option.slice(eq + 1);
    switch (name) {
      case 'lowerdir':
        if (lower) throw invalidArgument(`${context}: lowerdir given twice`);
        lower = splitLowerdir(value);
        break;
      case 'upperdir':
        upper = value;
        break;
      case 'userxattr':
        userxattr = true;
        break;
      case 'lowerdir+':
      case 'datadir+':
        throw invalidArgument(`${context}: option ${name} is not supported; use lowerdir=A:B:C`);
      default:
        // workdir, index=, metacopy=, redirect_dir=, volatile, ro/rw ...: they only matter for
        // a writable overlay mount, and we never make one.
        break;
    }
  }
  if (!lower) throw invalidArgument(`${context}: no lowerdir option`);
  for (const dir of lower) await requireDirectory(dir, 'lowerdir', context);
  if (upper !== undefined) await requireEmptyDirectory(upper, 'upperdir', context);
  return {
    layers: lower,
    mutable: false,
    userxattr,
    description: `overlay of ${lower.length} layer(s), top ${lower[0]}`,
  };
}

/**
 * Checks a rootfs source and returns the directories to merge. Any other mount type, a missing
 * or relative path or a non-empty upperdir is an InvalidArgument error naming the mount.
 */
export async function resolveSource(source: RootfsSource): Promise<ResolvedSource> {
  if (source.kind === 'dir') {
    const context = 'rootfs directory';
    await requireDirectory(source.path, 'path', context);
    return { layers: [source.path], mutable: true, userxattr: false, description: `directory ${source.path}` };
  }
  if (source.kind !== 'mounts') {
    throw invalidArgument(`unknown rootfs source kind ${JSON.stringify((source as { kind: unknown }).kind)}`);
  }
  const { mounts } = source;
  if (mounts.length === 0) throw invalidArgument('no rootfs mounts given (expected one bind or overlay mount)');
  if (mounts.length > 1) {
    throw invalidArgument(
      `expected exactly one rootfs mount, got ${mounts.length}: ${mounts.map(describeMount).join('; ')}`,
    );
  }
  const m = mounts[0];
  try {
    switch (m.type) {
      case 'bind':
      case 'rbind':
        return await resolveBind(m);
      case 'overlay':
        return await resolveOverlay(m);
      default:
        throw invalidArgument(`${describeMount(m)}: unsupported mount type (expected bind or overlay)`);
    }
  } catch (err) {
    if (err instanceof RpcError) throw err;
    throw invalidArgument(`${describeMount(m)}: ${(err as Error).message}`);
  }
}
