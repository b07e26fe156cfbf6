// The warm pool on disk (layout and claim protocol: protocol.ts). Nobody owns the pool in
// memory: shim daemons come and go with their containers, so the pool is a directory of spare
// entries, each naming its daemon and its VMM by pid + start time. Whoever notices the pool
// short (a daemon after its first Create, a spare just claimed, `smolvm pool fill`) tops it up
// under fill.lock; entries whose daemon died are swept (their VMM killed, their files removed)
// on the way. Every VMM is also recorded in its own VM directory by the exec wrapper and dies
// with its daemon (vm/vmm-exec.ts): a spare killed while its VM restores, before vm.json
// exists, leaves at most a VM directory, which the orphan sweep removes.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { acquireLock } from '../util/file-lock';
import { recordedVmDataDir, repoRoot, type Paths } from '../config/paths';
import { detachAll } from '../vm/host-mounts';
import { sweepOrphanedVmms, type VmmSweepResult } from '../vm/vmm-sweep';
import { removeQuietly } from '../util/fsutil';
import { isSameProcessAlive, killIdentified, liveProcessStartTime, waitGone, type ProcessIdentity } from '../util/proc';
import { INTERNAL_ENV } from './protocol';

/** Spares start niced, so that refilling never competes with the containers being created;
 *  a claimed spare (and its VMM) go back to normal priority. */
export const SPARE_NICE = 10;
/** A spare that has not answered claims this long after it was spawned is broken. */
const SPARE_BOOT_TIMEOUT_MS = 120_000;

export const OWNER_FILE = 'owner.json';
export const VM_FILE = 'vm.json';
export const CLAIM_SOCKET = 'claim.sock';

export interface SpareEntry {
  name: string;
  dir: string;
  owner: ProcessIdentity | null;
  vm: (ProcessIdentity & { dir?: string; dataDir?: string }) | null;
  /** Its claim socket exists: the VM is ready and claims are taken. */
  ready: boolean;
  /** Milliseconds since the entry was made. */
  ageMs: number;
}

export function poolDir(paths: Paths): string {
  return path.join(paths.stateDir, 'pool');
}

function readIdentity(file: string): (ProcessIdentity & { dir?: string; dataDir?: string }) | null {
  try {
    const raw = JSON.parse(fs.readFileSync(file, 'utf8')) as { pid?: unknown; startTime?: unknown; dir?: unknown; dataDir?: unknown };
    if (!Number.isInteger(raw.pid) || (raw.pid as number) <= 0 || typeof raw.startTime !== 'string') return null;
    return {
      pid: raw.pid as number, startTime: raw.startTime,
      ...(typeof raw.dir === 'string' ? { dir: raw.dir } : {}),
      ...(typeof raw.dataDir === 'string' ? { dataDir: raw.dataDir } : {}),
    };
  } catch {
    return null;
  }
}

/** The spare entries, oldest first (names sort by creation time). */
export function listSpares(paths: Paths): SpareEntry[] {
  const dir = poolDir(paths);
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return [];
  }
  const now = Date.now();
  const out: SpareEntry[] = [];
  for (const name of names.sort()) {
    if (name.startsWith('.') || !/^\d{15}-[0-9a-f]+$/.test(name)) continue;
    const entryDir = path.join(dir, name);
    const st = fs.statSync(entryDir, { throwIfNoEntry: false });
    if (!st?.isDirectory()) continue;
    out.push({
      name, dir: entryDir,
      owner: readIdentity(path.join(entryDir, OWNER_FILE)),
      vm: readIdentity(path.join(entryDir, VM_FILE)),
      ready: fs.existsSync(path.join(entryDir, CLAIM_SOCKET)),
      ageMs: now - st.mtimeMs,
    });
  }
  return out;
}

function spareAlive(entry: SpareEntry): boolean {
  return entry.owner !== null && isSameProcessAlive(entry.owner);
}

/** Kills what a dead spare left (its VMM) and removes its files. */
async function sweepEntry(paths: Paths, entry: SpareEntry): Promise<void> {
  if (entry.vm && killIdentified(entry.vm, 'SIGKILL')) await waitGone(entry.vm, 5_000);
  const vmsRoot = path.join(paths.stateDir, 'vms') + path.sep;
  if (entry.vm?.dir && path.resolve(entry.vm.dir).startsWith(vmsRoot)) {
    // Its 9p share's mounts first: removeQuietly does not cross a mount.
    await detachAll([], path.resolve(entry.vm.dir));
    removeQuietly(path.resolve(entry.vm.dir));
  }
  // Its disks and logs: only ever below the data root.
  const dataDir = recordedVmDataDir(paths, entry.vm?.dataDir);
  if (dataDir) removeQuietly(dataDir);
  removeQuietly(entry.dir);
}

/**
 * Removes entries whose daemon is gone, or that never became ready in time. A spare that died
 * while its VM booted left that VM's directory (and, before vm.json, nothing naming it): when
 * an entry was swept, so are the state root's orphaned VMMs (vm/vmm-sweep.ts).
 */
export async function sweepPool(paths: Paths): Promise<number> {
  let swept = 0;
  for (const entry of listSpares(paths)) {
    const stuck = !entry.ready && entry.ageMs > SPARE_BOOT_TIMEOUT_MS;
    if (spareAlive(entry) && !stuck) continue;
    if (stuck && entry.owner) {
      killIdentified(entry.owner, 'SIGKILL');
      await waitGone(entry.owner, 5_000);
    }
    await sweepEntry(paths, entry);
    swept += 1;
  }
  if (swept > 0) await sweepOrphanedVmms(paths);
  return swept;
}

/** The shim's node entry, which runs a spare with `spare` (its name shows in `ps`). */
function mainEntry(): string {
  return path.join(repoRoot(), 'bin', 'containerd-shim-smolvm-v1.js');
}

/** Environment for a spare: the caller's, minus a daemon's own wiring. */
function spareEnv(env: NodeJS.ProcessEnv, dir: string): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(env)) if (!INTERNAL_ENV.has(k)) out[k] = v;
  out.SMOLVM_SPARE_DIR = dir;
  return out;
}

/** Starts one spare daemon for a new entry (its owner recorded at once, before it runs). */
function spawnSpare(paths: Paths, env: NodeJS.ProcessEnv): string {
  const name = `${String(Date.now()).padStart(15, '0')}-${process.pid.toString(16)}${Math.floor(Math.random() * 0xffff).toString(16)}`;
  const dir = path.join(poolDir(paths), name);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const child = spawn(process.execPath, [mainEntry(), 'spare'], {
    cwd: dir, detached: true, stdio: 'ignore', env: spareEnv(env, dir),
  });
  const pid = child.pid;
  if (pid === undefined) {
    removeQuietly(dir);
    throw new Error('could not spawn a pool spare');
  }
  child.unref();
  try {
    os.setPriority(pid, SPARE_NICE);
  } catch {
    // not permitted: it competes at normal priority
  }
  const startTime = liveProcessStartTime(pid);
  if (startTime) fs.writeFileSync(path.join(dir, OWNER_FILE), JSON.stringify({ pid, startTime }), { mode: 0o600 });
  return name;
}

/**
 * Tops the pool up to `size` live spares (booting ones count): dead entries are swept first.
 * Returns the names spawned. Never waits for another filler: when fill.lock is held, that
 * one is doing the same.
 */
export async function topUpPool(paths: Paths, size: number, env: NodeJS.ProcessEnv = process.env): Promise<string[]> {
  if (size <= 0) return [];
  fs.mkdirSync(poolDir(paths), { recursive: true, mode: 0o700 });
  const lock = await acquireLock(path.join(poolDir(paths), 'fill.lock'), { timeoutMs: 0 }).catch(() => null);
  if (!lock) return [];
  try {
    await sweepPool(paths);
    const live = listSpares(paths).filter(spareAlive).length;
    const spawned: string[] = [];
    for (let i = live; i < size; i++) spawned.push(spawnSpare(paths, env));
    return spawned;
  } finally {
    await lock.release();
  }
}

/** Waits until `size` spares take claims (for `smolvm pool fill --wait` and benches). */
export async function waitForReady(paths: Paths, size: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (listSpares(paths).filter((e) => e.ready && spareAlive(e)).length >= size) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return false;
}

export interface DrainReport {
  /** Spares stopped. */
  stopped: number;
  /** The sweep of the state root's orphaned VMMs that followed. */
  orphans: VmmSweepResult;
}

/** Stops every spare (SIGTERM: it tears its VM down), then sweeps what is left, orphaned
 *  VMMs of the state root included. A container claimed meanwhile still refills the pool
 *  afterwards (set pool_size = 0 to end it). */
export async function drainPoolReport(paths: Paths, graceMs = 5_000): Promise<DrainReport> {
  // A top-up in progress finishes first (its spares are then drained too); none starts meanwhile.
  fs.mkdirSync(poolDir(paths), { recursive: true, mode: 0o700 });
  const lock = await acquireLock(path.join(poolDir(paths), 'fill.lock'), { timeoutMs: 10_000 });
  let stopped: number;
  try {
    stopped = await stopSpares(paths, graceMs);
  } finally {
    await lock.release();
  }
  return { stopped, orphans: await sweepOrphanedVmms(paths) };
}

/** drainPoolReport's number of spares stopped. */
export async function drainPool(paths: Paths, graceMs = 5_000): Promise<number> {
  return (await drainPoolReport(paths, graceMs)).stopped;
}

async function stopSpares(paths: Paths, graceMs: number): Promise<number> {
  const entries = listSpares(paths);
  for (const entry of entries) if (entry.owner) killIdentified(entry.owner, 'SIGTERM');
  await Promise.all(entries.map(async (entry) => {
    if (entry.owner && !(await waitGone(entry.owner, graceMs))) killIdentified(entry.owner, 'SIGKILL');
  }));
  for (const entry of listSpares(paths)) await sweepEntry(paths, entry);
  return entries.length;
}

/** Sets a process's threads (all of them: niceness is per thread on Linux) to `nice`. */
export function reniceProcess(pid: number, nice: number): void {
  let tids: string[];
  try {
    tids = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return;
  }
  for (const tid of tids) {
    try {
      os.setPriority(Number(tid), nice);
    } catch {
      // gone, or not permitted
    }
  }
}
