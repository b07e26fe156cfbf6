// Restarting a PrivateContainerd in place: stop the daemon alone (SIGTERM; its shims, VMs and
// state stay, as on a real host when containerd is restarted), then start containerd again on
// the same config, root, state, sockets, log and environment (PATH, SMOLVM_ROOT, the run
// marker), so that it reloads its shims through their `address` files.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CONTAINERD_BINARY, CTR_BINARY, RUN_MARKER_ENV, type PrivateContainerd } from './containerd';
import { runCommand, sleep } from './exec';

const STANDARD_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** SIGTERM to containerd only; resolves once it has exited. Its shims keep running. */
export async function stopContainerdOnly(containerd: PrivateContainerd, boundMs = 15_000): Promise<void> {
  if (!containerd.running) return;
  process.kill(containerd.pid, 'SIGTERM');
  const deadline = Date.now() + boundMs;
  while (containerd.running) {
    if (Date.now() > deadline) throw new Error(`containerd ${containerd.pid} did not exit within ${boundMs} ms of SIGTERM`);
    await sleep(50);
  }
}

/** A containerd started again on a PrivateContainerd's files (its `ctr` helpers keep working). */
export class RestartedContainerd {
  private exited = false;
  private readonly onProcessExit = (): void => {
    if (!this.exited) this.child.kill('SIGKILL');
  };

  private constructor(private readonly child: ChildProcess) {
    child.on('exit', () => { this.exited = true; });
    child.on('error', () => { this.exited = true; });
    process.on('exit', this.onProcessExit);
  }

  get pid(): number {
    if (this.child.pid === undefined) throw new Error('restarted containerd has no pid');
    return this.child.pid;
  }

  get running(): boolean {
    return !this.exited;
  }

  /**
   * Starts containerd with the same config, log and environment as `original` had, and waits
   * until it answers `ctr version`. `original` must have been stopped.
   */
  static async start(original: PrivateContainerd, repoRoot: string, readyBoundMs = 20_000): Promise<RestartedContainerd> {
    if (original.running) throw new Error('the original containerd is still running: stop it first');
    const configPath = path.join(original.baseDir, 'config.toml');
    if (!fs.existsSync(configPath)) throw new Error(`${configPath} is gone: cannot restart containerd on it`);
    const logFd = fs.openSync(original.logPath, 'a');
    let child: ChildProcess;
    try {
      child = spawn(CONTAINERD_BINARY, ['--config', configPath], {
        stdio: ['ignore', logFd, logFd],
        env: {
          ...process.env,
          PATH: `${path.join(repoRoot, 'bin')}:${process.env.PATH ?? ''}:${STANDARD_PATH}`,
          SMOLVM_ROOT: original.smolvmRoot,
          [RUN_MARKER_ENV]: original.marker,
        },
      });
    } finally {
      fs.closeSync(logFd);
    }
    const restarted = new RestartedContainerd(child);
    const deadline = Date.now() + readyBoundMs;
    for (;;) {
      if (!restarted.running) throw new Error(`restarted containerd exited during start-up; log tail:\n${original.logTail(40)}`);
      const version = await runCommand(CTR_BINARY, ['--address', original.address, 'version'], { timeoutMs: 5_000 });
      if (version.exitCode === 0) return restarted;
      if (Date.now() > deadline) {
        await restarted.stop();
        throw new Error(`restarted containerd did not answer within ${readyBoundMs} ms: ${version.stderr.toString()}`);
      }
      await sleep(100);
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  async stop(graceMs = 10_000): Promise<void> {
    if (this.running) {
      this.child.kill('SIGTERM');
      const deadline = Date.now() + graceMs;
      while (this.running && Date.now() < deadline) await sleep(50);
      if (this.running) {
        this.child.kill('SIGKILL');
        while (this.running) await sleep(20);
      }
    }
    process.off('exit', this.onProcessExit);
  }
}
