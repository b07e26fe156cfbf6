// Per-VM data on disk (config/paths.ts: `<cacheDir>/vms/<vmId>`): `delete`, working from the
// state file alone after the daemon died, removes the VM's data dir; it never removes a path
// outside the data root whatever the state file says; a state file written before data dirs
// existed (no dataDir) still deletes fine.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { deleteShim } from '../../shim/src/bootstrap/delete';
import { parseShimFlags } from '../../shim/src/bootstrap/flags';
import { recordedVmDataDir, smolvmPaths, vmDataDir } from '../../shim/src/config/paths';
import { StateStore, type ContainerState, type VmRecord } from '../../shim/src/state/store';

describe('VM data dirs and delete', () => {
  let root: string;
  let savedRoot: string | undefined;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-data-dir-'));
    savedRoot = process.env.SMOLVM_ROOT;
    process.env.SMOLVM_ROOT = root;
  });
  afterEach(() => {
    if (savedRoot === undefined) delete process.env.SMOLVM_ROOT;
    else process.env.SMOLVM_ROOT = savedRoot;
    fs.rmSync(root, { recursive: true, force: true });
  });

  /** A state file as a daemon killed -9 leaves it; its VMM (a pid with another start time) is gone. */
  function leaveState(id: string, vm: Partial<VmRecord>): void {
    const paths = smolvmPaths();
    const state: ContainerState = {
      version: 2, id, namespace: 'ns', bundle: path.join(root, 'bundle'), status: 'running', shimPid: 1,
      vm: {
        backend: 'tcg', vmm: { pid: process.pid, startTime: 'not-this-process' }, stateDir: path.join(paths.stateDir, 'vms', 'v1'),
        dataDir: null, sockets: {}, hostCgroupDirs: [], ...vm,
      },
    };
    new StateStore(paths.stateDir).write(state);
  }

  const runDelete = (id: string): Promise<Buffer> =>
    deleteShim(parseShimFlags(['-namespace', 'ns', '-id', id, '-bundle', path.join(root, 'bundle'), 'delete']));

  it('lives under the cache root, and only a direct child of its vms/ is ever taken back', () => {
    const paths = smolvmPaths();
    assert.equal(vmDataDir(paths, 'abc'), path.join(root, 'lib', 'vms', 'abc'));
    assert.equal(recordedVmDataDir(paths, path.join(root, 'lib', 'vms', 'abc')), path.join(root, 'lib', 'vms', 'abc'));
    for (const bad of [path.join(root, 'lib', 'vms'), path.join(root, 'lib', 'vms', 'a', 'b'), path.join(root, 'lib', 'vms', '..', 'kernels'),
      path.join(root, 'lib', 'vms', 'abc', '..', '..'), '/etc', '', 'relative/vms/x', 42, null, undefined]) {
      assert.equal(recordedVmDataDir(paths, bad), null, String(bad));
    }
  });

  it('delete removes the data dir a state file names (writable disk, logs)', async () => {
    const paths = smolvmPaths();
    const stateVmDir = path.join(paths.stateDir, 'vms', 'v1');
    const dataDir = vmDataDir(paths, 'v1');
    fs.mkdirSync(stateVmDir, { recursive: true });
    fs.mkdirSync(dataDir, { recursive: true });
    fs.writeFileSync(path.join(dataDir, 'writable.ext4'), 'disk');
    fs.writeFileSync(path.join(dataDir, 'console.log'), 'log');
    leaveState('c1', { stateDir: stateVmDir, dataDir });
    await runDelete('c1');
    assert.equal(fs.existsSync(dataDir), false, 'data dir left');
    assert.equal(fs.existsSync(stateVmDir), false, 'state dir left');
    assert.equal(new StateStore(paths.stateDir).read('ns', 'c1'), null);
  });

  it('delete never removes a recorded data dir outside the data root', async () => {
    const paths = smolvmPaths();
    const victim = path.join(root, 'victim');
    fs.mkdirSync(victim);
    fs.writeFileSync(path.join(victim, 'keep'), 'x');
    const kernels = path.join(paths.cacheDir, 'kernels');
    fs.mkdirSync(kernels, { recursive: true });
    leaveState('c2', { dataDir: victim });
    leaveState('c3', { dataDir: path.join(paths.cacheDir, 'vms', '..', 'kernels') });
    await runDelete('c2');
    await runDelete('c3');
    assert.equal(fs.readFileSync(path.join(victim, 'keep'), 'utf8'), 'x');
    assert.ok(fs.existsSync(kernels));
  });

  it('a state file without dataDir (written before data dirs) still deletes fine', async () => {
    const paths = smolvmPaths();
    const stateVmDir = path.join(paths.stateDir, 'vms', 'old');
    fs.mkdirSync(stateVmDir, { recursive: true });
    fs.writeFileSync(path.join(stateVmDir, 'writable.ext4'), 'disk');
    leaveState('c4', { stateDir: stateVmDir });
    await runDelete('c4');
    assert.equal(fs.existsSync(stateVmDir), false);
    assert.equal(new StateStore(paths.stateDir).read('ns', 'c4'), null);
  });
});
