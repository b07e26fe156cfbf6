// Per-container state on disk, versioned and written atomically. `delete` (run by containerd
// when the daemon is gone) and any later daemon work from this file alone: it names the VMM
// process (pid + start time), the VM's directories, sockets and disks.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../util/fsutil';
import { validateIdentifier } from '../util/identifiers';

export const STATE_VERSION = 1;

export type ContainerStatus = 'creating' | 'created' | 'running' | 'stopped';

export interface VmRecord {
  backend: string;
  /** The VMM process (qemu or smolvm-vmm): pid + /proc start time. */
  pid: number;
  pidStartTime: string;
  /** The VM's state directory (sockets, small files): `<stateDir>/vms/<vmId>`. */
  dir: string;
  /** The VM's data directory on disk (writable disks, slot files, console and VMM logs):
   *  `<cacheDir>/vms/<vmId>`. Absent in state files written before it existed (their VMs kept
   *  everything in `dir`). */
  dataDir?: string;
  sockets: Record<string, string>;
  disks: Record<string, string>;
  /** Host cgroup directories smolvm created for the VMM (linux.cgroupsPath), parents first. */
  hostCgroupDirs?: string[];
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

  read(namespace: string, id: string): ContainerState | null {
    let text: string;
    try {
      text = fs.readFileSync(this.file(namespace, id), 'utf8');
    } catch {
      return null;
    }
    const parsed = JSON.parse(text) as ContainerState;
    if (parsed.version !== STATE_VERSION) {
      throw new Error(`state file ${this.file(namespace, id)} has version ${parsed.version}, this smolvm reads ${STATE_VERSION}`);
    }
    return parsed;
  }

  remove(namespace: string, id: string): void {
    fs.rmSync(this.file(namespace, id), { force: true });
  }
}

/** Container ids become file names: containerd's identifier rule (InvalidArgument otherwise). */
export function validateId(id: string): void {
  validateIdentifier('container id', id);
}
