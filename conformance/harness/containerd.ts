// A private containerd 1.6 for tests and benchmarks: its own root, state, sockets, config and
// log under one temp dir, `<repo>/bin` first on its PATH so it finds our shim, and an
// environment marker inherited by everything it spawns (shims, VMMs) so leak checks can find
// exactly this instance's processes among other people's.
import { spawn, ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { daemonFaultLines } from '../../shim/src/daemon-faults';
import { readFileTail } from '../../shim/src/util/fsutil';
import { CommandError, RunResult, runCommand, sleep } from './exec';
import { findMarkedProcesses, mountsUnder, unmountAll } from './host';

export const CONTAINERD_BINARY = '/usr/bin/containerd';
export const CTR_BINARY = '/usr/bin/ctr';
/** Env var set on our containerd (and so inherited by its shims and their VMMs). */
export const RUN_MARKER_ENV = 'SMOLVM_CONFORMANCE_RUN';

const STANDARD_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

// Plugins this test instance never needs: CRI (slow, noisy: CNI) and the snapshotters other
// than overlayfs. (The v1 runtime must stay: 1.6's tasks service refuses to load without it.)
const DISABLED_PLUGINS = [
  'io.containerd.grpc.v1.cri',
  'io.containerd.snapshotter.v1.aufs',
  'io.containerd.snapshotter.v1.btrfs',
  'io.containerd.snapshotter.v1.devmapper',
  'io.containerd.snapshotter.v1.zfs',
  'io.containerd.snapshotter.v1.native',
];

export interface ContainerdOptions {
  /** Repository root; `<repoRoot>/bin` goes first on containerd's PATH. */
  readonly repoRoot: string;
  /** containerd namespace used by `ctr` helpers. */
  readonly namespace?: string;
  /** containerd log level ("debug" also makes containerd pass -debug to shims). */
  readonly logLevel?: 'debug' | 'info' | 'warn';
  /** SMOLVM_ROOT for the runtime; default: `<tempdir>/smolvm`. */
  readonly smolvmRoot?: string;
  /** Bound for containerd to answer `ctr version`. */
  readonly startTimeoutMs?: number;
  /** More environment for containerd and so for the shims (e.g. SMOLVM_CONFIG). */
  readonly env?: Readonly<Record<string, string>>;
}

export interface CtrOptions {
  readonly timeoutMs?: number;
  readonly input?: Buffer | string;
}

export class PrivateContainerd {
  private exited = false;
  private exitListener: (() => void) | undefined;

  private constructor(
    readonly baseDir: string,
    readonly rootDir: string,
    readonly stateDir: string,
    readonly address: string,
    readonly namespace: string,
    readonly logPath: string,
    readonly smolvmRoot: string,
    readonly marker: string,
    private readonly child: ChildProcess,
  ) {
    child.on('exit', () => {
      this.exited = true;
    });
  }

  get pid(): number {
    if (this.child.pid === undefined) throw new Error('containerd has no pid');
    return this.child.pid;
  }

  get running(): boolean {
    return !this.exited;
  }

  static async start(options: ContainerdOptions): Promise<PrivateContainerd> {
    for (const binary of [CONTAINERD_BINARY, CTR_BINARY]) {
      if (!fs.existsSync(binary)) throw new Error(`${binary} not found: install Debian's containerd`);
    }
    const baseDir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-ctd-'));
    const rootDir = path.join(baseDir, 'root');
    const stateDir = path.join(baseDir, 'state');
    const address = path.join(baseDir, 'containerd.sock');
    const logPath = path.join(baseDir, 'containerd.log');
    const configPath = path.join(baseDir, 'config.toml');
    // Honour a caller's SMOLVM_ROOT (shared caches), else isolate the runtime completely.
    const smolvmRoot = options.smolvmRoot ?? process.env.SMOLVM_ROOT ?? path.join(baseDir, 'smolvm');
    const marker = `${process.pid}-${randomBytes(6).toString('hex')}`;
    fs.mkdirSync(smolvmRoot, { recursive: true });
    fs.writeFileSync(
      configPath,
      renderConfig({ rootDir, stateDir, address, optDir: path.join(baseDir, 'opt'), logLevel: options.logLevel ?? 'debug' }),
    );

    const logFd = fs.openSync(logPath, 'a');
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PATH: `${path.join(options.repoRoot, 'bin')}:${process.env.PATH ?? ''}:${STANDARD_PATH}`,
      ...options.env,
      SMOLVM_ROOT: smolvmRoot,
      [RUN_MARKER_ENV]: marker,
    };
    let child: ChildProcess;
    try {
      child = spawn(CONTAINERD_BINARY, ['--config', configPath], { stdio: ['ignore', logFd, logFd], env });
    } finally {
      fs.closeSync(logFd);
    }
    const instance = new PrivateContainerd(
      baseDir, rootDir, stateDir, address, options.namespace ?? 'smolvm-conformance', logPath, smolvmRoot, marker, child,
    );
    // If the test process dies abruptly, do not leave a containerd behind.
    instance.exitListener = () => {
      if (instance.running) child.kill('SIGKILL');
    };
    process.on('exit', instance.exitListener);
    child.on('error', () => undefined);

    try {
      await instance.waitReady(options.startTimeoutMs ?? 20_000);
    } catch (err) {
      await instance.stop().catch(() => undefined);
      throw err;
    }
    return instance;
  }

  private async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last: RunResult | undefined;
    while (Date.now() < deadline) {
      if (!this.running) {
        throw new Error(`containerd exited during start-up; log tail:\n${this.logTail(40)}`);
      }
      last = await runCommand(CTR_BINARY, ['--address', this.address, 'version'], { timeoutMs: 5_000 });
      if (last.exitCode === 0) return;
      await sleep(100);
    }
    throw new Error(
      `containerd did not answer within ${timeoutMs} ms: ${last?.stderr.toString('utf8') ?? ''}\nlog tail:\n${this.logTail(40)}`,
    );
  }

  /** `ctr --address SOCK -n NS ARGS…` with a time bound (SIGKILL on timeout). */
  ctr(args: readonly string[], options: CtrOptions = {}): Promise<RunResult> {
    return runCommand(CTR_BINARY, ['--address', this.address, '-n', this.namespace, ...args], {
      timeoutMs: options.timeoutMs ?? 60_000,
      input: options.input,
    });
  }

  /** Like ctr(), but anything but exit code 0 throws a CommandError. */
  async ctrChecked(args: readonly string[], options: CtrOptions = {}): Promise<RunResult> {
    const result = await this.ctr(args, options);
    if (result.timedOut || result.exitCode !== 0) throw new CommandError(result, `ctr ${args.join(' ')} failed`);
    return result;
  }

  /** The last `lines` lines of containerd's log (which also carries the shims' logs). */
  logTail(lines = 60): string {
    return tailOfFile(this.logPath, lines);
  }

  /** Current size of the log: pass it to logSince() later to see what one test caused. */
  logOffset(): number {
    try {
      return fs.statSync(this.logPath).size;
    } catch {
      return 0;
    }
  }

  /** The log from `offset` on (at most the last `maxBytes` of it). */
  logSince(offset: number, maxBytes = 1024 * 1024): string {
    let fd: number | undefined;
    try {
      fd = fs.openSync(this.logPath, 'r');
      const size = fs.fstatSync(fd).size;
      const start = Math.max(offset, size - maxBytes);
      const buffer = Buffer.alloc(Math.max(0, size - start));
      fs.readSync(fd, buffer, 0, buffer.length, start);
      return buffer.toString('utf8');
    } catch (err) {
      return `(cannot read ${this.logPath}: ${(err as Error).message})`;
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  }

  /**
   * Lines since `offset` in which a shim daemon reported an uncaught exception or an unhandled
   * rejection (it logs them and keeps serving: a test must not pass over one). The whole span
   * is read, however long.
   */
  daemonFaults(offset = 0): string[] {
    return daemonFaultsInFile(this.logPath, offset);
  }

  /** Throws, quoting them, when a shim daemon logged faults since `offset`. */
  assertNoDaemonFaults(offset = 0): void {
    const faults = this.daemonFaults(offset);
    if (faults.length > 0) {
      throw new Error(`a shim daemon logged ${faults.length} uncaught exception(s) or unhandled rejection(s):\n  ${faults.slice(0, 10).join('\n  ')}`);
    }
  }

  /** Kill every task and remove every container of our namespace, best effort. */
  async removeAllContainers(): Promise<string[]> {
    const removed: string[] = [];
    const tasks = await this.ctr(['task', 'ls', '-q'], { timeoutMs: 10_000 });
    for (const id of lines(tasks.stdout)) {
      await this.ctr(['task', 'kill', '-a', '-s', 'SIGKILL', id], { timeoutMs: 10_000 });
      await this.ctr(['task', 'rm', '-f', id], { timeoutMs: 30_000 });
      removed.push(`task ${id}`);
    }
    const containers = await this.ctr(['containers', 'ls', '-q'], { timeoutMs: 10_000 });
    for (const id of lines(containers.stdout)) {
      await this.ctr(['containers', 'rm', id], { timeoutMs: 30_000 });
      removed.push(`container ${id}`);
    }
    return removed;
  }

  /**
   * Stop containerd (SIGTERM, SIGKILL after `graceMs`), kill whatever it spawned that is still
   * alive (shims, VMMs: found by our marker), unmount what is left under our dirs, and remove them.
   * Then fails when a shim daemon logged an uncaught exception or an unhandled rejection during
   * this containerd's life (every suite that stops its containerd is checked, whatever it did).
   */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.running) {
      await this.removeAllContainers().catch(() => undefined);
      this.child.kill('SIGTERM');
      const deadline = Date.now() + graceMs;
      while (this.running && Date.now() < deadline) await sleep(50);
      if (this.running) {
        this.child.kill('SIGKILL');
        while (this.running) await sleep(20);
      }
    }
    if (this.exitListener) process.off('exit', this.exitListener);
    const faults = this.daemonFaults(0);
    for (const proc of findMarkedProcesses(RUN_MARKER_ENV, this.marker)) {
      try {
        process.kill(proc.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    const ownDirs = [this.baseDir, this.smolvmRoot];
    await unmountAll(ownDirs);
    const stillMounted = ownDirs.flatMap((dir) => mountsUnder(dir));
    if (stillMounted.length > 0) {
      throw new Error(`cannot unmount, leaving ${this.baseDir} in place: ${stillMounted.join(', ')}`);
    }
    if (faults.length > 0) {
      const kept = path.join(os.tmpdir(), `smolvm-daemon-faults-${path.basename(this.baseDir)}.log`);
      fs.copyFileSync(this.logPath, kept);
      fs.rmSync(this.baseDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
      throw new Error(`a shim daemon logged ${faults.length} uncaught exception(s) or unhandled rejection(s) (containerd log kept at ${kept}):\n  ${faults.slice(0, 10).join('\n  ')}`);
    }
    fs.rmSync(this.baseDir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  }
}

function renderConfig(opts: { rootDir: string; stateDir: string; address: string; optDir: string; logLevel: string }): string {
  const q = (s: string): string => JSON.stringify(s);
  return [
    'version = 2',
    `root = ${q(opts.rootDir)}`,
    `state = ${q(opts.stateDir)}`,
    `disabled_plugins = [${DISABLED_PLUGINS.map(q).join(', ')}]`,
    '',
    '[grpc]',
    `  address = ${q(opts.address)}`,
    '',
    '[ttrpc]',
    `  address = ${q(`${opts.address}.ttrpc`)}`,
    '',
    '[debug]',
    `  level = ${q(opts.logLevel)}`,
    '',
    '[metrics]',
    '  address = ""',
    '',
    '[plugins]',
    '  [plugins."io.containerd.internal.v1.opt"]',
    `    path = ${q(opts.optDir)}`,
    '',
  ].join('\n');
}

/** daemonFaultLines over a whole file from `offset` on, read in chunks (logs grow large). */
export function daemonFaultsInFile(file: string, offset = 0): string[] {
  let fd: number | undefined;
  const found: string[] = [];
  try {
    fd = fs.openSync(file, 'r');
    const chunk = Buffer.alloc(4 * 1024 * 1024);
    let carry = '';
    for (let position = offset; ;) {
      const n = fs.readSync(fd, chunk, 0, chunk.length, position);
      if (n <= 0) break;
      position += n;
      const text = carry + chunk.subarray(0, n).toString('utf8');
      const cut = text.lastIndexOf('\n');
      found.push(...daemonFaultLines(cut >= 0 ? text.slice(0, cut) : ''));
      carry = cut >= 0 ? text.slice(cut + 1) : text;
    }
    found.push(...daemonFaultLines(carry));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') found.push(`(cannot read ${file}: ${(err as Error).message})`);
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
  return found;
}

export function lines(output: Buffer | string): string[] {
  return output
    .toString()
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line.length > 0);
}

export function tailOfFile(file: string, lineCount: number, maxBytes = 256 * 1024): string {
  try {
    return readFileTail(file, maxBytes).split('\n').slice(-lineCount).join('\n');
  } catch (err) {
    return `(cannot read ${file}: ${(err as Error).message})`;
  }
}
