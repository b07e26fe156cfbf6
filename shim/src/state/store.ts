// Per-container state on disk, versioned and written atomically. `delete` (run by containerd
// when the daemon is gone) and any later daemon work from this file alone: it names the VMM
// process (pid + start time), the VM's directories, sockets and disks.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../util/fsutil';
import { validateIdentifier } from '../util/identifiers';
import type { ProcessIdentity } from '../util/proc';

/**
 * The version this smolvm writes. 2: the VM's record names its VMM by one identity, its
 * directories by what they are (`stateDir`, `dataDir`), and no longer carries `disks`. Files of
 * version 1 (smolvm before that) are read too: a task created by an older shim can still be
 * deleted by this one.
 */
export const STATE_VERSION = 2;
/** Versions read (each migrated to the current one on read). */
export const STATE_VERSIONS_READ = [1, 2] as const;

export type ContainerStatus = 'creating' | 'created' | 'running' | 'stopped';

export interface VmRecord {
  backend: string;
  /** The VMM process (qemu or smolvm-vmm): pid + /proc start time (never a recycled pid). */
  vmm: ProcessIdentity;
  /** The VM's state directory (sockets, small files): `<stateDir>/vms/<vmId>`. */
  stateDir: string;
  /** The VM's data directory on disk (writable disks, slot files, console and VMM logs):
   *  `<cacheDir>/vms/<vmId>`; null for a VM of a smolvm that kept everything in `stateDir`. */
  dataDir: string | null;
  sockets: Record<string, string>;
  /** Host cgroup directories smolvm created for the VMM (linux.cgroupsPath), parents first. */
  hostCgroupDirs: string[];
}

/** A binary:// logger process of the container's init ("") or of one exec. */
export interface LoggerRecord {
  execId: string;
  pid: number;
  /** /proc start time: `delete` signals the pid only while it is still this process. */
  startTime: string;
}

export interface ContainerState {
  version: number;
  id: string;
  namespace: string;
  bundle: string;
  status: ContainerStatus;
  shimPid: number;
  vm: VmRecord | null;
  exitStatus?: number;
  exitedAt?: string;
  /** Logger processes the daemon spawned: `delete` stops them when the daemon died. */
  loggers?: LoggerRecord[];
  /** Host mount points of this container's host directories (bind mounts into the VM's 9p
   *  share, `<vm.dir>/shares/<n>`), recorded before they are made: `delete` detaches them. */
  hostMounts?: string[];
}

export class StateStore {
  constructor(private readonly stateDir: string) {}

  private dir(namespace: string): string {
    return path.join(this.stateDir, 'tasks', namespace);
  }

  file(namespace: string, id: string): string {
    return path.join(this.dir(namespace), `${id}.json`);
  }

  write(state: ContainerState): void {
    fs.mkdirSync(this.dir(state.namespace), { recursive: true, mode: 0o700 });
    writeFileAtomic(this.file(state.namespace, state.id), JSON.stringify(state, null, 2) + '\n');
  }

  /** The container's state, migrated to the current version; null when there is none. A file
   *  this smolvm cannot read (another version, corrupt) is a clear error naming it. */
  read(namespace: string, id: string): ContainerState | null {
    const file = this.file(namespace, id);
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch {
      return null;
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new Error(`state file ${file} is not JSON: ${(err as Error).message}`);
    }
    return parseState(raw, file);
  }

  remove(namespace: string, id: string): void {
    fs.rmSync(this.file(namespace, id), { force: true });
  }
}

/** Container ids become file names: containerd's identifier rule (InvalidArgument otherwise). */
export function validateId(id: string): void {
  validateIdentifier('container id', id);
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const isStringMap = (v: unknown): v is Record<string, string> => isObject(v) && Object.values(v).every((x) => typeof x === 'string');
const isStrings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');

/** A version-1 VM record (smolvm before issue 10): `pid`/`pidStartTime`, `dir`, `disks`. */
function vmRecordV1(vm: Json, bad: (what: string) => Error): VmRecord {
  if (typeof vm.backend !== 'string' || !Number.isInteger(vm.pid) || typeof vm.pidStartTime !== 'string' ||
    typeof vm.dir !== 'string' || !isStringMap(vm.sockets)) throw bad('vm (version 1)');
  if (vm.dataDir !== undefined && typeof vm.dataDir !== 'string') throw bad('vm.dataDir');
  if (vm.hostCgroupDirs !== undefined && !isStrings(vm.hostCgroupDirs)) throw bad('vm.hostCgroupDirs');
  return {
    backend: vm.backend, vmm: { pid: vm.pid as number, startTime: vm.pidStartTime }, stateDir: vm.dir,
    dataDir: (vm.dataDir as string | undefined) ?? null, sockets: vm.sockets, hostCgroupDirs: (vm.hostCgroupDirs as string[] | undefined) ?? [],
  };
}

function vmRecordV2(vm: Json, bad: (what: string) => Error): VmRecord {
  const vmm = vm.vmm;
  if (typeof vm.backend !== 'string' || !isObject(vmm) || !Number.isInteger(vmm.pid) || typeof vmm.startTime !== 'string' ||
    typeof vm.stateDir !== 'string' || (vm.dataDir !== null && typeof vm.dataDir !== 'string') ||
    !isStringMap(vm.sockets) || !isStrings(vm.hostCgroupDirs)) throw bad('vm');
  return {
    backend: vm.backend, vmm: { pid: vmm.pid as number, startTime: vmm.startTime }, stateDir: vm.stateDir,
    dataDir: vm.dataDir as string | null, sockets: vm.sockets, hostCgroupDirs: vm.hostCgroupDirs,
  };
}

/** A state file's contents, of any version read, as the current version. */
export function parseState(raw: unknown, file: string): ContainerState {
  const bad = (what: string): Error => new Error(`state file ${file}: malformed ${what}`);
  if (!isObject(raw)) throw bad('contents (not an object)');
  const version = raw.version;
  if (version !== 1 && version !== 2) {
    throw new Error(`state file ${file} has version ${String(version)}; this smolvm reads versions ${STATE_VERSIONS_READ.join(' and ')}`);
  }
  for (const key of ['id', 'namespace', 'bundle', 'status'] as const) if (typeof raw[key] !== 'string') throw bad(key);
  if (!Number.isInteger(raw.shimPid)) throw bad('shimPid');
  let vm: VmRecord | null = null;
  if (raw.vm !== null && raw.vm !== undefined) {
    if (!isObject(raw.vm)) throw bad('vm');
    vm = version === 1 ? vmRecordV1(raw.vm, bad) : vmRecordV2(raw.vm, bad);
  }
  if (raw.hostMounts !== undefined && !isStrings(raw.hostMounts)) throw bad('hostMounts');
  if (raw.loggers !== undefined && !(Array.isArray(raw.loggers) && raw.loggers.every((l) =>
    isObject(l) && typeof l.execId === 'string' && Number.isInteger(l.pid) && typeof l.startTime === 'string'))) throw bad('loggers');
  return {
    version: STATE_VERSION, id: raw.id as string, namespace: raw.namespace as string, bundle: raw.bundle as string,
    status: raw.status as ContainerStatus, shimPid: raw.shimPid as number, vm,
    ...(typeof raw.exitStatus === 'number' ? { exitStatus: raw.exitStatus } : {}),
    ...(typeof raw.exitedAt === 'string' ? { exitedAt: raw.exitedAt } : {}),
    ...(raw.loggers !== undefined ? { loggers: raw.loggers as LoggerRecord[] } : {}),
    ...(raw.hostMounts !== undefined ? { hostMounts: raw.hostMounts as string[] } : {}),
  };
}
