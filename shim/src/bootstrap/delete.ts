// `containerd-shim-smolvm-v1 delete`: containerd runs this when the shim daemon is gone (or a
// start failed). It must tear the container's VM down from the state on disk alone — the VMM
// is identified by pid + start time, never a reused pid — stop the daemon's binary:// loggers
// the same way, and answer a DeleteResponse.
//
// containerd 1.6 runs it after *every* shim disconnect, also after a clean Delete, and ctr's
// `run --rm` waits for it: when the state file is gone (the daemon deleted the container) it
// answers at once, loading no protobuf or VM code (the response is encoded by hand).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { recordedVmDataDir, smolvmPaths } from '../config/paths';
import { StateStore, type LoggerRecord } from '../state/store';
import { invalidArgument } from '../errdefs';
import { validateIdentifier } from '../util/identifiers';
import type { ShimFlags } from './flags';

export const EXIT_STATUS_KILLED = 137;

/** containerd gives `delete` about 5 s in all (cleanupTimeout): the loggers get a share of it. */
const LOGGER_DRAIN_GRACE_MS = 500;
const LOGGER_TERM_GRACE_MS = 1_000;
const LOGGER_KILL_WAIT_MS = 1_000;

/** Stops the recorded logger processes that still run (identified by pid + start time). */
async function stopLoggers(loggers: readonly LoggerRecord[], id: string): Promise<void> {
  const running = loggers.filter((l) => Number.isInteger(l.pid) && l.pid > 0 && typeof l.startTime === 'string');
  if (running.length === 0) return;
  const { killIdentified, waitGone } = await import('../util/proc');
  await Promise.all(running.map(async (logger) => {
    const identity = { pid: logger.pid, startTime: logger.startTime };
    // It saw EOF when the daemon died: a moment to write out what it holds and exit by itself.
    if (await waitGone(identity, LOGGER_DRAIN_GRACE_MS)) return;
    if (!killIdentified(identity, 'SIGTERM')) return; // gone already (or its pid was reused)
    if (await waitGone(identity, LOGGER_TERM_GRACE_MS)) return;
    killIdentified(identity, 'SIGKILL');
    if (!(await waitGone(identity, LOGGER_KILL_WAIT_MS))) {
      const what = logger.execId ? `exec ${logger.execId}'s` : 'the';
      process.stderr.write(`delete ${id}: ${what} logging binary (pid ${logger.pid}) did not exit after SIGKILL\n`);
    }
  }));
}

/** An absolute path with no "." or ".." component (what containerd's bundle paths are). */
function isCleanAbsolute(p: string): boolean {
  return path.isAbsolute(p) && !p.split('/').some((c) => c === '.' || c === '..');
}

export async function deleteShim(flags: ShimFlags): Promise<Buffer> {
  const namespace = flags.namespace || 'default';
  // Before any path is built: the id and namespace name the state file, the bundle options.pb.
  validateIdentifier('container id', flags.id, 'delete');
  validateIdentifier('namespace', namespace, 'delete');
  if (flags.bundle && !isCleanAbsolute(flags.bundle)) {
    throw invalidArgument(`delete: invalid bundle ${JSON.stringify(flags.bundle)}: containerd passes an absolute path without . or .. components`);
  }
  const bundle = flags.bundle || process.cwd();
  const store = new StateStore(smolvmPaths().stateDir);
  let pid = 0;
  const state = store.read(namespace, flags.id);
  if (state?.vm) {
    const [{ removeCgroupPlacement }, { detachAll }, { removeQuietly }, { killIdentified, waitGone }] = await Promise.all([
      import('../vm/host-cgroup'), import('../vm/host-mounts'), import('../util/fsutil'), import('../util/proc'),
    ]);
    pid = state.vm.vmm.pid;
    const identity = state.vm.vmm;
    if (killIdentified(identity, 'SIGKILL')) {
      if (!(await waitGone(identity, 5000))) {
        throw new Error(`delete ${flags.id}: VMM process ${identity.pid} did not exit after SIGKILL`);
      }
    }
    // The VMM is gone: its host cgroup directories (only those smolvm made) are empty now.
    const cgroupDirs = state.vm.hostCgroupDirs.filter((d) => path.resolve(d).startsWith('/sys/fs/cgroup/'));
    if (cgroupDirs.length > 0) await removeCgroupPlacement({ relativePath: '', created: cgroupDirs });
    // Only ever unmount or remove under our own state dir.
    const vmsRoot = path.join(smolvmPaths().stateDir, 'vms') + path.sep;
    const vmDir = state.vm.stateDir && path.resolve(state.vm.stateDir).startsWith(vmsRoot) ? path.resolve(state.vm.stateDir) : null;
    // Host directories bind-mounted into the VM's 9p share: this container's (recorded) and,
    // the VM being gone, every other one under its directory (a pod's other containers').
    const recorded = (state.hostMounts ?? []).filter((p) => typeof p === 'string' && path.resolve(p).startsWith(vmsRoot));
    const failed = await detachAll(recorded, vmDir ?? undefined);
    for (const problem of failed) process.stderr.write(`delete ${flags.id}: ${problem}\n`);
    // removeQuietly never descends into a mount: a bind mount still there keeps its files.
    if (vmDir) {
      const left = removeQuietly(vmDir);
      if (left.length > 0) process.stderr.write(`delete ${flags.id}: left in place (mounted?): ${left.join(' ')}\n`);
    }
    // Its disks and logs, on disk: only a direct child of our own data root (a state file
    // written before data dirs existed names none: its VM kept everything in vmDir).
    const dataDir = recordedVmDataDir(smolvmPaths(), state.vm.dataDir);
    if (dataDir) {
      const left = removeQuietly(dataDir);
      if (left.length > 0) process.stderr.write(`delete ${flags.id}: left in place: ${left.join(' ')}\n`);
    } else if (state.vm.dataDir !== null) {
      process.stderr.write(`delete ${flags.id}: not removing ${JSON.stringify(state.vm.dataDir)}: not a VM data dir under ${smolvmPaths().cacheDir}\n`);
    }
  }
  // binary:// loggers the dead daemon spawned: most see EOF on fd 3/4 and exit by themselves;
  // one that does not is stopped as the daemon would have (SIGTERM, then SIGKILL).
  await stopLoggers(state?.loggers ?? [], flags.id);
  // The daemon died: what it (or another dead shim) left that no state file names, such as a
  // VM it was still booting, is swept by the VMMs' own records (vm/vmm-sweep.ts).
  if (state) {
    const { sweepOrphanedVmms } = await import('../vm/vmm-sweep');
    const swept = await sweepOrphanedVmms(smolvmPaths()).catch((err: unknown) => ({ problems: [String(err)] }));
    for (const problem of swept.problems) process.stderr.write(`delete ${flags.id}: ${problem}\n`);
  }
  store.remove(namespace, flags.id);
  removeStaleTemporaries(store.file(namespace, flags.id));
  fs.rmSync(path.join(bundle, 'options.pb'), { force: true });
  return encodeDeleteResponse(pid, EXIT_STATUS_KILLED, new Date());
}

/** Whether `pid` runs (a zombie, such as a daemon killed a moment ago, does not). */
function isLive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return false;
  }
}

/** A daemon killed while it rewrote the state file (writeFileAtomic: `.<name>.<pid>.<ms>.tmp`)
 *  left its temporary copy: removed once that writer is dead. */
function removeStaleTemporaries(stateFile: string): void {
  const prefix = `.${path.basename(stateFile)}.`;
  let names: string[];
  try {
    names = fs.readdirSync(path.dirname(stateFile));
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix) || !name.endsWith('.tmp')) continue;
    const writer = Number(name.slice(prefix.length).split('.')[0]);
    if (Number.isInteger(writer) && writer > 0 && isLive(writer)) continue;
    fs.rmSync(path.join(path.dirname(stateFile), name), { force: true });
  }
}

function varint(out: number[], value: number): void {
  let v = value;
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
}

/**
 * containerd.task.v2.DeleteResponse { uint32 pid = 1; uint32 exit_status = 2;
 * google.protobuf.Timestamp exited_at = 3 }, encoded as the generated code does (zero scalars
 * left out), without loading it: a unit test holds it to DeleteResponse.encode.
 */
export function encodeDeleteResponse(pid: number, exitStatus: number, exitedAt: Date): Buffer {
  const ms = exitedAt.getTime();
  const seconds = Math.floor(ms / 1000);
  const nanos = (ms % 1000) * 1_000_000;
  const ts: number[] = [];
  if (seconds !== 0) { ts.push(0x08); varint(ts, seconds); }
  if (nanos !== 0) { ts.push(0x10); varint(ts, nanos); }
  const out: number[] = [];
  if (pid !== 0) { out.push(0x08); varint(out, pid >>> 0); }
  if (exitStatus !== 0) { out.push(0x10); varint(out, exitStatus >>> 0); }
  out.push(0x1a);
  varint(out, ts.length);
  out.push(...ts);
  return Buffer.from(out);
}
