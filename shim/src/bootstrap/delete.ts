// `containerd-shim-smolvm-v1 delete`: containerd runs this when the shim daemon is gone (or a
// start failed). It must tear the container's VM down from the state on disk alone — the VMM
// is identified by pid + start time, never a reused pid — and answer a DeleteResponse.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { smolvmPaths } from '../config/paths';
import { DeleteResponse } from '../gen/containerd/task/v2/shim';
import { removeCgroupPlacement } from '../sandbox/host-cgroup';
import { StateStore } from '../state/store';
import { removeQuietly } from '../util/fsutil';
import { killIdentified, waitGone } from '../util/proc';
import { timestampNow } from '../util/time';
import type { ShimFlags } from './flags';

export const EXIT_STATUS_KILLED = 137;

export async function deleteShim(flags: ShimFlags): Promise<Buffer> {
  if (!flags.id) throw new Error('delete: -id is required');
  const namespace = flags.namespace || 'default';
  const bundle = flags.bundle || process.cwd();
  const store = new StateStore(smolvmPaths().stateDir);
  let pid = 0;
  const state = store.read(namespace, flags.id);
  if (state?.vm) {
    pid = state.vm.pid;
    const identity = { pid: state.vm.pid, startTime: state.vm.pidStartTime };
    if (killIdentified(identity, 'SIGKILL')) {
      if (!(await waitGone(identity, 5000))) {
        throw new Error(`delete ${flags.id}: VMM process ${identity.pid} did not exit after SIGKILL`);
      }
    }
    // The VMM is gone: its host cgroup directories (only those smolvm made) are empty now.
    const cgroupDirs = (state.vm.hostCgroupDirs ?? []).filter((d) => path.resolve(d).startsWith('/sys/fs/cgroup/'));
    if (cgroupDirs.length > 0) await removeCgroupPlacement({ relativePath: '', created: cgroupDirs });
    // Only ever remove a directory under our own state dir.
    const vmsRoot = path.join(smolvmPaths().stateDir, 'vms') + path.sep;
    if (state.vm.dir && path.resolve(state.vm.dir).startsWith(vmsRoot)) removeQuietly(state.vm.dir);
  }
  store.remove(namespace, flags.id);
  fs.rmSync(path.join(bundle, 'options.pb'), { force: true });
  return Buffer.from(DeleteResponse.encode({ pid, exitStatus: EXIT_STATUS_KILLED, exitedAt: timestampNow() }).finish());
}
