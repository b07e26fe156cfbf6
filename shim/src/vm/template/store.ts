// Templates on disk, under the cache dir, shared by every shim daemon and builder process:
//
//   <cacheDir>/templates/<key>/manifest.json   what it is (inputs, state size and sha256)
//   <cacheDir>/templates/<key>/state.bin       the saved VM (tcg: QEMU's migration stream)
//   <cacheDir>/templates/<key>.lock            held by the one process building <key>
//   <cacheDir>/templates/<key>.failed          the last build failed: no retry before a pause
//   <cacheDir>/templates/.build-<key>-<rand>/  a build in progress (never read by restores)
//   <cacheDir>/templates/.memo/                file hashes and VMM versions (key.ts)
//
// A template is published by renaming its finished build directory to <key>: a reader sees
// a whole template or none. Removal renames it away first, then deletes, for the same reason.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { acquireLock, ownerAlive, type HeldLock } from '../../util/file-lock';
import { killIdentified } from '../../util/proc';
import type { Vmm } from '../backend';
import { familyOf, TEMPLATE_FORMAT, type TemplateInputs } from './key';

export const STATE_FILE = 'state.bin';
const MANIFEST_FILE = 'manifest.json';
const BUILD_PREFIX = '.build-';
const TRASH_PREFIX = '.trash-';
/** In a build dir: the template VM's pid and start time, for killing it after a dead builder. */
const BUILD_VM_FILE = 'vmm';
/** After a failed build, Creates cold-boot without retrying for this long (same inputs). */
export const FAILED_RETRY_MS = 10 * 60_000;
/** A scheduled builder takes its lock within this; an older claim is considered dead. */
const SCHEDULE_TTL_MS = 60_000;
/** A template nobody restored for this long is removed by the next garbage collection. */
export const UNUSED_TTL_MS = 14 * 24 * 3600_000;

export interface TemplateManifest {
  format: string;
  key: string;
  family: string;
  inputs: TemplateInputs;
  stateBytes: number;
  stateSha256: string;
  /** Other files of the template (name → bytes), e.g. kvm's memory.bin. */
  extraFiles?: Record<string, number>;
  createdAt: string;
  buildMs: number;
}

export interface Template {
  key: string;
  dir: string;
  statePath: string;
  manifest: TemplateManifest;
}

export type Lookup =
  | { kind: 'found'; template: Template }
  | { kind: 'missing' }
  /** Present but unusable (truncated, foreign, unreadable): remove and rebuild. */
  | { kind: 'corrupt'; reason: string };

export class TemplateStore {
  readonly root: string;

  constructor(cacheDir: string) {
    this.root = path.join(cacheDir, 'templates');
  }

  get memoDir(): string {
    return path.join(this.root, '.memo');
  }

  dirOf(key: string): string {
    return path.join(this.root, key);
  }

  lockPath(key: string): string {
    return path.join(this.root, `${key}.lock`);
  }

  private failedPath(key: string): string {
    return path.join(this.root, `${key}.failed`);
  }

  /** The template for `key` if it is whole and is what its manifest says. Cheap: two stats
   *  and one small read (the state's sha256 is checked when the template is built). */
  lookup(key: string): Lookup {
    const dir = this.dirOf(key);
    let text: string;
    try {
      text = fs.readFileSync(path.join(dir, MANIFEST_FILE), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        return fs.existsSync(dir) ? { kind: 'corrupt', reason: `${dir} has no manifest` } : { kind: 'missing' };
      }
      return { kind: 'corrupt', reason: `${dir}/${MANIFEST_FILE}: ${(err as Error).message}` };
    }
    const manifest = parseManifest(text);
    if (!manifest) return { kind: 'corrupt', reason: `${dir}/${MANIFEST_FILE} is not a template manifest` };
    if (manifest.key !== key || manifest.format !== TEMPLATE_FORMAT) {
      return { kind: 'corrupt', reason: `${dir}/${MANIFEST_FILE} describes template ${manifest.key} (${manifest.format})` };
    }
    const statePath = path.join(dir, STATE_FILE);
    const size = fs.statSync(statePath, { throwIfNoEntry: false })?.size;
    if (size !== manifest.stateBytes) {
      return { kind: 'corrupt', reason: `${statePath} is ${size ?? 'missing'}${size === undefined ? '' : ' bytes'}, the manifest says ${manifest.stateBytes} bytes` };
    }
    for (const [name, bytes] of Object.entries(manifest.extraFiles ?? {})) {
      const extra = path.join(dir, name);
      const extraSize = fs.statSync(extra, { throwIfNoEntry: false })?.size;
      if (extraSize !== bytes) return { kind: 'corrupt', reason: `${extra} is ${extraSize ?? 'missing'}${extraSize === undefined ? '' : ' bytes'}, the manifest says ${bytes} bytes` };
    }
    return { kind: 'found', template: { key, dir, statePath, manifest } };
  }

  /** Records a restore (the garbage collector keeps templates in use). */
  touch(template: Template): void {
    fs.rmSync(this.restoreFailedPath(template.key), { force: true });
    const now = new Date();
    try {
      fs.utimesSync(path.join(template.dir, MANIFEST_FILE), now, now);
    } catch {
      // removed meanwhile: nothing to keep
    }
  }

  /** A fresh build directory (published with `publish`, or removed by the builder). */
  makeBuildDir(key: string): string {
    fs.mkdirSync(this.root, { recursive: true });
    const dir = path.join(this.root, `${BUILD_PREFIX}${key}-${randomBytes(4).toString('hex')}`);
    fs.mkdirSync(dir, { mode: 0o700 });
    return dir;
  }

  /** Writes the manifest into the build dir, then makes it the template `key` atomically. */
  publish(buildDir: string, manifest: TemplateManifest): void {
    fs.rmSync(path.join(buildDir, BUILD_VM_FILE), { force: true });
    const manifestPath = path.join(buildDir, MANIFEST_FILE);
    const fd = fs.openSync(manifestPath, 'w', 0o644);
    try {
      fs.writeSync(fd, JSON.stringify(manifest, null, 2));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    const stateFd = fs.openSync(path.join(buildDir, STATE_FILE), 'r');
    try {
      fs.fsyncSync(stateFd);
    } finally {
      fs.closeSync(stateFd);
    }
    // A leftover (corrupt) template of this key is moved away first: rename cannot replace a
    // non-empty directory.
    this.remove(manifest.key);
    fs.renameSync(buildDir, this.dirOf(manifest.key));
    fs.rmSync(this.failedPath(manifest.key), { force: true });
  }

  /** Removes template `key` if present: renamed away at once, then deleted. */
  remove(key: string): void {
    const dir = this.dirOf(key);
    const trash = path.join(this.root, `${TRASH_PREFIX}${key}-${randomBytes(4).toString('hex')}`);
    try {
      fs.renameSync(dir, trash);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    fs.rmSync(trash, { recursive: true, force: true });
  }

  private restoreFailedPath(key: string): string {
    return path.join(this.root, `${key}.restore-failed`);
  }

  /**
   * Records that template `key` did not restore. True the first time (rebuild it: the file
   * went bad), false when a rebuilt one failed again since (something systematic: the build
   * is then paused like a failed one, so Creates stop paying for doomed restores).
   */
  noteRestoreFailure(key: string, error: string, now = Date.now()): boolean {
    const marker = this.restoreFailedPath(key);
    const previous = fs.statSync(marker, { throwIfNoEntry: false });
    if (previous && now - previous.mtimeMs < FAILED_RETRY_MS) {
      this.markFailed(key, `restores keep failing: ${error}`);
      return false;
    }
    try {
      fs.writeFileSync(marker, `${new Date(now).toISOString()} ${error}\n`);
    } catch {
      // best effort
    }
    return true;
  }

  markFailed(key: string, error: string): void {
    try {
      fs.mkdirSync(this.root, { recursive: true });
      fs.writeFileSync(this.failedPath(key), `${new Date().toISOString()} ${error}\n`);
    } catch {
      // the retry pause is a courtesy
    }
  }

  /** A build of `key` failed less than FAILED_RETRY_MS ago: what it said, else null. */
  recentFailure(key: string, now = Date.now()): string | null {
    try {
      const st = fs.statSync(this.failedPath(key));
      if (now - st.mtimeMs > FAILED_RETRY_MS) return null;
      return fs.readFileSync(this.failedPath(key), 'utf8').trim();
    } catch {
      return null;
    }
  }

  private schedulePath(key: string): string {
    return path.join(this.root, `${key}.scheduled`);
  }

  /**
   * Claims the right to start a builder for `key` (a marker created exclusively, removed by
   * the builder when it ends). False while another claim younger than SCHEDULE_TTL_MS exists.
   */
  claimSchedule(key: string, now = Date.now()): boolean {
    fs.mkdirSync(this.root, { recursive: true });
    const marker = this.schedulePath(key);
    try {
      fs.writeFileSync(marker, `${process.pid}\n`, { flag: 'wx' });
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return false;
    }
    const age = now - (fs.statSync(marker, { throwIfNoEntry: false })?.mtimeMs ?? 0);
    if (age < SCHEDULE_TTL_MS) return false;
    // A builder that never started or died: claim it anew (a race here costs one extra
    // builder, which then finds the lock taken and exits).
    fs.writeFileSync(marker, `${process.pid}\n`);
    return true;
  }

  releaseSchedule(key: string): void {
    fs.rmSync(this.schedulePath(key), { force: true });
  }

  /** Whether a live process is building `key` right now (its lock names a live owner). */
  async buildInProgress(key: string): Promise<boolean> {
    let text: string;
    try {
      text = fs.readFileSync(this.lockPath(key), 'utf8');
    } catch {
      return false;
    }
    const m = /^smolvm-lock v1\nboot (\S+)\npid (\d+)\nstart (\S+)\n$/.exec(text);
    if (!m) return false;
    return ownerAlive({ bootId: m[1]!, pid: Number(m[2]), startTime: m[3]! });
  }

  /** The build lock of `key`, or null when a live process holds it (never waits). */
  async tryLock(key: string): Promise<HeldLock | null> {
    fs.mkdirSync(this.root, { recursive: true });
    try {
      return await acquireLock(this.lockPath(key), { timeoutMs: 0 });
    } catch {
      return null;
    }
  }

  /**
   * Removes what is no longer useful: templates superseded by `current` (same family, other
   * contents), templates unused for UNUSED_TTL_MS, unreadable ones, and the leftovers of dead
   * builders and removals. Templates being built or restored by others are left alone (a
   * restore that loses its file falls back to a cold boot).
   */
  async collectGarbage(current: TemplateManifest, now = Date.now()): Promise<string[]> {
    const removed: string[] = [];
    let names: string[];
    try {
      names = fs.readdirSync(this.root);
    } catch {
      return removed;
    }
    for (const name of names) {
      const full = path.join(this.root, name);
      if (name.startsWith(TRASH_PREFIX)) {
        fs.rmSync(full, { recursive: true, force: true });
        continue;
      }
      if (name.startsWith(BUILD_PREFIX)) {
        const key = name.slice(BUILD_PREFIX.length).replace(/-[0-9a-f]{8}$/, '');
        if (!(await this.buildInProgress(key))) {
          killBuildVm(full);
          fs.rmSync(full, { recursive: true, force: true });
          removed.push(name);
        }
        continue;
      }
      if (!/^[0-9a-f]{24}$/.test(name) || name === current.key) continue;
      const found = this.lookup(name);
      const stale =
        found.kind !== 'found' ||
        found.template.manifest.family === current.family ||
        now - (fs.statSync(path.join(full, MANIFEST_FILE), { throwIfNoEntry: false })?.mtimeMs ?? 0) > UNUSED_TTL_MS;
      if (!stale || (await this.buildInProgress(name))) continue;
      this.remove(name);
      for (const leftover of [this.failedPath(name), this.schedulePath(name), this.restoreFailedPath(name), path.join(this.root, `${name}.build.log`)]) {
        fs.rmSync(leftover, { force: true });
      }
      removed.push(name);
    }
    return removed;
  }
}

export function recordBuildVm(buildDir: string, vm: Vmm): void {
  fs.writeFileSync(path.join(buildDir, BUILD_VM_FILE), `${vm.identity.pid} ${vm.identity.startTime}\n`);
}

/** Kills the VM a dead builder left running (identified by pid and start time: no reuse). */
function killBuildVm(buildDir: string): void {
  try {
    const [pid, startTime] = fs.readFileSync(path.join(buildDir, BUILD_VM_FILE), 'utf8').trim().split(' ');
    if (pid && startTime) killIdentified({ pid: Number(pid), startTime }, 'SIGKILL');
  } catch {
    // no VM recorded
  }
}

function parseManifest(text: string): TemplateManifest | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  const m = value as Partial<TemplateManifest>;
  const ok =
    typeof m.format === 'string' && typeof m.key === 'string' && typeof m.family === 'string' &&
    typeof m.stateBytes === 'number' && typeof m.stateSha256 === 'string' && typeof m.inputs === 'object' &&
    m.inputs !== null && typeof m.createdAt === 'string' && typeof m.buildMs === 'number';
  return ok ? (m as TemplateManifest) : null;
}

export { familyOf };
