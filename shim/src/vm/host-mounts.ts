// Host directories reach a VM through ONE virtio-9p share, exported from boot. QEMU runs as
// root with security_model=passthrough, so whatever the guest may do in the share, QEMU does on
// the host as root: the host side alone decides what a guest root can reach. Per VM:
//
//   <vmDir>/shares        the export (QEMU's -fsdev path): a read-only, nosuid, nodev, noexec,
//                         private bind of share-work/root. A guest root cannot create, mknod,
//                         chmod or symlink anything there: it holds only the mount points.
//   <vmDir>/share-work    a small private tmpfs, never exported (QEMU cannot walk above its
//                         root: it resolves `..` at the export root to the root itself):
//     root/<n>            the export's content: mount point <n>, made here (the export is read-only)
//     staging/<n>         where host directory <n> is bind-mounted and given its flags first
//
// A container's host directory is bind-mounted at staging/<n>, made private, and remounted
// nosuid,nodev (and ro when asked; each submount of an rbind as well), keeping the restrictive
// flags it had (a read-only source stays read-only); only then is it moved to shares/<n>, whole.
// So the guest never sees it with other flags, not even for a moment. QEMU holds the export's
// root open from its start; a mount attached below it later (a pod member's) is seen at once.
// No propagation between our mounts is needed or wanted: every one is private, so unmounting is
// plain child-before-parent. (Mount propagation would not carry flags anyway: a peer or slave
// copy is made when a mount is attached, with the flags it has then, and a later remount of one
// copy does not reach the others.)
//
// nosuid,nodev do not stop QEMU from making a device node or a setuid file in a READ-WRITE host
// directory (mknod and chmod pass through): they make such files inert through the share. The
// host directory's own mounts elsewhere are the host's; a read-write volume is a grant of write
// access to a guest root, as it is to a runc container's root.
//
// Every mount is undone on container removal (one host directory) and VM teardown (all of the
// above), plainly, children first; the state file records the per-container mount points
// (ContainerState.hostMounts), and `delete` detaches everything under the VM directory after
// the daemon was killed. Nothing here removes anything recursively: a VM directory is removed
// with fsutil's removeTree, which does not descend into a mount.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { invalidArgument } from '../errdefs';
import type { Logger } from '../log';
import { MAX_HOST_DIRECTORIES } from '../oci/guest-config';
import type { Backend } from './backend';
import { mountPoints, mountPointsUnder, unescapeMountPath } from '../util/fsutil';

/** The VM directory's subdirectory every 9p-capable VM exports (tcg: -fsdev path). */
export const SHARES_DIR_NAME = 'shares';
/** The private tmpfs holding the export's content and the staging mount points. */
export const SHARE_WORK_DIR_NAME = 'share-work';
/** The 9p mount tag of that share; the agent mounts it as "smolvm" (mounts.c SHARE_TAG). */
export const SHARE_MOUNT_TAG = 'smolvm';

const MOUNT_BINARY = 'mount';
const UMOUNT_BINARY = 'umount';
const COMMAND_TIMEOUT_MS = 15_000;
/** share-work holds directories only (two per host directory at most): small and bounded. */
const SHARE_WORK_TMPFS_OPTIONS = 'size=1m,nr_inodes=16384,mode=0700,nosuid,nodev,noexec';
/** The tmpfs's source name in /proc/self/mountinfo. */
const SHARE_WORK_SOURCE = 'smolvm-share';
/** Per-mount options a hardening remount keeps as they are (ro is kept: never widened). */
const KEPT_OPTIONS = new Set(['ro', 'noexec', 'noatime', 'nodiratime', 'relatime', 'strictatime']);

export function sharesDirOf(vmDir: string): string {
  return path.join(vmDir, SHARES_DIR_NAME);
}

export function shareWorkDirOf(vmDir: string): string {
  return path.join(vmDir, SHARE_WORK_DIR_NAME);
}

/** A host directory a container bind-mounts (guest-config.ts HostDirectoryShare). */
export interface HostDirectory {
  hostPath: string;
  readOnly: boolean;
  /** rbind: the host directory's submounts come along (and are made read-only too). */
  recursive: boolean;
  /** The mount's destination in the container, for error messages. */
  destination: string;
}

interface CommandResult {
  code: number | null;
  output: string;
}

/** Runs `binary` (stdout and stderr collected); `fd3` becomes the child's fd 3. */
function runCommand(binary: string, args: string[], fd3?: number): Promise<CommandResult> {
  return new Promise((resolve) => {
    let output = '';
    let settled = false;
    const stdio: ('ignore' | 'pipe' | number)[] = ['ignore', 'pipe', 'pipe'];
    if (fd3 !== undefined) stdio.push(fd3);
    const child = spawn(binary, args, { stdio, timeout: COMMAND_TIMEOUT_MS });
    const collect = (chunk: Buffer): void => {
      if (output.length < 4096) output += chunk.toString('utf8');
    };
    child.stdout?.on('data', collect);
    child.stderr?.on('data', collect);
    child.once('error', (err) => {
      if (settled) return;
      settled = true;
      const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
      resolve({ code: null, output: missing ? `${binary} not found: install Debian package mount (util-linux)` : err.message });
    });
    child.once('close', (code, signal) => {
      if (settled) return;
      settled = true;
      resolve({ code, output: signal ? `${output}${output ? '; ' : ''}killed by ${signal} (timeout ${COMMAND_TIMEOUT_MS} ms?)` : output });
    });
  });
}

const oneLine = (text: string): string => text.trim().replace(/\s*\n\s*/g, '; ');

/** Runs mount(8) with `args`; throws `what: <its output>` unless it succeeded. */
async function mountOrThrow(what: string, args: string[], fd3?: number): Promise<void> {
  const result = await runCommand(MOUNT_BINARY, args, fd3);
  if (result.code !== 0) throw new Error(`${what}: ${oneLine(result.output) || `mount exited with ${result.code}`}`);
}

/**
 * The per-mount options (field 6 of /proc/self/mountinfo: rw/ro, nosuid, nodev, noexec, atime)
 * of the mount on top at `point`, or null when nothing is mounted there. Stacked mounts are
 * listed bottom first, so the last line for a point is the one a path lookup reaches.
 */
export function mountOptionsAt(point: string): string[] | null {
  const target = path.resolve(point);
  let options: string[] | null = null;
  for (const line of fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const fields = line.split(' ');
    if (fields[4] !== undefined && unescapeMountPath(fields[4]) === target) options = (fields[5] ?? '').split(',');
  }
  return options;
}

/**
 * Remounts the mount at `point` (a bind) nosuid,nodev, and read-only when asked; whatever of
 * ro, noexec and the atime mode it had stays (a bind remount sets exactly the flags it is
 * given: `-o nosuid,nodev` alone would make a read-only source writable). Then checks that
 * the kernel has them: fails closed.
 */
async function hardenMount(point: string, readOnly: boolean): Promise<void> {
  const current = mountOptionsAt(point);
  if (!current) throw new Error(`${point} is not mounted`);
  const wanted = new Set([...current.filter((o) => KEPT_OPTIONS.has(o)), 'nosuid', 'nodev']);
  if (readOnly) wanted.add('ro');
  await mountOrThrow(`remount ${point} ${[...wanted].join(',')}`, ['--no-canonicalize', '-o', `remount,bind,${[...wanted].join(',')}`, point]);
  const now = mountOptionsAt(point) ?? [];
  const missing = [...wanted].filter((o) => (o === 'ro' || o === 'nosuid' || o === 'nodev') && !now.includes(o));
  if (missing.length > 0) throw new Error(`remount ${point}: the mount still lacks ${missing.join(',')} (it has ${now.join(',')})`);
}

/**
 * Bind-mounts host directory `source` at `target` (an existing empty directory), recursively
 * when asked, private (nothing mounted later on either side propagates), nosuid,nodev and,
 * when asked, read-only, each submount of an rbind as well (see hardenMount). On any failure
 * nothing stays mounted at `target`; the error names `source`.
 *
 * The mount goes onto an fd of the directory opened without following symlinks
 * (/proc/self/fd/3, no path canonicalization): should `target` have been swapped for a symlink,
 * nothing is mounted on its target. (HostShares binds into its staging directory, which the
 * guest cannot reach; this holds for any caller.)
 */
export async function bindMountHostDir(source: string, target: string, opts: { readOnly: boolean; recursive: boolean }): Promise<void> {
  let dirFd: number;
  try {
    dirFd = fs.openSync(target, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
  } catch (err) {
    throw new Error(`bind-mount host directory ${source}: mount point ${target}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    try {
      await mountOrThrow(`bind-mount host directory ${source} at ${target}`,
        ['--no-canonicalize', opts.recursive ? '--rbind' : '--bind', source, '/proc/self/fd/3'], dirFd);
    } finally {
      fs.closeSync(dirFd);
    }
    if (!mountPoints().has(path.resolve(target))) throw new Error(`bind-mount host directory ${source} at ${target}: the mount is not at its mount point`);
    await mountOrThrow(`make the bind mount of host directory ${source} private (${target})`, ['--no-canonicalize', '--make-rprivate', target]);
    // The top first, then (rbind) each submount: a bind remount applies to one mount only.
    const points = mountPointsUnder(target).reverse();
    for (const point of points) {
      try {
        await hardenMount(point, opts.readOnly);
      } catch (err) {
        throw new Error(`make the bind mount of host directory ${source} nosuid,nodev${opts.readOnly ? ',ro' : ''}: ${(err as Error).message}`);
      }
    }
  } catch (err) {
    const left = await detachAll([], target);
    throw new Error(left.length > 0 ? `${(err as Error).message} (and: ${left.join('; ')})` : (err as Error).message);
  }
}

/** Waits between plain unmount attempts of a busy mount: a VMM just killed may still be
 *  closing its files (its main thread is a zombie before its other threads are gone). */
const BUSY_RETRY_DELAYS_MS = [10, 20, 40, 80, 160, 200];

/**
 * Unmounts whatever is mounted at `point` (stacked mounts one by one); a mount with mounts
 * below it cannot go (EBUSY): detachAll takes children first. A plain unmount, so that a
 * mount something still uses is noticed, retried for a moment while busy. Only when it stays
 * busy (a file that a still-running QEMU holds open for its guest, a host shell's working
 * directory) is it detached (MNT_DETACH): that takes it out of every path lookup at once,
 * QEMU's included, and the kernel frees it when its last user lets go. Returns a note when
 * that happened.
 */
async function unmountPoint(point: string): Promise<string | null> {
  let note: string | null = null;
  for (let attempt = 0; attempt < 8; attempt++) {
    if (!mountPoints().has(point)) return note;
    let plain = await runCommand(UMOUNT_BINARY, ['--no-canonicalize', point]);
    for (const delay of BUSY_RETRY_DELAYS_MS) {
      if (plain.code === 0 || !/busy/i.test(plain.output) || !mountPoints().has(point)) break;
      await new Promise((resolve) => setTimeout(resolve, delay));
      plain = await runCommand(UMOUNT_BINARY, ['--no-canonicalize', point]);
    }
    if (plain.code === 0 || !mountPoints().has(point)) continue;
    if (!/busy/i.test(plain.output)) {
      throw new Error(`unmount ${point}: ${oneLine(plain.output) || `umount exited with ${plain.code}`}`);
    }
    const lazy = await runCommand(UMOUNT_BINARY, ['--no-canonicalize', '-l', point]);
    if (lazy.code !== 0 && mountPoints().has(point)) {
      throw new Error(`unmount ${point} (busy): ${oneLine(lazy.output) || `umount -l exited with ${lazy.code}`}`);
    }
    note = `${point} was busy: detached (MNT_DETACH); the kernel frees it when its last user closes it`;
  }
  if (mountPoints().has(point)) throw new Error(`unmount ${point}: still mounted after 8 unmounts`);
  return note;
}

/**
 * Unmounts `points` and everything mounted at or below each of `dirs`, deepest first (a
 * child before its parent). Returns the problems, one line each: what could not be unmounted
 * and why, and what was busy and had to be detached.
 */
export async function detachAll(points: readonly string[], ...dirs: readonly (string | undefined)[]): Promise<string[]> {
  const mounted = mountPoints();
  const all = new Set(points.map((p) => path.resolve(p)));
  for (const dir of dirs) if (dir) for (const p of mountPointsUnder(dir, mounted)) all.add(p);
  const problems: string[] = [];
  for (const point of [...all].sort((a, b) => b.length - a.length)) {
    try {
      const note = await unmountPoint(point);
      if (note) problems.push(note);
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  return problems;
}

/** rmdir only: an empty mount point directory goes, anything else stays (and is reported). */
function removeMountPointDir(dir: string): string | null {
  try {
    fs.rmdirSync(dir);
    return null;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOENT' ? null : `rmdir ${dir}: ${code ?? (err as Error).message}`;
  }
}

/**
 * Makes `<vmDir>/shares` the read-only export and `<vmDir>/share-work` its private work area
 * (see the top of this file). Before the VMM starts: QEMU opens the export's root when it
 * starts and keeps it. On failure, nothing stays mounted.
 */
async function exportShareRoot(vmDir: string): Promise<void> {
  const shares = sharesDirOf(vmDir);
  const work = shareWorkDirOf(vmDir);
  try {
    fs.mkdirSync(shares, { mode: 0o700 });
    fs.mkdirSync(work, { mode: 0o700 });
    // Private from the start: under a shared parent (systemd's /run) our mounts would otherwise
    // propagate, and a mount under a shared parent cannot be moved (EINVAL).
    await mountOrThrow(`mount the share's work tmpfs at ${work}`,
      ['--no-canonicalize', '-t', 'tmpfs', '-o', SHARE_WORK_TMPFS_OPTIONS, '--make-private', SHARE_WORK_SOURCE, work]);
    fs.mkdirSync(path.join(work, 'root'), { mode: 0o700 });
    fs.mkdirSync(path.join(work, 'staging'), { mode: 0o700 });
    // Not yet exported (QEMU has not started): the bind may be writable for a moment.
    await mountOrThrow(`export ${shares} read-only`,
      ['--no-canonicalize', '--bind', '-o', 'ro,nosuid,nodev,noexec', '--make-private', path.join(work, 'root'), shares]);
    const options = mountOptionsAt(shares) ?? [];
    const missing = ['ro', 'nosuid', 'nodev'].filter((o) => !options.includes(o));
    if (missing.length > 0) throw new Error(`export ${shares}: the mount lacks ${missing.join(',')} (it has ${options.join(',')})`);
  } catch (err) {
    const left = await detachAll([], shares, work);
    for (const dir of [shares, work]) {
      const problem = removeMountPointDir(dir);
      if (problem) left.push(problem);
    }
    throw new Error(`the VM's 9p share: ${(err as Error).message}${left.length > 0 ? ` (and: ${left.join('; ')})` : ''}`);
  }
}

/** The 9p share of one VM and the host directories bind-mounted into it, by owner (a container id). */
export class HostShares {
  /** The export: QEMU's -fsdev path. */
  readonly dir: string;
  private readonly work: string;
  private next = 0;
  private readonly owners = new Map<string, string[]>();
  /** One mount operation at a time: a teardown never races a mount in flight. */
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(vmDir: string, private readonly log: Logger) {
    this.dir = sharesDirOf(vmDir);
    this.work = shareWorkDirOf(vmDir);
  }

  /** Exports the VM's share (read-only, empty) before its VMM starts; releaseAll undoes it. */
  static async export(vmDir: string, log: Logger): Promise<HostShares> {
    await exportShareRoot(vmDir);
    return new HostShares(vmDir, log);
  }

  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work, work);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** The host mount points of `owner` (for its state file). */
  mountPointsOf(owner: string): string[] {
    return [...(this.owners.get(owner) ?? [])];
  }

  /** Where mount point `point` (`shares/<n>`) is made and removed: the export is read-only. */
  private writableDirOf(point: string): string {
    return path.join(this.work, 'root', path.basename(point));
  }

  /**
   * Bind-mounts each host directory of `owner` into the share; returns their subpaths in the
   * share, in order. `record` gets every mount point of the owner before anything is mounted
   * (so a daemon killed meanwhile leaves a state file that names them). On failure, what this
   * call mounted is undone and the error names the host directory and the destination.
   */
  add(owner: string, dirs: readonly HostDirectory[], record?: (points: string[]) => void): Promise<string[]> {
    if (dirs.length === 0) return Promise.resolve([]);
    if (dirs.length > MAX_HOST_DIRECTORIES) {
      return Promise.reject(invalidArgument(`${dirs.length} host directories are bind-mounted; at most ${MAX_HOST_DIRECTORIES} per container`));
    }
    return this.exclusive(async () => {
      if (this.closed) throw new Error(`the VM's share ${this.dir} is being torn down`);
      const names = dirs.map(() => String(this.next++));
      const points = names.map((name) => path.join(this.dir, name));
      const owned = this.owners.get(owner) ?? [];
      this.owners.set(owner, owned);
      owned.push(...points);
      record?.([...owned]);
      const made: string[] = [];
      try {
        for (let i = 0; i < dirs.length; i++) {
          const dir = dirs[i]!;
          const point = points[i]!;
          const staging = path.join(this.work, 'staging', names[i]!);
          fs.mkdirSync(this.writableDirOf(point), { mode: 0o700 });
          made.push(point);
          fs.mkdirSync(staging, { mode: 0o700 });
          try {
            await bindMountHostDir(dir.hostPath, staging, { readOnly: dir.readOnly, recursive: dir.recursive });
            // Moved whole, with its flags set: the guest never sees it otherwise.
            await mountOrThrow(`move the bind mount of host directory ${dir.hostPath} into the share`,
              ['--no-canonicalize', '--move', staging, point]);
          } catch (err) {
            const left = await detachAll([], staging);
            throw invalidArgument(`mount ${dir.destination}: ${(err as Error).message}${left.length > 0 ? ` (and: ${left.join('; ')})` : ''}`);
          } finally {
            removeMountPointDir(staging);
          }
        }
      } catch (err) {
        await this.undo(made);
        this.owners.set(owner, owned.filter((p) => !points.includes(p)));
        if (this.owners.get(owner)!.length === 0) this.owners.delete(owner);
        throw err;
      }
      this.log.debug('host directories shared', { owner, points: points.join(' ') });
      return names;
    });
  }

  /** Unmounts the owner's bind mounts and removes their directories. */
  release(owner: string): Promise<void> {
    return this.exclusive(async () => {
      const points = this.owners.get(owner);
      if (!points) return;
      this.owners.delete(owner);
      await this.undo(points);
    });
  }

  /**
   * Everything goes: the host directories' bind mounts, the export and the work tmpfs (with
   * the mount point directories in it); no more adds. After the VMM is gone: the export is
   * busy while QEMU holds it.
   */
  releaseAll(): Promise<void> {
    return this.exclusive(async () => {
      this.closed = true;
      this.owners.clear();
      const problems = await detachAll([], this.dir, this.work);
      for (const dir of [this.dir, this.work]) {
        const problem = removeMountPointDir(dir);
        if (problem) problems.push(problem);
      }
      if (problems.length > 0) this.log.warn('the VM\'s 9p share not fully undone', { problems: problems.join('; ') });
    });
  }

  private async undo(points: readonly string[]): Promise<void> {
    const problems = await detachAll([], ...points);
    for (const point of points) {
      const problem = removeMountPointDir(this.writableDirOf(point));
      if (problem) problems.push(problem);
    }
    if (problems.length > 0) this.log.warn('host bind mounts not fully undone', { problems: problems.join('; ') });
  }
}

/** Host directory binds need a backend whose VMs have the 9p share: refused elsewhere, before
 *  any VM boots, naming the mount. */
export function assertDirSharesSupported(backend: Backend, dirs: readonly HostDirectory[], containerId: string): void {
  const first = dirs[0];
  if (!first || backend.supportsDirShares) return;
  throw invalidArgument(`container ${containerId}: mount ${first.destination}: bind mounts of host directories (here ${first.hostPath}) need virtio-9p, which the ${backend.name} backend does not have yet; use the tcg backend`);
}
