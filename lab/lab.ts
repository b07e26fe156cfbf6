// The KVM lab: runs one command inside a QEMU-TCG VM whose emulated CPU (`-cpu max`) has AMD
// SVM, so the VM has a real /dev/kvm, on hosts without hardware virtualization. The VM sees the
// host's `/` (read-only 9p, tmpfs overlay on top, so writes inside are thrown away) at the same
// paths, so /work/main/bin/smolvm and /var/lib/smolvm are where they are on the host.
// Timings here say nothing about speed (everything is emulated); they prove correctness.
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { smolvmPaths } from '../shim/src/config/paths';
import { ensureLabInitramfs, HOST_ROOT_TAG, IO_TAG } from './initramfs';
import { ensureLabKernel, type LabKernel } from './kernel';

export type LabMachine = 'pc' | 'q35';

export interface LabRunOptions {
  /** QEMU is killed (SIGKILL) when the whole run, boot included, takes longer. */
  timeoutMs: number;
  /**
   * A stall: once the command runs, QEMU is killed when neither its stdout, its stderr nor the
   * L1 console grew for this long, and runInLab throws a LabStallError. Nested KVM under TCG
   * has hung this way in CI; a stall is the one failure worth a second run (retryStallOnce).
   * Default: none (only timeoutMs).
   */
  stallMs?: number;
  /** Added to the command's environment (which otherwise holds PATH, HOME, TERM, SMOLVM_LAB*). */
  env?: Record<string, string>;
  /** Working directory inside the lab (a host path); default `/`. */
  cwd?: string;
  /** Default 'pc' (boots faster than q35 under TCG here). */
  machine?: LabMachine;
  /** Guest RAM of the L1 VM; default 2048. */
  memoryMiB?: number;
  /** Default: smolvmPaths().cacheDir (the L1 kernel goes to <cacheDir>/lab/). */
  cacheDir?: string;
  /** Progress lines (kernel fetch); default: none. */
  log?: (line: string) => void;
  /** Full kernel messages on the console (drops `quiet`), to see where boot time goes. */
  verboseConsole?: boolean;
}

export interface LabRunResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** The L1 VM's serial console (kernel messages and the lab init's own lines). */
  consoleLog: string;
  /** QEMU spawn until the command started inside (L1 boot, modules, mounts). */
  bootMs: number;
  /** The command's own run time, by the L1 guest's clock. */
  commandMs: number;
  /** QEMU spawn until QEMU exited. */
  totalMs: number;
  /** uname -r of the L1 kernel. */
  kernelRelease: string;
}

export interface PreparedLab {
  kernel: LabKernel;
  initramfs: string;
}

/** The command stopped making progress (LabRunOptions.stallMs): no output, no console line. */
export class LabStallError extends Error {
  readonly stalled = true;
}

/**
 * Runs `run` again once when it stalled (LabStallError), saying so through `note`; any other
 * failure, and a second stall, is final. A command that fails is a failure, never retried.
 */
export async function retryStallOnce<T>(what: string, run: () => Promise<T>, note: (line: string) => void): Promise<T> {
  try {
    return await run();
  } catch (err) {
    if (!(err instanceof LabStallError)) throw err;
    note(`${what} stalled in the lab (no output for the stall bound), running it once more; it said:\n${err.message.slice(-2000)}`);
  }
  return run();
}

const QEMU = 'qemu-system-x86_64';
const KERNEL_CMDLINE = 'console=ttyS0 panic=-1 tsc=reliable no_timer_check mitigations=off';
const CONSOLE_TAIL_CHARS = 4000;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** QEMUs still running, killed if this process exits or is interrupted first. */
const liveQemus = new Set<ChildProcess>();
const STOP_SIGNALS: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function killLiveQemus(): void {
  for (const c of liveQemus) c.kill('SIGKILL');
}

/** Kill our QEMUs, then die of the same signal as if we had not been listening. */
function onStopSignal(signal: NodeJS.Signals): void {
  killLiveQemus();
  untrackAll();
  if (process.listenerCount(signal) === 0) process.kill(process.pid, signal);
}

function untrackAll(): void {
  process.removeListener('exit', killLiveQemus);
  for (const s of STOP_SIGNALS) process.removeListener(s, onStopSignal);
}

function trackQemu(child: ChildProcess): void {
  if (liveQemus.size === 0) {
    process.on('exit', killLiveQemus);
    for (const s of STOP_SIGNALS) process.on(s, onStopSignal);
  }
  liveQemus.add(child);
}

function untrackQemu(child: ChildProcess): void {
  if (liveQemus.delete(child) && liveQemus.size === 0) untrackAll();
}

/** Fetches/builds (once, cached) the L1 kernel and initramfs. */
export async function prepareLab(opts: { cacheDir?: string; log?: (line: string) => void } = {}): Promise<PreparedLab> {
  const kernel = await ensureLabKernel(opts.cacheDir ?? smolvmPaths().cacheDir, opts.log);
  const initramfs = await ensureLabInitramfs(kernel);
  return { kernel, initramfs };
}

/** POSIX sh single-quoting. */
export function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** The script the lab's init runs with /bin/sh in the chroot. */
export function commandScript(command: readonly string[], env: Record<string, string>, cwd: string): string {
  const lines = ['# written by lab/lab.ts', `cd ${shellQuote(cwd)} || exit 125`];
  for (const [name, value] of Object.entries(env)) lines.push(`export ${name}=${shellQuote(value)}`);
  lines.push(`exec ${command.map(shellQuote).join(' ')}`);
  return lines.join('\n') + '\n';
}

function validate(command: readonly string[], opts: LabRunOptions): void {
  if (!Array.isArray(command) || command.length === 0) throw new Error('runInLab: command is empty');
  command.forEach((word, i) => {
    if (typeof word !== 'string') throw new Error(`runInLab: command[${i}] is not a string`);
    if (word.includes('\0')) throw new Error(`runInLab: command[${i}] contains a NUL byte`);
  });
  if (command[0] === '') throw new Error('runInLab: command[0] (the program) is empty');
  if (typeof opts.timeoutMs !== 'number' || !Number.isFinite(opts.timeoutMs) || opts.timeoutMs <= 0) {
    throw new Error(`runInLab: timeoutMs must be a positive number of milliseconds, got ${String(opts.timeoutMs)}`);
  }
  for (const [name, value] of Object.entries(opts.env ?? {})) {
    if (!ENV_NAME.test(name)) throw new Error(`runInLab: bad environment variable name ${JSON.stringify(name)}`);
    if (typeof value !== 'string' || value.includes('\0')) {
      throw new Error(`runInLab: environment variable ${name} must be a string without NUL bytes`);
    }
  }
  if (opts.cwd !== undefined && (!path.isAbsolute(opts.cwd) || opts.cwd.includes('\0'))) {
    throw new Error(`runInLab: cwd must be an absolute path, got ${JSON.stringify(opts.cwd)}`);
  }
  if (opts.machine !== undefined && opts.machine !== 'pc' && opts.machine !== 'q35') {
    throw new Error(`runInLab: machine must be "pc" or "q35", got ${JSON.stringify(opts.machine)}`);
  }
  if (opts.stallMs !== undefined && !(Number.isFinite(opts.stallMs) && opts.stallMs > 0)) {
    throw new Error(`runInLab: stallMs must be a positive number of milliseconds, got ${String(opts.stallMs)}`);
  }
  if (opts.memoryMiB !== undefined && (!Number.isInteger(opts.memoryMiB) || opts.memoryMiB < 512)) {
    throw new Error(`runInLab: memoryMiB must be an integer >= 512, got ${String(opts.memoryMiB)}`);
  }
}

export function qemuArgs(
  lab: PreparedLab, ioDir: string, consoleLog: string, machine: LabMachine, memoryMiB: number, verboseConsole = false,
): string[] {
  return [
    '-name', 'smolvm-lab',
    '-accel', 'tcg,thread=multi',
    '-M', machine,
    '-cpu', 'max',
    '-smp', '2',
    '-m', String(memoryMiB),
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-kernel', lab.kernel.bootImage,
    '-initrd', lab.initramfs,
    '-append', verboseConsole ? KERNEL_CMDLINE : `${KERNEL_CMDLINE} quiet`,
    '-chardev', `file,id=console,path=${consoleLog}`,
    '-serial', 'chardev:console',
    '-virtfs', `local,path=/,mount_tag=${HOST_ROOT_TAG},security_model=none,readonly=on,multidevs=remap`,
    '-virtfs', `local,path=${ioDir},mount_tag=${IO_TAG},security_model=none,multidevs=remap`,
  ];
}

function readIfThere(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

function tail(text: string): string {
  return text.length > CONSOLE_TAIL_CHARS ? '…' + text.slice(-CONSOLE_TAIL_CHARS) : text;
}

interface QemuOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  /** Killed for making no progress (stallMs) after this long without any. */
  stalledMs: number | undefined;
  qemuStderr: string;
  totalMs: number;
  /** Spawn until the guest wrote its `ready` line (polled), if it did. */
  readyMs: number | undefined;
}

/** Total size of the files whose growth shows the command is alive. */
function progressBytes(files: readonly string[]): number {
  let total = 0;
  for (const file of files) total += fs.statSync(file, { throwIfNoEntry: false })?.size ?? 0;
  return total;
}

interface StallWatch {
  stallMs: number;
  /** Files that grow while the command makes progress (its output, the console). */
  files: readonly string[];
}

function runQemu(args: string[], timeoutMs: number, timingFile: string, stall?: StallWatch): Promise<QemuOutcome> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    let readyMs: number | undefined;
    let timedOut = false;
    let stalledMs: number | undefined;
    let lastBytes = -1;
    let lastProgress = started;
    let qemuStderr = '';
    const child = spawn(QEMU, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    trackQemu(child);
    child.stdout.setEncoding('utf8').on('data', (d: string) => { qemuStderr += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { qemuStderr += d; });
    // The guest writes `ready` on the I/O share just before it starts the command.
    const poll = setInterval(() => {
      const now = Date.now();
      if (readyMs === undefined && fs.existsSync(timingFile)) {
        readyMs = now - started;
        lastProgress = now;
      }
      // Only the command's run counts: the boot is bounded by timeoutMs alone.
      if (!stall || readyMs === undefined || stalledMs !== undefined) return;
      const bytes = progressBytes(stall.files);
      if (bytes !== lastBytes) {
        lastBytes = bytes;
        lastProgress = now;
      } else if (now - lastProgress > stall.stallMs) {
        stalledMs = now - lastProgress;
        child.kill('SIGKILL');
      }
    }, 20);
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.on('error', (err: NodeJS.ErrnoException) => {
      clearInterval(poll);
      clearTimeout(timer);
      untrackQemu(child);
      reject(err.code === 'ENOENT'
        ? new Error(`lab: ${QEMU} is not installed (apt-get install qemu-system-x86)`)
        : new Error(`lab: starting ${QEMU}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearInterval(poll);
      clearTimeout(timer);
      untrackQemu(child);
      resolve({ code, signal, timedOut, stalledMs, qemuStderr, totalMs: Date.now() - started, readyMs });
    });
  });
}

function parseTiming(text: string | undefined): { ready?: number; done?: number } {
  const out: { ready?: number; done?: number } = {};
  for (const line of (text ?? '').split('\n')) {
    const m = /^(ready|done) (\d+(?:\.\d+)?)$/.exec(line.trim());
    if (m) out[m[1] as 'ready' | 'done'] = Number(m[2]) * 1000;
  }
  return out;
}

/**
 * Boots the L1 VM, runs `command` (argv, no shell) inside the chroot of the host's `/`, and
 * returns its exit code and output. Throws when the lab itself fails (with the reason and the
 * end of the console); a failing command is a result, not an error. Leaves nothing behind.
 */
export async function runInLab(command: string[], opts: LabRunOptions): Promise<LabRunResult> {
  validate(command, opts);
  const lab = await prepareLab({ cacheDir: opts.cacheDir, log: opts.log });
  const ioDir = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'smolvm-lab-'));
  try {
    const consoleLog = path.join(ioDir, 'console.log');
    await fs.promises.writeFile(path.join(ioDir, 'command.sh'), commandScript(command, opts.env ?? {}, opts.cwd ?? '/'));
    const args = qemuArgs(lab, ioDir, consoleLog, opts.machine ?? 'pc', opts.memoryMiB ?? 2048, opts.verboseConsole);
    const stall = opts.stallMs === undefined ? undefined
      : { stallMs: opts.stallMs, files: [consoleLog, path.join(ioDir, 'stdout'), path.join(ioDir, 'stderr')] };
    const outcome = await runQemu(args, opts.timeoutMs, path.join(ioDir, 'timing'), stall);

    const consoleText = readIfThere(consoleLog) ?? '';
    const status = readIfThere(path.join(ioDir, 'status'));
    const consoleHint = `\n--- L1 console (end) ---\n${tail(consoleText)}`;
    const partialOutput = (): string => ['stdout', 'stderr'].map((name) => {
      const text = readIfThere(path.join(ioDir, name))?.trim();
      return text ? `\n--- command ${name} so far ---\n${tail(text)}` : '';
    }).join('');
    if (outcome.stalledMs !== undefined && status === undefined) {
      throw new LabStallError(`lab: stalled: no output and no console line for ${outcome.stalledMs} ms running ` +
        `${JSON.stringify(command)}; QEMU killed${partialOutput()}${consoleHint}`);
    }
    if (outcome.timedOut) {
      // Say how far it got: L1 boot, the command itself, or the power-off after it.
      const stage = status !== undefined ? 'the command had finished'
        : outcome.readyMs !== undefined ? `the L1 VM was up after ${outcome.readyMs} ms; the command did not finish`
          : 'the L1 VM never reached the command';
      throw new Error(`lab: timed out after ${opts.timeoutMs} ms running ${JSON.stringify(command)}; QEMU killed` +
        ` (${stage})${partialOutput()}${consoleHint}`);
    }
    if (status === undefined) {
      const labError = readIfThere(path.join(ioDir, 'lab-error'))?.trim();
      const how = outcome.signal ? `was killed by ${outcome.signal}` : `exited with ${outcome.code}`;
      throw new Error(`lab: ${labError ? `the L1 init failed: ${labError}` : 'the L1 VM reported no exit status'}; ` +
        `QEMU ${how}${outcome.qemuStderr.trim() ? `: ${outcome.qemuStderr.trim()}` : ''}${consoleHint}`);
    }
    const exitCode = /^\d{1,3}$/.test(status.trim()) ? Number(status.trim()) : Number.NaN;
    if (!(exitCode >= 0 && exitCode <= 255)) {
      throw new Error(`lab: the L1 VM reported a malformed exit status ${JSON.stringify(status)}`);
    }
    const timing = parseTiming(readIfThere(path.join(ioDir, 'timing')));
    const commandMs = timing.ready !== undefined && timing.done !== undefined ? Math.round(timing.done - timing.ready) : 0;
    return {
      exitCode,
      stdout: readIfThere(path.join(ioDir, 'stdout')) ?? '',
      stderr: readIfThere(path.join(ioDir, 'stderr')) ?? '',
      consoleLog: consoleText,
      bootMs: outcome.readyMs ?? Math.max(0, outcome.totalMs - commandMs),
      commandMs,
      totalMs: outcome.totalMs,
      kernelRelease: lab.kernel.release,
    };
  } finally {
    await fs.promises.rm(ioDir, { recursive: true, force: true });
  }
}
