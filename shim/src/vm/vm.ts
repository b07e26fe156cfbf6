// A Vm is one running microVM whose guest agent has answered (builder.ts made it): its VMM
// process, its agent connection, the files behind its slots, its shared directory, and its
// two directories: small state (sockets) under the state dir, what grows with the guest
// (disks, logs) in its data dir on disk (config/paths.ts). It pauses and resumes on purpose,
// is declared lost when its guest stops answering, and is destroyed with everything of it.
import type { AgentClient, DeadlineExpiry } from '../agent/client';
import type { Logger } from '../log';
import { removeQuietly } from '../util/fsutil';
import { killIdentified } from '../util/proc';
import { VMM_PROGRAM, vmLossReport, type DiskSlot, type Vmm, type VmLossReport } from './backend';
import type { HostShares } from './host-mounts';

export interface VmParts extends VmDirs {
  vmId: string;
  vmm: Vmm;
  agent: AgentClient;
  slots: DiskSlot[];
  log: Logger;
  restoredFrom: string | null;
  shares: HostShares | null;
}

/** A VM's two directories (config/paths.ts). */
export interface VmDirs {
  /** `<stateDir>/vms/<vmId>`: sockets and other small state. */
  dir: string;
  /** `<cacheDir>/vms/<vmId>`: disks, slot files, logs. */
  dataDir: string;
}

export class Vm {
  private destroyed: Promise<void> | null = null;
  /** Set once the VM is declared lost (declareLost): why, and what it said last. */
  private lostReport: VmLossReport | null = null;

  readonly vmId: string;
  readonly dir: string;
  /** On disk: this VM's disks and logs (removed with it). */
  readonly dataDir: string;
  readonly vmm: Vmm;
  readonly agent: AgentClient;
  /** The files behind the shape's disk slots. */
  readonly slots: DiskSlot[];
  /** The template key it was restored from, null when cold-booted. */
  readonly restoredFrom: string | null;
  /** The VM's one 9p share (`<dir>/shares`), null when its shape has none: host directories
   *  are bind-mounted into it for the containers (host-mounts.ts). */
  readonly shares: HostShares | null;
  private readonly log: Logger;

  /** A VM the builder made (builder.ts): it is ready, its agent answered. */
  constructor(parts: VmParts) {
    ({ vmId: this.vmId, dir: this.dir, dataDir: this.dataDir, vmm: this.vmm, agent: this.agent, slots: this.slots,
      restoredFrom: this.restoredFrom, shares: this.shares, log: this.log } = parts);
    const agent = this.agent;
    // A call the guest did not answer in time: the guest is wedged, the VM is given up.
    agent.on('deadlineExceeded', (expiry: DeadlineExpiry) => this.declareLost(expiry.error.message));
  }

  /** True once the VM was declared lost: its VMM is killed, its processes end with 137. */
  get lost(): boolean {
    return this.lostReport !== null;
  }

  /**
   * The one place a VM is given up: a guest that stopped answering (a call past its deadline)
   * is never waited for again. Records why (with the console's last words, taken before the
   * VM directory goes), closes the agent channel (every pending call and long poll ends, so
   * every process of every container in the VM reports exit 137 naming this cause), kills the
   * VMM with SIGKILL at once (a wedged or stopped VMM would not answer a clean stop) and frees
   * the VM's files. Idempotent; a VM already being torn down by smolvm is left to that.
   */
  declareLost(cause: string): void {
    if (this.lostReport || this.destroyed) return;
    const vmm = `${VMM_PROGRAM[this.vmm.backend]}, pid ${this.vmm.identity.pid}`;
    this.lostReport = {
      reason: `${cause}; the VM was declared lost and its VMM (${vmm}) killed`,
      diagnostics: this.vmm.diagnostics(),
    };
    this.log.error(`vm lost: ${this.lostReport.reason}`, { diagnostics: this.lostReport.diagnostics });
    // Calls still pending fail now, saying why (the rest of the teardown closes nothing new).
    this.agent.close(new Error(`the VM was declared lost: ${cause}`));
    killIdentified(this.vmm.identity, 'SIGKILL');
    this.destroy().catch((err: unknown) => this.log.warn('tearing down the lost vm failed', { error: String(err) }));
  }

  /** Why the VM went away under its processes: the declared loss, else what the VMM and console say. */
  lossReport(): Promise<VmLossReport> {
    return this.lostReport ? Promise.resolve(this.lostReport) : vmLossReport(this.vmm);
  }

  /**
   * Pauses the VM on purpose: the agent's deadlines stop first (a paused guest cannot answer,
   * and that is no wedge); calls sent meanwhile wait for `resume`, then get their full time.
   */
  async pause(): Promise<void> {
    this.agent.deadlineClock.hold();
    try {
      await this.vmm.pause();
    } catch (err) {
      this.agent.deadlineClock.release();
      throw err;
    }
  }

  /** Lets a paused VM run again; the deadlines start over once it runs. */
  async resume(): Promise<void> {
    await this.vmm.resume();
    this.agent.deadlineClock.release();
  }

  /** Stops the VM and removes its directories (disks, sockets, logs). Idempotent. */
  destroy(): Promise<void> {
    if (!this.destroyed) {
      this.destroyed = (async () => {
        this.agent.close();
        await this.vmm.kill();
        // Host bind mounts first: the removal below never descends into a mount anyway.
        await this.shares?.releaseAll();
        const left = [...removeQuietly(this.dir), ...removeQuietly(this.dataDir)];
        if (left.length > 0) this.log.warn('vm directory not fully removed (mounts left?)', { left: left.join(' ') });
        this.log.debug('vm destroyed');
      })();
    }
    return this.destroyed;
  }
}
