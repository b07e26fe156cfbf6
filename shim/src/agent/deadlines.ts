// How long the shim waits for the guest agent's answer to each call before it gives the VM up
// (the VM is then declared lost: vm/vm.ts). A wedged guest (a stopped VMM, a hung
// kernel, an agent stuck in a syscall) must not wedge the shim; a healthy guest that is slow
// (TCG on a loaded 2-core CI host) must never hit a deadline. So every deadline is about a
// hundred times the slowest round trip measured (bench/agent-rtt.ts, tcg, on a 2-core host at
// load average 10 with four more CPU hogs: CreateContainer at most 0.33 s, every other call at
// most 0.11 s), and covers the waits the agent itself may do inside the call.
import { Code, RpcError } from '../errdefs';

/** The agent calls the shim waits for with a deadline. */
export type DeadlineCall =
  | 'createContainer' | 'execProcess' | 'startProcess' | 'signalProcess' | 'closeStdin' | 'resizePty'
  | 'listProcesses' | 'statsContainer' | 'updateContainer' | 'removeProcess' | 'removeContainer'
  | 'shutdown' | 'reseed';

/**
 * Long polls: answered when something happens in the guest (an exit, an OOM kill), which may
 * be never. They have no deadline; they end when the VM is lost (the channel closes).
 */
export const LONG_POLLS = ['waitProcess', 'watchOom'] as const;

/**
 * The deadline of each call at scale 1 (config `agent_deadline_scale` multiplies them all).
 * The agent serves one request at a time, and the shim starts a call's clock only once every
 * call sent before it has been answered (AgentClient), so a short call queued behind a long
 * one (a Kill behind a pod member's Create) is not cut short by the other's work.
 */
export const AGENT_CALL_DEADLINES_MS: Readonly<Record<DeadlineCall, number>> = {
  // Mounts the image and the writable disk, which the agent may wait for (a hot-added disk to
  // appear, a refreshed slot's new size: 5 s each at most), the 9p share, overlay, cgroup, then
  // forks the init and waits until it is set up: the longest call there is.
  createContainer: 60_000,
  // Forks into the container's namespaces and sets the process up (no disk waits).
  execProcess: 30_000,
  // Lets a set-up process exec and waits until it did (or failed).
  startProcess: 30_000,
  // kill(2) and an answer: short, so that a kill of a wedged guest answers soon.
  signalProcess: 10_000,
  closeStdin: 10_000,
  resizePty: 10_000,
  // Reads the container's cgroup.procs / cgroup files, or writes a few of them.
  listProcesses: 10_000,
  statsContainer: 10_000,
  updateContainer: 10_000,
  // SIGKILL, then answered once the kernel has reaped the process (or, for a container, its
  // whole pid namespace) and the container's disks are unmounted: a process stuck in
  // uninterruptible I/O delays it.
  removeProcess: 30_000,
  removeContainer: 30_000,
  shutdown: 10_000,
  // Mixes entropy into the guest RNG and sets the clock. (A restore passes its own bound.)
  reseed: 15_000,
};

/** config `agent_deadline_scale`: the range accepted (0.01: tests of the deadlines themselves; 100: very slow hosts). */
export const MIN_DEADLINE_SCALE = 0.01;
export const MAX_DEADLINE_SCALE = 100;
/** Node fires longer timers at once. */
const MAX_TIMER_MS = 0x7fff_ffff;

/** The deadline of `call` at `scale`, in whole milliseconds. */
export function agentCallDeadlineMs(call: DeadlineCall, scale = 1): number {
  if (!(scale >= MIN_DEADLINE_SCALE && scale <= MAX_DEADLINE_SCALE)) {
    throw new RpcError(Code.InvalidArgument, `agent deadline scale must be ${MIN_DEADLINE_SCALE}..${MAX_DEADLINE_SCALE}, got ${scale}`);
  }
  return Math.min(MAX_TIMER_MS, Math.max(1, Math.round(AGENT_CALL_DEADLINES_MS[call] * scale)));
}

/** One armed deadline: cancel it once the call settled. */
export interface ArmedDeadline {
  cancel(): void;
}

interface Entry {
  readonly ms: number;
  readonly onExpire: () => void;
  timer: NodeJS.Timeout | undefined;
}

/**
 * The deadlines of one VM's calls, which stop while the VM is paused on purpose (Pause: the
 * guest cannot answer, and that is no wedge). A held deadline starts over, in full, when the
 * hold ends: the guest first has to run again to answer.
 */
export class DeadlineClock {
  private readonly armed = new Set<Entry>();
  private isHeld = false;

  get held(): boolean {
    return this.isHeld;
  }

  /** Number of deadlines armed (running or held). */
  get size(): number {
    return this.armed.size;
  }

  /** Calls `onExpire` once after `ms` of time not held, unless canceled first. */
  arm(ms: number, onExpire: () => void): ArmedDeadline {
    const entry: Entry = { ms, onExpire, timer: undefined };
    this.armed.add(entry);
    if (!this.isHeld) this.start(entry);
    return {
      cancel: () => {
        if (entry.timer) clearTimeout(entry.timer);
        entry.timer = undefined;
        this.armed.delete(entry);
      },
    };
  }

  /** Stops every deadline (and those armed meanwhile) until `release`. Idempotent. */
  hold(): void {
    if (this.isHeld) return;
    this.isHeld = true;
    for (const entry of this.armed) {
      if (entry.timer) clearTimeout(entry.timer);
      entry.timer = undefined;
    }
  }

  /** Starts every held deadline over, in full. Idempotent. */
  release(): void {
    if (!this.isHeld) return;
    this.isHeld = false;
    for (const entry of this.armed) this.start(entry);
  }

  private start(entry: Entry): void {
    entry.timer = setTimeout(() => {
      entry.timer = undefined;
      if (!this.armed.delete(entry)) return;
      entry.onExpire();
    }, entry.ms);
  }
}
