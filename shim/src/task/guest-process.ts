// One process of a container in the guest, the init process or an exec: its containerd state
// machine, its stdio on the agent channel, its start, signals, stdin, terminal size, and the
// watch that turns the agent's WaitProcess answer into its exit (137 when the VM is lost).
import type { AgentClient, ProcessIo } from '../agent/client';
import { notFound } from '../errdefs';
import type { Logger } from '../log';
import type { VmLossReport } from '../vm/backend';
import { ProcessState, type ExitInfo } from './process';

/** Exit status reported when the VM is gone before the process reported its own. */
const EXIT_STATUS_LOST = 137;

export interface GuestProcessOptions {
  agent: AgentClient;
  containerId: string;
  /** "" for the container's init process. */
  execId: string;
  /** Its pid in the guest (informational: containerd sees the VMM pid). */
  guestPid: number;
  io: ProcessIo;
  terminal: boolean;
  log: Logger;
  /** Why the VM went away under the process (a kernel panic, the VMM killed...), for the log. */
  describeLoss: () => Promise<VmLossReport>;
  /** Called once, after the process exited and all its output was delivered. */
  onExit?: (info: ExitInfo) => void;
  /** Called right before onExit with the container's OOM-kill count at the exit (when > 0),
   *  so that TaskOOM can go out before TaskExit. */
  onOomCount?: (count: bigint) => void;
}

export class GuestProcess {
  readonly state: ProcessState;
  private startInFlight: Promise<void> = Promise.resolve();

  constructor(private readonly opts: GuestProcessOptions) {
    this.state = new ProcessState(opts.containerId, opts.execId);
  }

  get execId(): string {
    return this.opts.execId;
  }

  get guestPid(): number {
    return this.opts.guestPid;
  }

  get terminal(): boolean {
    return this.opts.terminal;
  }

  private get name(): string {
    const { containerId, execId } = this.opts;
    return execId ? `container ${containerId} exec ${execId}` : `container ${containerId}`;
  }

  /** Starts waiting for the exit in the background (once, right after creation). */
  watchExit(): void {
    const { agent, containerId, execId, io, log } = this.opts;
    void (async () => {
      let info: ExitInfo;
      let oomKill = 0n;
      try {
        const result = await agent.waitProcess(containerId, execId);
        await io.outputDone;
        info = { exitStatus: result.exitStatus, exitedAt: result.exitedAt };
        oomKill = result.oomKill;
      } catch (err) {
        // Taken now: the VM is gone, this is when the process ended.
        const exitedAt = new Date();
        const loss = await this.opts.describeLoss().catch((e: unknown) => ({ reason: `cause unknown (${String(e)})`, diagnostics: '' }));
        // Torn down by smolvm itself (Delete, shutdown): the exit is already recorded.
        if (this.state.status === 'stopped') return;
        // The init process's line carries the console tail; an exec's names the cause only.
        log.warn(`${this.name}: the VM is gone before the process reported an exit: ${loss.reason}; reporting exit status ${EXIT_STATUS_LOST}`, {
          error: String(err), ...(execId ? {} : { diagnostics: loss.diagnostics }),
        });
        info = { exitStatus: EXIT_STATUS_LOST, exitedAt };
      }
      // Never report the exit before the start it follows.
      await this.startInFlight;
      if (oomKill > 0n && this.state.status !== 'stopped') this.opts.onOomCount?.(oomKill);
      if (this.state.markExited(info)) {
        log.info(`${this.name} exited`, { exit_status: info.exitStatus });
        this.opts.onExit?.(info);
      }
    })();
  }

  /** Lets the process exec; `afterStart` runs before any exit can be reported. */
  start(afterStart?: () => void): Promise<void> {
    const run = (async () => {
      await this.opts.agent.startProcess(this.opts.containerId, this.opts.execId);
      this.state.markRunning();
      afterStart?.();
    })();
    this.startInFlight = run.catch(() => undefined);
    return run;
  }

  /** Signals the process, or with `all` every process of the container. */
  async kill(signal: number, all: boolean): Promise<void> {
    if (this.state.status === 'stopped') throw notFound(`${this.name}: process already finished`);
    await this.opts.agent.signalProcess(this.opts.containerId, this.opts.execId, signal, all);
  }

  async closeStdin(): Promise<void> {
    if (this.state.status === 'stopped') return;
    await this.opts.agent.closeStdin(this.opts.containerId, this.opts.execId);
  }

  /** Sets the pty's window size; a process that has exited has nothing to resize. */
  async resizePty(width: number, height: number): Promise<void> {
    if (this.state.status === 'stopped') return;
    await this.opts.agent.resizePty(this.opts.containerId, this.opts.execId, width, height);
  }
}
