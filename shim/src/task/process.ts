// The state machine of one process (a container's init, or an exec), as containerd sees it:
//
//   created ──start──► running ──pause──► pausing ──► paused ──resume──► running
//      │                  │                  └──(pause failed)──► running
//      └──────────────────┴──── exit (or the VM's loss, from any state) ──► stopped
//
// Pausing stops the whole VM (task/container.ts): every process of the container goes with
// it. Exit status and time are set once; every Wait resolves with them.
import { failedPrecondition } from '../errdefs';

export type ProcessStatus = 'created' | 'running' | 'pausing' | 'paused' | 'stopped';

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

  /** Started and not stopped: running, or paused (or being paused) with its VM. */
  get live(): boolean {
    return this.current === 'running' || this.current === 'pausing' || this.current === 'paused';
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

  private move(from: readonly ProcessStatus[], to: ProcessStatus, action: string): void {
    if (!from.includes(this.current)) throw failedPrecondition(`${this.name} cannot ${action}: it is ${this.current}`);
    this.current = to;
  }

  markRunning(): void {
    this.move(['created'], 'running', 'start');
  }

  markPausing(): void {
    this.move(['running'], 'pausing', 'pause');
  }

  markPaused(): void {
    this.move(['pausing'], 'paused', 'pause');
  }

  /** Running again: resumed, or a pause that failed. */
  markResumed(): void {
    this.move(['pausing', 'paused'], 'running', 'resume');
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
