// Host directories reach a VM through ONE virtio-9p share, exported from boot: the VM's
// `<vmDir>/shares`, empty until a container needs a host directory. Then the shim bind-mounts
// that directory at `<vmDir>/shares/<n>` on the host (read-only as a read-only bind remount,
// so the host kernel enforces it; recursive for rbind) before CreateContainer, and the agent
// bind-mounts subpath `<n>` of the share into the container. The share exists from boot, so
// this works for a container joining a running pod VM as well, and a container gets as many
// directory mounts as it likes (virtio-mmio has only 8 transports, one per device).
//
// The bind mounts are undone (MNT_DETACH) on container removal and VM teardown, and their
// directories removed with rmdir only; the state file records them (ContainerState.hostMounts)
// so that `delete` undoes them after the daemon was killed. Nothing here ever removes
// anything recursively: a VM directory is removed with fsutil's removeTree, which does not
// descend into a mount.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { invalidArgument } from '../errdefs';
import type { Logger } from '../log';
import { MAX_HOST_DIRECTORIES } from '../oci/guest-config';
import type { Backend } from './backend';
import { mountPoints, mountPointsUnder } from '../util/fsutil';

/** The VM directory's subdirectory every 9p-capable VM exports (tcg: -fsdev path). */
export const SHARES_DIR_NAME = 'shares';
/** The 9p mount tag of that share; the agent mounts it as "smolvm" (mounts.c SHARE_TAG). */
export const SHARE_MOUNT_TAG = 'smolvm';

const MOUNT_BINARY = 'mount';
const UMOUNT_BINARY = 'umount';
const COMMAND_TIMEOUT_MS = 15_000;

export function sharesDirOf(vmDir: string): string {
  return path.join(vmDir, SHARES_DIR_NAME);
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

/**
 * Bind-mounts host directory `source` at `target` (an existing empty directory), recursively
 * when asked, private (nothing mounted later on either side propagates), and read-only with a
 * bind remount when asked: with rbind, every submount is remounted read-only as well. On any
 * failure nothing stays mounted at `target`; the error names `source`.
 *
 * `target` lies in a directory the guest can write through 9p: a compromised guest could swap
 * it for a symlink (to /etc, say) between its mkdir and the mount. So the mount goes onto an
 * fd of the directory opened without following symlinks (/proc/self/fd/3, no path
 * canonicalization); once it is a mount point it cannot be renamed or replaced, and the later
 * steps go by path.
 */
export async function bindMountHostDir(source: string, target: string, opts: { readOnly: boolean; recursive: boolean }): Promise<void> {
  const fail = async (what: string, result: CommandResult): Promise<never> => {
    await detachMount(target).catch(() => undefined);
    throw new Error(`${what}: ${oneLine(result.output) || `mount exited with ${result.code}`}`);
  };
  let dirFd: number;
  try {
    dirFd = fs.openSync(target, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW);
  } catch (err) {
    throw new Error(`bind-mount host directory ${source}: mount point ${target}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let bind: CommandResult;
  try {
    bind = await runCommand(MOUNT_BINARY, ['--no-canonicalize', opts.recursive ? '--rbind' : '--bind', source, '/proc/self/fd/3'], dirFd);
  } finally {
    fs.closeSync(dirFd);
  }
  if (bind.code !== 0) await fail(`bind-mount host directory ${source} at ${target}`, bind);
  if (!mountPoints().has(target)) await fail(`bind-mount host directory ${source} at ${target}`, { code: bind.code, output: 'the mount is not at its mount point' });
  const privatize = await runCommand(MOUNT_BINARY, ['--make-rprivate', target]);
  if (privatize.code !== 0) await fail(`make the bind mount of host directory ${source} private (${target})`, privatize);
  if (!opts.readOnly) return;
  // The top first, then (rbind) each submount: a bind remount applies to one mount only.
  const points = [target, ...mountPointsUnder(target).filter((p) => p !== target).reverse()];
  for (const point of points) {
    const remount = await runCommand(MOUNT_BINARY, ['-o', 'remount,bind,ro', point]);
    if (remount.code !== 0) await fail(`make the bind mount of host directory ${source} read-only (${point})`, remount);
  }
}

/**
 * Unmounts `point` with MNT_DETACH (`umount -l`: the whole subtree of an rbind goes too, and
 * a busy mount goes as soon as it is unused), repeated while something is still mounted
 * there. Not mounted: nothing to do.
 */
export async function detachMount(point: string): Promise<void> {
  for (let attempt = 0; attempt < 8; attempt++) {
    if (!mountPoints().has(point)) return;
    const result = await runCommand(UMOUNT_BINARY, ['-l', point]);
    if (result.code !== 0 && mountPoints().has(point)) {
      throw new Error(`unmount ${point}: ${oneLine(result.output) || `umount exited with ${result.code}`}`);
    }
  }
  if (mountPoints().has(point)) throw new Error(`unmount ${point}: still mounted after 8 detaches`);
}

/**
 * Detaches `points` (deepest first) and everything mounted below `dir`; returns what could not
 * be unmounted, with the reason. Used by VM teardown and by `delete` from the state file.
 */
export async function detachAll(points: readonly string[], dir?: string): Promise<string[]> {
  const all = new Set(points.map((p) => path.resolve(p)));
  if (dir) for (const p of mountPointsUnder(dir)) all.add(p);
  const failed: string[] = [];
  for (const point of [...all].sort((a, b) => b.length - a.length)) {
    try {
      await detachMount(point);
    } catch (err) {
      failed.push((err as Error).message);
    }
  }
  return failed;
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

/** The bind mounts of one VM's share, by owner (a container id). */
export class HostShares {
  private next = 0;
  private readonly owners = new Map<string, string[]>();
  /** One mount operation at a time: a teardown never races a mount in flight. */
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(readonly dir: string, private readonly log: Logger) {}

  private exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work, work);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** The host mount points of `owner` (for its state file). */
  mountPointsOf(owner: string): string[] {
    return [...(this.owners.get(owner) ?? [])];
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
          fs.mkdirSync(point, { mode: 0o700 });
          made.push(point);
          try {
            await bindMountHostDir(dir.hostPath, point, { readOnly: dir.readOnly, recursive: dir.recursive });
          } catch (err) {
            throw invalidArgument(`mount ${dir.destination}: ${(err as Error).message}`);
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

  /** Every bind mount of the share (and anything else mounted below it) goes; no more adds. */
  releaseAll(): Promise<void> {
    return this.exclusive(async () => {
      this.closed = true;
      const points = [...this.owners.values()].flat();
      this.owners.clear();
      await this.undo(points, true);
    });
  }

  private async undo(points: readonly string[], everythingBelow = false): Promise<void> {
    const problems = await detachAll(points, everythingBelow ? this.dir : undefined);
    for (const point of points) {
      const problem = removeMountPointDir(point);
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
