// "Nothing is left behind": after a container is gone there must be no task, no container, no
// active snapshot, no bundle, no shim or VMM process, no mount and no FIFO of ours. Shims exit a
// moment after `ctr run --rm` returns, so checks are polled up to a bound before they fail.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { findVmmProcesses } from '../../shim/src/vm/vmm-sweep';
import { PrivateContainerd, RUN_MARKER_ENV, lines } from './containerd';
import { sleep } from './exec';
import { fifosUnder, findMarkedProcesses, findProcessesByCmdline, mountsUnder, walkTree } from './host';

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
  // Every VMM of this runtime root, by the exec wrapper's records and its /proc marker (a VMM
  // whose shim is gone included): none may outlive its containers.
  for (const vmm of findVmmProcesses(path.join(containerd.smolvmRoot, 'run'))) {
    processes.set(vmm.pid, `${vmm.orphaned ? 'orphaned ' : ''}VMM of ${vmm.vmDir}: ${vmm.cmdline}`);
  }
  leaks.push(...[...processes].map(([pid, cmdline]) => `process ${pid}: ${cmdline}`));

  for (const dir of [containerd.baseDir, containerd.smolvmRoot]) {
    leaks.push(...mountsUnder(dir).map((point) => `mount: ${point}`));
    leaks.push(...fifosUnder(dir).map((fifo) => `fifo: ${fifo}`));
  }
  if (containerIds.length > 0) {
    const ours = (name: string): boolean => containerIds.some((id) => name.startsWith(`${id}-`));
    leaks.push(...fifosUnder(CTR_FIFO_DIR, ours).map((fifo) => `fifo: ${fifo}`));
    leaks.push(...cgroupLeaks(containerd.namespace, containerIds).map((dir) => `cgroup: ${dir}`));
  }
  // VM directories have random names: everything of the runtime's roots is checked, by kind.
  leaks.push(...runtimeRootLeaks(containerd.smolvmRoot));
  return [...new Set(leaks)];
}

/** Cache folders under `<root>/lib` whose entries stay on purpose (keyed by their inputs). */
export const CACHE_ENTRY_DIRS: readonly string[] = ['kernels', 'images', 'initramfs', 'templates', 'disks', 'lab'];
/** Folders under `<root>/run` that hold one entry per live thing (a VM, a pool spare, a task's
 *  state, a template build's VM): the folders may stay, anything in them is a leftover once
 *  nothing runs. */
const STATE_HOLDERS: readonly string[] = ['vms', 'pool', 'tasks', 'templates'];

/**
 * What is left of VMs, pool spares and tasks under a runtime root (SMOLVM_ROOT): in the state
 * root (`run`), any file, socket or directory but the empty holder folders; in the data root
 * (`lib`), anything outside the cache folders (per-VM data such as writable disks and console
 * logs lives in `lib/vms/<id>`). One line each, with sizes where it matters (a 1 GiB disk).
 */
export function runtimeRootLeaks(smolvmRoot: string): string[] {
  const leaks: string[] = [];
  const stateRoot = path.join(smolvmRoot, 'run');
  walkTree(stateRoot, 2, (full, entry) => {
    const rel = path.relative(stateRoot, full).split(path.sep);
    const top = rel[0]!;
    const inHolder = STATE_HOLDERS.includes(top);
    let leftover: boolean;
    if (rel.length === 1) leftover = !(inHolder && entry.isDirectory());
    // tasks/<namespace>/ folders are made once per namespace and kept; state files are not.
    else if (top === 'tasks') leftover = rel.length === 3 || !entry.isDirectory();
    // A VM's directory, a pool entry (or its fill.lock): reported as a whole.
    else leftover = rel.length === 2 && inHolder;
    if (leftover) leaks.push(`runtime state: ${full}${describeKind(full, entry)}`);
  });
  const dataRoot = path.join(smolvmRoot, 'lib');
  walkTree(dataRoot, 1, (full, entry) => {
    const rel = path.relative(dataRoot, full).split(path.sep);
    if (rel.length === 1 && CACHE_ENTRY_DIRS.includes(rel[0]!)) return;
    if (rel.length === 1 && rel[0] === 'vms' && entry.isDirectory()) return; // its entries are checked
    if (rel.length === 2 && rel[0] !== 'vms') return; // inside a folder already reported
    leaks.push(`runtime data: ${full}${describeKind(full, entry)}`);
  });
  return leaks;
}

/** " (socket)", " (directory, 1073741824 bytes in 3 files)", " (1073741824 bytes)". */
function describeKind(full: string, entry: fs.Dirent): string {
  if (entry.isSocket()) return ' (socket)';
  if (entry.isFIFO()) return ' (fifo)';
  if (entry.isFile()) return ` (${fileSize(full)} bytes)`;
  if (!entry.isDirectory()) return '';
  let bytes = 0;
  let files = 0;
  walkTree(full, 8, (inner, innerEntry) => {
    if (!innerEntry.isFile()) return;
    files += 1;
    bytes += fileSize(inner);
  });
  return ` (directory, ${bytes} bytes in ${files} files)`;
}

function fileSize(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

/** Where the host's cgroup hierarchies are mounted (v1 controllers and the v2 unified one). */
export const CGROUP_ROOT = '/sys/fs/cgroup';

/**
 * Cgroup directories a container of `namespace` left (ctr's default cgroupsPath is
 * `/<namespace>/<id>`; runc and smolvm's VMM placement both make it), in every hierarchy.
 */
export function cgroupLeaks(namespace: string, containerIds: readonly string[], root = CGROUP_ROOT): string[] {
  let hierarchies: string[];
  try {
    hierarchies = fs.readdirSync(root).map((name) => path.join(root, name));
  } catch {
    return [];
  }
  const found: string[] = [];
  for (const hierarchy of hierarchies) {
    for (const id of containerIds) {
      const dir = path.join(hierarchy, namespace, id);
      if (fs.statSync(dir, { throwIfNoEntry: false })?.isDirectory()) found.push(dir);
    }
  }
  return found;
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
