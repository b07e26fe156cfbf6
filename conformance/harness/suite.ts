// The shared fixture of the conformance suite: one private containerd and the imported busybox
// image per describe block, the runtime under test (env SMOLVM_RUNTIME, default smolvm), unique
// container ids, a leak check at the end of every test and of the block, and diagnostics
// (containerd log tail, which carries the shims' logs, plus the runtime's log files) on failure.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { PrivateContainerd, tailOfFile } from './containerd';
import { RunResult } from './exec';
import { OciImage, busyboxImage, importImage } from './image';
import { walkTree } from './host';
import { waitForNoLeaks } from './leaks';

export const SMOLVM_RUNTIME = 'io.containerd.smolvm.v1';
export const SMOLVM_SHIM_BINARY = 'containerd-shim-smolvm-v1';
const KEPT_LOGS = 20;

export function selectedRuntime(): string {
  return process.env.SMOLVM_RUNTIME || SMOLVM_RUNTIME;
}

/** runc runs containers on the host kernel; every other runtime here is a VM runtime. */
export function isVmRuntime(runtime: string): boolean {
  return !runtime.startsWith('io.containerd.runc.');
}

/** Repository root, from dist/conformance/harness/suite.js. */
export function repoRoot(): string {
  return path.resolve(__dirname, '..', '..', '..');
}

export interface RunInContainerOptions {
  readonly input?: Buffer | string;
  readonly timeoutMs?: number;
  /** ctr run flags placed before the image (e.g. --env, --cwd). */
  readonly ctrFlags?: readonly string[];
  /** Leave out --rm (for detached runs). */
  readonly keep?: boolean;
}

export class ConformanceEnv {
  private testIds: string[] = [];
  private readonly allIds: string[] = [];
  private counter = 0;
  private testLogOffset = 0;

  private constructor(
    readonly containerd: PrivateContainerd,
    readonly image: OciImage,
    readonly runtime: string,
    readonly idPrefix: string,
  ) {}

  get vm(): boolean {
    return isVmRuntime(this.runtime);
  }

  static async create(): Promise<ConformanceEnv> {
    const runtime = selectedRuntime();
    const root = repoRoot();
    if (runtime === SMOLVM_RUNTIME && !fs.existsSync(path.join(root, 'bin', SMOLVM_SHIM_BINARY))) {
      throw new Error(
        `${path.join(root, 'bin', SMOLVM_SHIM_BINARY)} does not exist: build the shim first, ` +
          `or run the suite against runc with SMOLVM_RUNTIME=io.containerd.runc.v2`,
      );
    }
    const image = busyboxImage();
    const containerd = await PrivateContainerd.start({ repoRoot: root });
    try {
      await importImage(containerd, image);
    } catch (err) {
      const log = containerd.logTail(40);
      await containerd.stop();
      throw new Error(`${(err as Error).message}\ncontainerd log tail:\n${log}`);
    }
    return new ConformanceEnv(containerd, image, runtime, `cf${randomBytes(2).toString('hex')}`);
  }

  /** A container id unique to this run, remembered for the leak checks. */
  newId(label: string): string {
    this.counter += 1;
    const id = `${this.idPrefix}-${label}-${this.counter}`;
    this.testIds.push(id);
    this.allIds.push(id);
    return id;
  }

  beginTest(): void {
    this.testIds = [];
    this.testLogOffset = this.containerd.logOffset();
  }

  /** `ctr run --runtime R [--rm] [flags] IMAGE ID COMMAND…`. */
  run(id: string, command: readonly string[], options: RunInContainerOptions = {}): Promise<RunResult> {
    const args = ['run', '--runtime', this.runtime];
    if (!options.keep) args.push('--rm');
    args.push(...(options.ctrFlags ?? []), this.image.ref, id, ...command);
    return this.containerd.ctr(args, { input: options.input, timeoutMs: options.timeoutMs ?? 60_000 });
  }

  /** Fails when a shim daemon logged an uncaught exception or unhandled rejection during this test. */
  assertNoDaemonFaults(): void {
    this.containerd.assertNoDaemonFaults(this.testLogOffset);
  }

  /** Fails (listing every leftover) unless nothing of this test remains within `boundMs`. */
  async assertNoLeaks(boundMs = 15_000, ids: readonly string[] = this.testIds): Promise<void> {
    const leaks = await waitForNoLeaks({ containerd: this.containerd, containerIds: ids }, boundMs);
    if (leaks.length > 0) throw new Error(`left behind after ${boundMs} ms:\n  ${leaks.join('\n  ')}`);
  }

  async assertNothingLeftAtAll(): Promise<void> {
    await this.assertNoLeaks(15_000, this.allIds);
  }

  /**
   * containerd's log tail (the shims' logs are copied into it), without containerd's own debug
   * chatter unless it names one of this test's containers or a shim, plus the runtime's log files.
   */
  diagnostics(): string {
    const ids = this.testIds.length > 0 ? this.testIds : this.allIds;
    const relevant = this.containerd
      .logSince(this.testLogOffset)
      .split('\n')
      .filter((line) => !line.includes('level=debug') || /shim|runtime/.test(line) || ids.some((id) => line.includes(id)))
      .slice(-100);
    const parts = [`--- containerd log since the test began, filtered (full log: ${this.containerd.logPath}) ---`, ...relevant];
    for (const file of runtimeLogFiles(this.containerd.smolvmRoot).slice(0, 8)) {
      parts.push(`--- ${file} ---`, tailOfFile(file, 40));
    }
    return parts.join('\n');
  }

  /** Copy containerd's full log somewhere that outlives the temp dir; returns its path. */
  preserveLog(label: string): string | undefined {
    try {
      const dir = path.join(os.tmpdir(), 'smolvm-conformance-logs');
      fs.mkdirSync(dir, { recursive: true });
      const target = path.join(dir, `${new Date().toISOString().replace(/[:.]/g, '-')}-${label.replace(/[^A-Za-z0-9]+/g, '_')}.log`);
      fs.copyFileSync(this.containerd.logPath, target);
      // Keep the newest few only: CI machines are reused.
      const kept = fs.readdirSync(dir).filter((name) => name.endsWith('.log')).sort();
      for (const old of kept.slice(0, Math.max(0, kept.length - KEPT_LOGS))) fs.rmSync(path.join(dir, old), { force: true });
      return target;
    } catch {
      return undefined;
    }
  }
}

/** Log-like files under the runtime's root (shim logs, VM consoles), newest first. */
function runtimeLogFiles(dir: string): string[] {
  const found: Array<{ file: string; mtime: number }> = [];
  walkTree(dir, 8, (full, entry) => {
    if (!entry.isFile() || !/(\.log$|^log$|console|serial)/.test(entry.name)) return;
    try {
      found.push({ file: full, mtime: fs.statSync(full).mtimeMs });
    } catch {
      // removed meanwhile
    }
  });
  return found.sort((a, b) => b.mtime - a.mtime).map((entry) => entry.file);
}

/**
 * A describe block with its own containerd + image. `body` declares tests with the `test`
 * function it receives: each has a time bound and ends with a leak check.
 */
export function describeConformance(
  title: string,
  body: (test: (name: string, timeoutMs: number, fn: (env: ConformanceEnv, ctx: Mocha.Context) => Promise<void>) => void) => void,
): void {
  describe(`${title} [${selectedRuntime()}]`, function () {
    let env: ConformanceEnv | undefined;
    let anyFailed = false;

    before(async function () {
      this.timeout(180_000);
      env = await ConformanceEnv.create();
    });

    afterEach(async function () {
      this.timeout(120_000);
      if (!env) return;
      if (this.currentTest?.state === 'failed') {
        anyFailed = true;
        console.error(`\n=== diagnostics for "${this.currentTest.fullTitle()}" ===\n${env.diagnostics()}\n=== end ===`);
      }
      // Leave a clean slate for the next test even when this one leaked (it already failed).
      await env.containerd.removeAllContainers();
    });

    after(async function () {
      this.timeout(120_000);
      if (!env) return;
      const finalEnv = env;
      env = undefined;
      let leakError: Error | undefined;
      try {
        await finalEnv.assertNothingLeftAtAll();
      } catch (err) {
        leakError = err as Error;
        console.error(`\n=== diagnostics at the end of "${title}" ===\n${finalEnv.diagnostics()}\n=== end ===`);
      }
      if (anyFailed || leakError) {
        const kept = finalEnv.preserveLog(title);
        if (kept) console.error(`containerd log of "${title}" kept at ${kept}`);
      }
      await finalEnv.containerd.stop();
      if (leakError) throw leakError;
    });

    body((name, timeoutMs, fn) => {
      it(name, async function () {
        this.timeout(timeoutMs + 30_000); // the leak check has its own bound on top
        if (!env) throw new Error('conformance environment was not set up');
        env.beginTest();
        await fn(env, this);
        env.assertNoDaemonFaults();
        await env.assertNoLeaks();
      });
    });
  });
}
