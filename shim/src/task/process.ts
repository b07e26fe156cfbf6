// The state machine of one process (the container's init, later execs), as containerd sees
// it: created → running → stopped (or created → stopped when killed before start). Exit
// status and time are set once; every Wait resolves with them.
import { failedPrecondition } from '../errdefs';

export type ProcessStatus = 'created' | 'running' | 'stopped';

export interface ExitInfo {
  exitStatus: number;
  exitedAt: Date;
}

export class ProcessState {
  private current: ProcessStatus = 'created';
  private exitInfo: ExitInfo | null = null;
  private readonly exitedPromise: Promise<ExitInfo>;
  private resolveExit!: (info: ExitInfo) => void;

  constructor(readonly containerId: string, readonly execId: string) {
    this.exitedPromise = new Promise((resolve) => { this.resolveExit = resolve; });
  }

  get status(): ProcessStatus {
    return this.current;
  }

  get exit(): ExitInfo | null {
    return this.exitInfo;
  }

  /** Resolves once the process has exited (and its output has been delivered). */
  get exited(): Promise<ExitInfo> {
    return this.exitedPromise;
  }

  private get name(): string {
    return this.execId ? `exec ${this.execId} of container ${this.containerId}` : `container ${this.containerId}`;
  }

  markRunning(): void {
    if (this.current !== 'created') throw failedPrecondition(`${this.name} cannot start: it is ${this.current}`);
    this.current = 'running';
  }

  /** Records the exit; later calls are ignored (the first cause wins). */
  markExited(info: ExitInfo): boolean {
    if (this.exitInfo) return false;
    this.exitInfo = info;
    this.current = 'stopped';
    this.resolveExit(info);
    return true;
  }
}
