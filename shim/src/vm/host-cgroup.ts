// The VMM process in the OCI spec's host cgroup (`linux.cgroupsPath`), so kubelet and the host
// see and limit the whole VM as they would a runc container. Both forms runc accepts:
//   cgroupfs  `/a/b/c`               → <mount>/a/b/c
//   systemd   `slice:prefix:name`    → <mount>/<expanded slice>/<prefix>-<name>.scope
// The directories are created directly in every mounted cgroup hierarchy (cgroup v2, or each
// v1 hierarchy plus the unified one on a hybrid host, as runc joins them all). For the systemd
// form we do not ask systemd for a transient scope: it is not running on every host we support
// (it is not here), and the resulting paths are the ones systemd would use.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Logger } from '../log';
import { invalidArgument, RpcError, Code } from '../errdefs';

/** Where a cgroup filesystem is mounted; `v1` hierarchies need cpuset set-up for new children. */
export interface CgroupMount {
  mountPoint: string;
  version: 1 | 2;
  /** v1 only: the controllers of this hierarchy (e.g. ["cpuset"], ["name=systemd"]). */
  controllers: string[];
}

/** The directories a placement created (deepest last), to remove on delete. */
export interface CgroupPlacement {
  /** The relative cgroup path, e.g. `smolvm-test/abc` or `system.slice/cri-containerd-x.scope`. */
  relativePath: string;
  /** Absolute directories smolvm created, in creation order (parents first). */
  created: string[];
}

const SYSTEMD_DEFAULT_SLICE = 'system.slice';

function refuse(cgroupsPath: string, why: string): RpcError {
  return invalidArgument(`linux.cgroupsPath ${JSON.stringify(cgroupsPath)}: ${why}`);
}

/** A name component of a cgroup path: non-empty, no `.`/`..`, no `/`, no control characters. */
function checkComponent(cgroupsPath: string, part: string, what: string): void {
  if (part === '.' || part === '..') throw refuse(cgroupsPath, `${what} must not contain "." or ".." components`);
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(part)) throw refuse(cgroupsPath, `${what} contains control characters`);
}

/**
 * Expands a systemd slice name to its path, as systemd does: `a-b-c.slice` →
 * `a.slice/a-b.slice/a-b-c.slice`; `-.slice` is the root slice (empty path).
 */
export function expandSlice(cgroupsPath: string, slice: string): string {
  const suffix = '.slice';
  if (!slice.endsWith(suffix) || slice.length === suffix.length) throw refuse(cgroupsPath, `slice ${JSON.stringify(slice)} must be a name ending in ".slice"`);
  if (slice.includes('/')) throw refuse(cgroupsPath, `slice ${JSON.stringify(slice)} must not contain "/"`);
  checkComponent(cgroupsPath, slice, 'slice');
  if (slice === '-.slice') return '';
  const name = slice.slice(0, -suffix.length);
  const parts = name.split('-');
  if (parts.some((p) => p === '')) throw refuse(cgroupsPath, `slice ${JSON.stringify(slice)} has an empty "-"-separated component`);
  const dirs: string[] = [];
  let prefix = '';
  for (const part of parts) {
    prefix = prefix ? `${prefix}-${part}` : part;
    dirs.push(`${prefix}${suffix}`);
  }
  return dirs.join('/');
}

/**
 * The cgroup path relative to a hierarchy's root for a spec's `linux.cgroupsPath`, or null
 * for an empty one (the VMM stays where it is). Throws InvalidArgument naming the path.
 */
export function resolveCgroupsPath(cgroupsPath: string | undefined): string | null {
  if (cgroupsPath === undefined || cgroupsPath === '') return null;
  if (cgroupsPath.startsWith('/')) {
    const parts = cgroupsPath.split('/').filter((p) => p !== '');
    for (const p of parts) checkComponent(cgroupsPath, p, 'path');
    if (parts.length === 0) throw refuse(cgroupsPath, 'the root cgroup cannot hold a container');
    return parts.join('/');
  }
  if (!cgroupsPath.includes(':')) throw refuse(cgroupsPath, 'must be absolute ("/a/b") or the systemd form "slice:prefix:name"');
  const fields = cgroupsPath.split(':');
  if (fields.length !== 3) throw refuse(cgroupsPath, 'the systemd form is exactly "slice:prefix:name"');
  const [slice, prefix, name] = fields as [string, string, string];
  if (name === '') throw refuse(cgroupsPath, 'the systemd form needs a name ("slice:prefix:name")');
  for (const [part, what] of [[prefix, 'prefix'], [name, 'name']] as const) {
    if (part.includes('/')) throw refuse(cgroupsPath, `${what} must not contain "/"`);
    checkComponent(cgroupsPath, part, what);
  }
  const parent = expandSlice(cgroupsPath, slice === '' ? SYSTEMD_DEFAULT_SLICE : slice);
  // As runc: a name that is itself a slice is the unit; otherwise a scope `prefix-name.scope`.
  const unit = name.endsWith('.slice') ? expandSlice(cgroupsPath, name).split('/').pop()! : `${prefix ? `${prefix}-` : ''}${name}.scope`;
  return parent ? `${parent}/${unit}` : unit;
}

/** Unescapes mountinfo's octal escapes (`\040` for a space). */
function unescapeMountField(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** The cgroup hierarchies mounted in this mount namespace, from /proc/self/mountinfo text. */
export function parseCgroupMounts(mountinfo: string): CgroupMount[] {
  const mounts: CgroupMount[] = [];
  for (const line of mountinfo.split('\n')) {
    const sep = line.indexOf(' - ');
    if (sep < 0) continue;
    const left = line.slice(0, sep).split(' ');
    const right = line.slice(sep + 3).split(' ');
    const fsType = right[0];
    const mountPoint = left[4];
    if (!mountPoint || (fsType !== 'cgroup' && fsType !== 'cgroup2')) continue;
    const superOptions = (right[2] ?? '').split(',');
    const controllers = fsType === 'cgroup' ? superOptions.filter((o) => o !== 'rw' && o !== 'ro' && !o.startsWith('release_agent=') && o !== 'clone_children' && o !== 'noprefix' && o !== 'xattr') : [];
    const version = fsType === 'cgroup2' ? 2 : 1;
    // The same hierarchy mounted twice (bind mounts): join it once.
    const key = controllers.join(',');
    if (mounts.some((m) => m.version === version && m.controllers.join(',') === key)) continue;
    mounts.push({ mountPoint: unescapeMountField(mountPoint), version, controllers });
  }
  return mounts;
}

/** A v1 cpuset child starts with empty cpus/mems and refuses tasks: inherit the parent's. */
function initCpuset(dir: string): void {
  for (const file of ['cpuset.cpus', 'cpuset.mems']) {
    const own = path.join(dir, file);
    if (fs.readFileSync(own, 'utf8').trim() !== '') continue;
    fs.writeFileSync(own, fs.readFileSync(path.join(path.dirname(dir), file), 'utf8').trim());
  }
}

/**
 * Moves `pid` into `relativePath` in every cgroup hierarchy, creating the missing directories
 * and recording them in `placement` as it goes. On failure, the empty ones are removed again
 * and the error names the directory; those already holding `pid` stay recorded in
 * `placement`, for `removeCgroupPlacement` once the process is gone.
 */
export function placeInCgroup(
  pid: number,
  relativePath: string,
  mounts: CgroupMount[] = parseCgroupMounts(fs.readFileSync('/proc/self/mountinfo', 'utf8')),
  placement: CgroupPlacement = { relativePath, created: [] },
): CgroupPlacement {
  if (mounts.length === 0) throw new RpcError(Code.FailedPrecondition, `cgroup ${relativePath}: no cgroup filesystem is mounted on this host`);
  let current = '';
  try {
    for (const mount of mounts) {
      const isCpuset = mount.version === 1 && mount.controllers.includes('cpuset');
      let dir = mount.mountPoint;
      for (const part of relativePath.split('/')) {
        dir = path.join(dir, part);
        current = dir;
        if (!fs.existsSync(dir)) {
          fs.mkdirSync(dir);
          placement.created.push(dir);
        }
        if (isCpuset) initCpuset(dir);
      }
      current = path.join(dir, 'cgroup.procs');
      fs.writeFileSync(current, String(pid));
    }
  } catch (err) {
    for (const dir of [...placement.created].reverse()) {
      try {
        fs.rmdirSync(dir);
      } catch {
        // Holds the process (removed later) or is gone.
      }
    }
    const why = err instanceof Error ? err.message : String(err);
    throw new RpcError(Code.FailedPrecondition, `cgroup ${relativePath}: cannot put the VMM process (pid ${pid}) in ${current}: ${why}`);
  }
  return placement;
}

/** How long a just-emptied cgroup may stay busy after its last process was reaped. */
const RMDIR_BUSY_BOUND_MS = 2000;

/**
 * Removes the directories a placement created, deepest first, only when empty (rmdir, never
 * recursive): a cgroup still holding processes, or made by someone else, stays. The kernel
 * frees a cgroup asynchronously after its last process exits, so EBUSY is retried briefly.
 * Returns the directories that could not be removed.
 */
export async function removeCgroupPlacement(placement: CgroupPlacement, busyBoundMs = RMDIR_BUSY_BOUND_MS): Promise<string[]> {
  const left: string[] = [];
  const deadline = Date.now() + busyBoundMs;
  // Usually free a few ms after the VMM was reaped: poll fast first (Delete waits for this).
  let delayMs = 2;
  for (const dir of [...placement.created].reverse()) {
    for (;;) {
      try {
        fs.rmdirSync(dir);
        break;
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') break;
        // A child cgroup (someone else's) or a process inside: ENOTEMPTY/EBUSY; wait only for EBUSY.
        if (code !== 'EBUSY' || Date.now() >= deadline) {
          left.push(dir);
          break;
        }
        await new Promise((resolve) => setTimeout(resolve, delayMs));
        delayMs = Math.min(delayMs * 2, 50);
      }
    }
  }
  return left;
}

/**
 * A VMM's place in its container's host cgroup (linux.cgroupsPath; none without one): placed
 * as soon as the VMM exists, released once it is gone. The placement is recorded before the
 * move, so that a partial one is undone too.
 */
export class VmmCgroup {
  private placement: CgroupPlacement | null = null;

  /** `createdDirs` receives the directories smolvm makes (the state file records them). */
  constructor(private readonly cgroupPath: string | null, readonly createdDirs: string[] = []) {}

  place(pid: number): void {
    if (!this.cgroupPath) return;
    this.placement = { relativePath: this.cgroupPath, created: this.createdDirs };
    placeInCgroup(pid, this.cgroupPath, undefined, this.placement);
  }

  /** Removes what smolvm created (only empty directories); `log` hears what had to stay. */
  async release(log?: Logger): Promise<void> {
    const placement = this.placement;
    this.placement = null;
    if (!placement) return;
    const left = await removeCgroupPlacement(placement);
    if (left.length > 0) log?.warn('host cgroup left behind (not empty)', { dirs: left.join(' ') });
  }
}
