// Every VMM process, QEMU (tcg) as well as smolvm-vmm (kvm), is started through one exec
// wrapper, bin/smolvm-vmm-exec (launcher/vmm-exec/vmm-exec.c), because neither node's spawn
// nor posix_spawn can run code in the child before its exec. Before it execs the VMM the
// wrapper
//   - sets PR_SET_PDEATHSIG(SIGKILL) and rechecks its parent: the VMM dies with the shim
//     process that started it, whatever that process dies of (kill -9 included);
//   - writes <vmDir>/vmm-process.json (pid and start time, its parent's too) atomically;
//   - puts SMOLVM_VM_DIR and SMOLVM_VMM_PARENT in the VMM's environment;
// so that a VMM is on disk and in /proc, attributable to one state root, before it can run
// or outlive its parent: vmm-sweep.ts finds and removes what a dead shim left.
//
// The parent that PDEATHSIG watches is the *thread* that forked: node's child_process and the
// VMM addon (native-vmm/src/addon/spawn.cc) both spawn on the JS main thread, which lives as
// long as the process.
//
// This module also keeps the VMMs this process started until they exit: a process that
// leaves at once (a spare told to go while its VM restores, a daemon that failed to start)
// kills them synchronously first, so that no boot's own failure handling runs afterwards.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { removeQuietly, mountPointsUnder } from '../util/fsutil';
import { isSameProcessAlive, liveProcessStartTime, processStartTime, type ProcessIdentity } from '../util/proc';
import { isExecutable, vmmExecBinary } from './vmm/locate';

/** The wrapper's record in the VM's directory. */
export const VMM_RECORD_FILE = 'vmm-process.json';
/** The process that made the VM's directory (and will start its VMM): markVmDirOwner. */
export const VM_OWNER_FILE = 'vm-owner.json';
/** In the VMM's environment: its VM directory (which names its state root). */
export const VM_DIR_ENV = 'SMOLVM_VM_DIR';
/** In the VMM's environment: `<pid>:<start time>` of the shim process that started it. */
export const VMM_PARENT_ENV = 'SMOLVM_VMM_PARENT';
/** The wrapper's own exit codes (a VMM exits with 0-3). */
export const VMM_EXEC_EXIT = { usage: 121, parentGone: 122, setup: 123, exec: 124 } as const;

/** What the wrapper records: the VMM and the shim process that started it. */
export interface VmmRecord extends ProcessIdentity {
  parent: ProcessIdentity;
  vmDir: string;
  program: string;
}

/**
 * The wrapper and its arguments, up to and including `--`: the VMM's own command line follows.
 * Throws when the wrapper is not built (no VMM starts without it).
 */
export function vmmExecPrefix(vmDir: string, env: NodeJS.ProcessEnv = process.env): string[] {
  const wrapper = vmmExecBinary(env);
  if (!isExecutable(wrapper)) {
    throw new Error(`the VMM exec wrapper ${wrapper} is not built: run \`npm run build:launcher\` (every VMM is started through it)`);
  }
  const dir = path.resolve(vmDir);
  return [wrapper, '--vm-dir', dir, '--record', path.join(dir, VMM_RECORD_FILE), '--parent', String(process.pid), '--'];
}

/** Explains a wrapper exit code, or null when it is the VMM's own. */
export function vmmExecFailure(code: number | null): string | null {
  switch (code) {
    case VMM_EXEC_EXIT.usage: return 'smolvm-vmm-exec rejected its arguments';
    case VMM_EXEC_EXIT.parentGone: return 'smolvm-vmm-exec found its parent gone';
    case VMM_EXEC_EXIT.setup: return 'smolvm-vmm-exec could not record the VMM';
    case VMM_EXEC_EXIT.exec: return 'smolvm-vmm-exec could not execute the VMM';
    default: return null;
  }
}

const isIdentity = (v: unknown): v is ProcessIdentity => typeof v === 'object' && v !== null
  && Number.isInteger((v as { pid?: unknown }).pid) && (v as { pid: number }).pid > 0
  && typeof (v as { startTime?: unknown }).startTime === 'string' && /^\d+$/.test((v as { startTime: string }).startTime);

/** The wrapper's record in `vmDir`, or null when absent or not one. */
export function readVmmRecord(vmDir: string): VmmRecord | null {
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(path.join(vmDir, VMM_RECORD_FILE), 'utf8'));
  } catch {
    return null;
  }
  if (!isIdentity(raw)) return null;
  const { parent, vmDir: dir, program } = raw as { parent?: unknown; vmDir?: unknown; program?: unknown };
  if (!isIdentity(parent) || typeof dir !== 'string') return null;
  return {
    pid: raw.pid, startTime: raw.startTime, parent: { pid: parent.pid, startTime: parent.startTime },
    vmDir: dir, program: typeof program === 'string' ? program : '',
  };
}

/** The owner recorded by markVmDirOwner, or null. */
export function readVmDirOwner(vmDir: string): ProcessIdentity | null {
  try {
    const raw: unknown = JSON.parse(fs.readFileSync(path.join(vmDir, VM_OWNER_FILE), 'utf8'));
    return isIdentity(raw) ? { pid: raw.pid, startTime: raw.startTime } : null;
  } catch {
    return null;
  }
}

interface Spawned {
  vmDir: string;
  /** Known once spawned (the wrapper's pid is the VMM's). */
  identity: ProcessIdentity | null;
}

/** VM directories this process made and VMMs it started (or is starting) that have not
 *  exited yet, by VM directory. */
const spawned = new Map<string, Spawned>();

let ownStartTime: string | null = null;

/**
 * Names this process as the owner of the VM directory it has just made, before anything
 * else happens in it: should this process die before the VMM exists (whose record then names
 * it), the sweep (vmm-sweep.ts) knows whose directory it was. killTrackedVmmsSync removes it.
 */
export function markVmDirOwner(vmDir: string): void {
  const dir = path.resolve(vmDir);
  ownStartTime ??= processStartTime(process.pid);
  const file = path.join(dir, VM_OWNER_FILE);
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify({ pid: process.pid, startTime: ownStartTime }), { mode: 0o600 });
  fs.renameSync(tmp, file);
  // Entries of directories gone without a VMM (a boot that failed before it) go here.
  for (const [known, entry] of spawned) if (entry.identity === null && !fs.existsSync(known)) spawned.delete(known);
  if (!spawned.has(dir)) spawned.set(dir, { vmDir: dir, identity: null });
}

/**
 * Notes a VMM being started into `vmDir` (call before the spawn). Returns the functions to
 * call with its pid once known, and when it has exited.
 */
export function trackVmm(vmDir: string): { spawnedAs: (pid: number) => void; exited: () => void } {
  const dir = path.resolve(vmDir);
  const entry: Spawned = { vmDir: dir, identity: null };
  spawned.set(dir, entry);
  return {
    spawnedAs: (pid) => {
      const startTime = processStartTime(pid);
      if (startTime !== null) entry.identity = { pid, startTime };
    },
    exited: () => {
      if (spawned.get(dir) === entry) spawned.delete(dir);
    },
  };
}

/** The VMMs this process has started and not seen exit (for tests and logs). */
export function trackedVmms(): { vmDir: string; identity: ProcessIdentity | null }[] {
  return [...spawned.values()].map((s) => ({ vmDir: s.vmDir, identity: s.identity }));
}

/** Sleeps without returning to the event loop: nothing else of this process runs meanwhile. */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/**
 * SIGKILLs every VMM this process started that still runs, waits (synchronously, up to
 * `timeoutMs`) until each is gone, and removes their VM directories (and those it made for a
 * VMM not started yet), unmounting what is mounted below first (what cannot be unmounted
 * stays, for vmm-sweep.ts once this process is gone).
 * Synchronous on purpose: called right before process.exit, it lets no promise of a boot in
 * progress settle (a restore killed under it would otherwise blame its template). Returns
 * the pids killed.
 */
export function killTrackedVmmsSync(timeoutMs = 3_000): number[] {
  const killed: ProcessIdentity[] = [];
  const entries = [...spawned.values()];
  for (const entry of entries) {
    // Not known yet (the addon's spawn awaits the VMM's hello): the wrapper recorded it.
    const record = entry.identity ? null : readVmmRecord(entry.vmDir);
    const identity = entry.identity ?? (record && record.parent.pid === process.pid ? record : null);
    if (!identity || !isSameProcessAlive(identity)) continue;
    try {
      process.kill(identity.pid, 'SIGKILL');
      killed.push(identity);
    } catch {
      // gone meanwhile
    }
  }
  const deadline = Date.now() + timeoutMs;
  // A killed child stays a zombie until this process reaps it: that counts as gone.
  while (killed.some((id) => liveProcessStartTime(id.pid) === id.startTime) && Date.now() < deadline) sleepSync(2);
  for (const entry of entries) {
    spawned.delete(entry.vmDir);
    if (detachAllSync(entry.vmDir)) removeQuietly(entry.vmDir);
  }
  return killed.map((id) => id.pid);
}

/** Lazily unmounts everything mounted under `dir` (its 9p share's binds), deepest first,
 *  without returning to the event loop; true when nothing is mounted there any more. */
function detachAllSync(dir: string): boolean {
  try {
    for (const point of mountPointsUnder(dir)) spawnSync('umount', ['-l', point], { stdio: 'ignore', timeout: 5_000 });
    return mountPointsUnder(dir).length === 0;
  } catch {
    return false; // mountinfo unreadable: never guess
  }
}
