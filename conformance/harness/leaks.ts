// "Nothing is left behind": after a container is gone there must be no task, no container, no
// active snapshot, no bundle, no shim or VMM process, no mount and no FIFO of ours. Shims exit a
// moment after `ctr run --rm` returns, so checks are polled up to a bound before they fail.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PrivateContainerd, RUN_MARKER_ENV, lines } from './containerd';
import { sleep } from './exec';
import { fifosUnder, findMarkedProcesses, findProcessesByCmdline, mountsUnder, pathsNamed } from './host';

/** Where ctr 1.6 makes the FIFOs of `ctr run` (defaults.DefaultFIFODir), shared by every containerd. */
export const CTR_FIFO_DIR = '/run/containerd/fifo';

export interface LeakScope {
  readonly containerd: PrivateContainerd;
  /** Container ids this scope created (state files and FIFOs are matched by them). */
  readonly containerIds: readonly string[];
}

/** Everything of ours still present right now, one human-readable line each. */
export async function findLeaks(scope: LeakScope): Promise<string[]> {
  const { containerd, containerIds } = scope;
  const leaks: string[] = [];

  const tasks = await containerd.ctr(['tasks', 'ls'], { timeoutMs: 15_000 });
  if (tasks.exitCode !== 0) leaks.push(`ctr tasks ls failed: ${tasks.stderr.toString().trim()}`);
  else leaks.push(...lines(tasks.stdout).slice(1).map((row) => `task: ${row}`));

  const containers = await containerd.ctr(['containers', 'ls', '-q'], { timeoutMs: 15_000 });
  if (containers.exitCode !== 0) leaks.push(`ctr containers ls failed: ${containers.stderr.toString().trim()}`);
  else leaks.push(...lines(containers.stdout).map((id) => `container: ${id}`));

  // Image layers are committed snapshots; an active one is a container's leftover rootfs.
  const snapshots = await containerd.ctr(['snapshots', 'ls'], { timeoutMs: 15_000 });
  if (snapshots.exitCode === 0) {
    leaks.push(
      ...lines(snapshots.stdout)
        .slice(1)
        .filter((row) => /\bActive\b/.test(row))
        .map((row) => `active snapshot: ${row}`),
    );
  }

  const bundleDir = path.join(containerd.stateDir, 'io.containerd.runtime.v2.task', containerd.namespace);
  if (fs.existsSync(bundleDir)) leaks.push(...fs.readdirSync(bundleDir).map((id) => `bundle: ${path.join(bundleDir, id)}`));

  // Shims and VMMs inherit our marker; a VMM that scrubs its environment still names our dirs.
  const processes = new Map<number, string>();
  for (const proc of findMarkedProcesses(RUN_MARKER_ENV, containerd.marker, [containerd.pid])) processes.set(proc.pid, proc.cmdline);
  for (const proc of findProcessesByCmdline([containerd.smolvmRoot, containerd.address], [containerd.pid])) {
    processes.set(proc.pid, proc.cmdline);
  }
  leaks.push(...[...processes].map(([pid, cmdline]) => `process ${pid}: ${cmdline}`));

  for (const dir of [containerd.baseDir, containerd.smolvmRoot]) {
    leaks.push(...mountsUnder(dir).map((point) => `mount: ${point}`));
    leaks.push(...fifosUnder(dir).map((fifo) => `fifo: ${fifo}`));
  }
  if (containerIds.length > 0) {
    const ours = (name: string): boolean => containerIds.some((id) => name.startsWith(`${id}-`));
    leaks.push(...fifosUnder(CTR_FIFO_DIR, ours).map((fifo) => `fifo: ${fifo}`));
    leaks.push(...pathsNamed(path.join(containerd.smolvmRoot, 'run'), containerIds).map((p) => `runtime state: ${p}`));
  }
  return [...new Set(leaks)];
}

/** Poll findLeaks until nothing is left or `boundMs` passes; returns what is still left. */
export async function waitForNoLeaks(scope: LeakScope, boundMs = 15_000): Promise<string[]> {
  const deadline = Date.now() + boundMs;
  for (;;) {
    const leaks = await findLeaks(scope);
    if (leaks.length === 0 || Date.now() >= deadline) return leaks;
    await sleep(250);
  }
}
