import * as fs from 'node:fs';
import * as path from 'node:path';

/** write + fsync + rename: readers see the old or the new file, never a torn one. */
export function writeFileAtomic(file: string, data: string | Buffer, mode = 0o600): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${Date.now()}.tmp`);
  const fd = fs.openSync(tmp, 'w', mode);
  try {
    fs.writeSync(fd, typeof data === "string" ? Buffer.from(data) : data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw err;
  }
}

/**
 * Removes `p` (a file, or a directory with everything in it), best effort, and never across
 * a mount: see removeTree. A bind mount of a host directory left under a VM's directory keeps
 * its files. Returns what was left in place.
 */
export function removeQuietly(p: string): string[] {
  try {
    return removeTree(p);
  } catch {
    // best effort: callers log what matters
    return [p];
  }
}

/** "\040" and friends: how /proc/self/mountinfo escapes space, tab, newline and backslash. */
export function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** Every mount point of this mount namespace (field 5 of /proc/self/mountinfo). Throws when
 *  mountinfo cannot be read: callers must not guess. */
export function mountPoints(): Set<string> {
  const info = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  const points = new Set<string>();
  for (const line of info.split('\n')) {
    const field = line.split(' ')[4];
    if (field) points.add(unescapeMountPath(field));
  }
  return points;
}

/** Mount points at or below `dir`, deepest first. */
export function mountPointsUnder(dir: string, points: Set<string> = mountPoints()): string[] {
  const root = path.resolve(dir);
  return [...points].filter((p) => p === root || p.startsWith(root === '/' ? '/' : `${root}/`)).sort((a, b) => b.length - a.length);
}

/**
 * Recursive removal that cannot cross into another filesystem or mount: a directory that is a
 * mount point (per /proc/self/mountinfo: a bind mount of a directory of the same filesystem
 * has the same st_dev) or that is on another device (st_dev differs from `target`'s) is never
 * descended into, and stays, with its parents; so does a bind-mounted file. Symlinks are removed, never followed. Unlike
 * fs.rmSync({ recursive }), a host directory bind-mounted somewhere below keeps its files.
 * Returns the paths left in place (empty when everything went).
 */
export function removeTree(target: string): string[] {
  const root = path.resolve(target);
  let st: fs.Stats;
  try {
    st = fs.lstatSync(root);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const mounts = mountPoints();
  const left: string[] = [];
  if (!st.isDirectory()) {
    if (mounts.has(root)) return [root]; // a bind-mounted file: unmount it first
    fs.rmSync(root, { force: true });
    return [];
  }
  if (mounts.has(root)) return [root];
  const device = st.dev;
  /** Empties and removes `dir` (known: same device, not a mount point); false if anything stays. */
  const removeDir = (dir: string): boolean => {
    let clean = true;
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true;
      left.push(dir);
      return false;
    }
    for (const name of names) {
      const full = path.join(dir, name);
      let entry: fs.Stats;
      try {
        entry = fs.lstatSync(full);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
        left.push(full);
        clean = false;
        continue;
      }
      // Only a directory can lead into another filesystem. A file's st_dev may differ from
      // its directory's without any mount (overlayfs reports the layer's device for files).
      if (mounts.has(full) || (entry.isDirectory() && entry.dev !== device)) {
        left.push(full);
        clean = false;
        continue;
      }
      if (entry.isDirectory()) {
        if (!removeDir(full)) clean = false;
        continue;
      }
      try {
        fs.unlinkSync(full);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
          left.push(full);
          clean = false;
        }
      }
    }
    if (!clean) return false;
    try {
      fs.rmdirSync(dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true;
      left.push(dir);
      return false;
    }
    return true;
  };
  removeDir(root);
  return left;
}

/** The last `maxBytes` of a file as UTF-8 (for logs and error messages); throws when unreadable. */
export function readFileTail(file: string, maxBytes: number): string {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const length = Math.min(size, maxBytes);
    const buffer = Buffer.alloc(length);
    fs.readSync(fd, buffer, 0, length, size - length);
    return buffer.toString('utf8');
  } finally {
    fs.closeSync(fd);
  }
}
