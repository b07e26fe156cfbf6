// The sweep of orphaned VMMs: VMM processes of one state root whose shim process (the parent
// that started them, vmm-exec.ts) is gone, and the VM directories they leave. PDEATHSIG
// already kills a VMM whose parent dies; this finds the rest (a VMM started before the
// wrapper existed, a parent that died between its fork and the wrapper's prctl, a VMM whose
// directory was removed under it) and every VM directory a dead shim left (sockets, logs,
// disks). Run by `smolvm pool drain`, a shim daemon's exit and `delete`; the leak checker of
// the conformance suite lists with findVmmProcesses.
//
// A VMM is found twice over: by the wrapper's record in each VM directory of the state root
// (`<stateDir>/vms/*`, `<stateDir>/templates/*`), and by a /proc scan for the wrapper's
// environment marker (SMOLVM_VM_DIR naming a VM directory of that root), which finds it even
// when its directory is gone. A VM directory names its owner from the moment it is made
// (markVmDirOwner), so one whose shim died before its VMM ran goes too. Nothing is touched
// whose parent (owner) is alive, nor anything of another state root (tests run several at
// once).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { vmDataDir, vmDataRoot, type Paths } from '../config/paths';
import { removeQuietly } from '../util/fsutil';
import { isSameProcessAlive, killIdentified, liveProcessStartTime, waitGone, type ProcessIdentity } from '../util/proc';
import { readVmDirOwner, readVmmRecord, VM_DIR_ENV, VMM_PARENT_ENV } from './vmm-exec';

/** Where VM directories live under a state dir: containers' and pods' VMs, template builds'. */
const VM_DIR_PARENTS = ['vms', 'templates'] as const;
/** A VMM gets this long to be gone after SIGKILL. */
const KILL_WAIT_MS = 5_000;

export interface VmmProcess extends ProcessIdentity {
  /** Its VM directory (which may be gone). */
  vmDir: string;
  /** The shim process that started it. */
  parent: ProcessIdentity;
  /** Its parent is gone: nothing will ever stop it. */
  orphaned: boolean;
  /** How it was found: its record, the /proc scan, or both. */
  foundBy: ('record' | 'proc')[];
  /** Its command line (for reports), empty when unreadable. */
  cmdline: string;
}

/** Whether `dir` is a VM directory of the state root `stateDir` (`<stateDir>/vms/<id>`...). */
export function isVmDirOf(stateDir: string, dir: string): boolean {
  const resolved = path.resolve(dir);
  const parent = path.dirname(resolved);
  return path.dirname(parent) === path.resolve(stateDir)
    && (VM_DIR_PARENTS as readonly string[]).includes(path.basename(parent))
    && path.basename(resolved) !== '' && !path.basename(resolved).startsWith('.');
}

/** Every VM directory of the state root. */
function vmDirsOf(stateDir: string): string[] {
  const dirs: string[] = [];
  for (const parent of VM_DIR_PARENTS) {
    const base = path.join(path.resolve(stateDir), parent);
    let names: string[];
    try {
      names = fs.readdirSync(base);
    } catch {
      continue;
    }
    for (const name of names) {
      const dir = path.join(base, name);
      if (isVmDirOf(stateDir, dir) && fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) dirs.push(dir);
    }
  }
  return dirs;
}

function parseIdentity(text: string): ProcessIdentity | null {
  const match = /^(\d+):(\d+)$/.exec(text);
  if (!match) return null;
  const pid = Number(match[1]);
  return Number.isSafeInteger(pid) && pid > 0 ? { pid, startTime: match[2]! } : null;
}

function cmdlineOf(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0+$/, '').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

/** Processes carrying the wrapper's marker for a VM directory of this state root. */
function scanProc(stateDir: string): { identity: ProcessIdentity; vmDir: string; parent: ProcessIdentity }[] {
  const out: { identity: ProcessIdentity; vmDir: string; parent: ProcessIdentity }[] = [];
  let pids: string[];
  try {
    pids = fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p));
  } catch {
    return out;
  }
  const dirPrefix = `${VM_DIR_ENV}=`;
  const parentPrefix = `${VMM_PARENT_ENV}=`;
  for (const name of pids) {
    const pid = Number(name);
    if (pid === process.pid) continue;
    let environ: string;
    try {
      environ = fs.readFileSync(`/proc/${pid}/environ`, 'latin1');
    } catch {
      continue; // gone, or a kernel thread
    }
    if (!environ.includes(dirPrefix)) continue;
    let vmDir = '';
    let parent: ProcessIdentity | null = null;
    for (const entry of environ.split('\0')) {
      if (entry.startsWith(dirPrefix)) vmDir = Buffer.from(entry.slice(dirPrefix.length), 'latin1').toString('utf8');
      else if (entry.startsWith(parentPrefix)) parent = parseIdentity(entry.slice(parentPrefix.length));
    }
    if (!vmDir || !parent || !isVmDirOf(stateDir, vmDir)) continue;
    const startTime = liveProcessStartTime(pid);
    if (startTime === null) continue;
    out.push({ identity: { pid, startTime }, vmDir: path.resolve(vmDir), parent });
  }
  return out;
}

/**
 * The live VMM processes of the state root `stateDir` (SMOLVM_ROOT's `run`, or /run/smolvm),
 * found by their records and by a /proc scan; with `orphanedOnly`, only those whose parent
 * is gone. Another state root's VMMs are never listed.
 */
export function findVmmProcesses(stateDir: string, opts: { orphanedOnly?: boolean } = {}): VmmProcess[] {
  const found = new Map<string, VmmProcess>();
  const add = (identity: ProcessIdentity, vmDir: string, parent: ProcessIdentity, by: 'record' | 'proc'): void => {
    const key = `${identity.pid}:${identity.startTime}`;
    const known = found.get(key);
    if (known) {
      if (!known.foundBy.includes(by)) known.foundBy.push(by);
      return;
    }
    found.set(key, {
      pid: identity.pid, startTime: identity.startTime, vmDir, parent,
      orphaned: !isSameProcessAlive(parent), foundBy: [by], cmdline: cmdlineOf(identity.pid),
    });
  };
  for (const dir of vmDirsOf(stateDir)) {
    const record = readVmmRecord(dir);
    if (record && isSameProcessAlive(record)) add(record, dir, record.parent, 'record');
  }
  for (const proc of scanProc(stateDir)) add(proc.identity, proc.vmDir, proc.parent, 'proc');
  const all = [...found.values()];
  return opts.orphanedOnly ? all.filter((p) => p.orphaned) : all;
}

export interface VmmSweepResult {
  /** Orphaned VMMs killed. */
  killed: VmmProcess[];
  /** VM directories removed (their VMM gone, its parent gone). */
  removedDirs: string[];
  /** What could not be done, one line each. */
  problems: string[];
}

/** Unmounts what is mounted under `dir` (a VM's host directory shares), then removes it. */
async function removeVmDir(dir: string, problems: string[]): Promise<boolean> {
  const { detachAll } = await import('./host-mounts');
  for (const problem of await detachAll([], dir)) problems.push(problem);
  const left = removeQuietly(dir);
  if (left.length > 0) problems.push(`VM directory ${dir} not fully removed: ${left.join(' ')}`);
  return left.length === 0;
}

/** The processes a VM directory names as its own (the VMM's parent, the directory's maker);
 *  null when it names none (made by an older smolvm, or mid-write). */
function ownersOf(dir: string): ProcessIdentity[] | null {
  const owners = [readVmmRecord(dir)?.parent, readVmDirOwner(dir)].filter((o): o is ProcessIdentity => o !== undefined && o !== null);
  return owners.length > 0 ? owners : null;
}

/**
 * Kills (SIGKILL, waited for) the orphaned VMMs of the state root `paths.stateDir` and removes
 * the VM directories whose owner (the VMM's parent, or the process that made the directory
 * before any VMM ran in it) is gone, with each one's data directory (`<cacheDir>/vms/<id>`:
 * disks, logs), and data directories whose VM directory is gone. A VMM whose parent lives, a
 * directory whose owner lives or names none, and anything of another root are left alone.
 */
export async function sweepOrphanedVmms(paths: Paths): Promise<VmmSweepResult> {
  const { stateDir } = paths;
  const result: VmmSweepResult = { killed: [], removedDirs: [], problems: [] };
  const killAndWait = async (vmms: VmmProcess[]): Promise<void> => {
    const killed = vmms.filter((vmm) => killIdentified(vmm, 'SIGKILL'));
    result.killed.push(...killed);
    await Promise.all(killed.map(async (vmm) => {
      if (!(await waitGone(vmm, KILL_WAIT_MS))) result.problems.push(`VMM ${vmm.pid} (${vmm.vmDir}) did not exit after SIGKILL`);
    }));
  };
  const orphans = findVmmProcesses(stateDir, { orphanedOnly: true });
  await killAndWait(orphans);
  const dirs = new Set(orphans.map((vmm) => vmm.vmDir));
  for (const dir of vmDirsOf(stateDir)) {
    const owners = ownersOf(dir);
    if (owners && !owners.some(isSameProcessAlive)) dirs.add(dir);
  }
  for (const dir of dirs) {
    if (!isVmDirOf(stateDir, dir) || !fs.existsSync(dir)) continue;
    // Rechecked: an owner alive after all keeps its directory.
    const owners = ownersOf(dir);
    if (owners?.some(isSameProcessAlive)) continue;
    // A VMM recorded there that the scans missed (its parent died just now) goes first.
    const record = readVmmRecord(dir);
    if (record && isSameProcessAlive(record)) {
      await killAndWait([{ ...record, vmDir: dir, orphaned: true, foundBy: ['record'], cmdline: cmdlineOf(record.pid) }]);
    }
    if ((record && isSameProcessAlive(record)) || orphans.some((vmm) => vmm.vmDir === dir && isSameProcessAlive(vmm))) continue;
    if (await removeVmDir(dir, result.problems)) result.removedDirs.push(dir);
  }
  removeOrphanedDataDirs(paths, result);
  return result;
}

/**
 * Data directories (`<cacheDir>/vms/<id>`) whose VM directory (`<stateDir>/vms/<id>`) is gone:
 * a VM makes its VM directory first and removes it first, so none of these belongs to a VM
 * that still runs or is being made.
 */
function removeOrphanedDataDirs(paths: Paths, result: VmmSweepResult): void {
  const root = vmDataRoot(paths);
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch {
    return;
  }
  for (const name of names) {
    if (name.startsWith('.') || fs.existsSync(path.join(paths.stateDir, 'vms', name))) continue;
    const dir = vmDataDir(paths, name);
    const left = removeQuietly(dir);
    if (left.length > 0) result.problems.push(`VM data directory ${dir} not fully removed: ${left.join(' ')}`);
    else result.removedDirs.push(dir);
  }
}
