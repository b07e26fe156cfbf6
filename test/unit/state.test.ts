import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { DeleteResponse } from '../../shim/src/gen/containerd/task/v2/shim';
import { parseState, STATE_VERSION, StateStore, validateId, type ContainerState } from '../../shim/src/state/store';

const repo = path.resolve(__dirname, '..', '..', '..');
/** A state file as the smolvm before state version 2 wrote it, taken from a real `ctr run -d`. */
const V1_FIXTURE = path.join(repo, 'test', 'fixtures', 'state-v1.json');
const SHIM_JS = path.join(repo, 'bin', 'containerd-shim-smolvm-v1.js');
import { isSameProcessAlive, killIdentified, processStartTime, waitGone } from '../../shim/src/util/proc';

describe('state store', () => {
  let dir: string;
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-state-')); });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const sample = (): ContainerState => ({
    version: STATE_VERSION, id: 'c1', namespace: 'default', bundle: '/b', status: 'created', shimPid: 1,
    vm: { backend: 'tcg', vmm: { pid: 42, startTime: '100' }, stateDir: '/x', dataDir: '/d', sockets: { agent: '/x/a' }, hostCgroupDirs: [] },
  });

  it('round-trips atomically and leaves no temp files', () => {
    const store = new StateStore(dir);
    store.write(sample());
    assert.deepEqual(store.read('default', 'c1'), sample());
    assert.deepEqual(fs.readdirSync(path.join(dir, 'tasks', 'default')), ['c1.json']);
    store.remove('default', 'c1');
    assert.equal(store.read('default', 'c1'), null);
  });

  it('refuses a state file of another version, and a malformed one, naming the file', () => {
    const store = new StateStore(dir);
    store.write({ ...sample(), version: 99 });
    assert.throws(() => store.read('default', 'c1'), /c1\.json has version 99; this smolvm reads versions 1 and 2/);
    fs.writeFileSync(store.file('default', 'c1'), '{"version": 2, "id": "c1"');
    assert.throws(() => store.read('default', 'c1'), /c1\.json is not JSON/);
    store.write({ ...sample(), vm: { backend: 'tcg' } as unknown as ContainerState['vm'] });
    assert.throws(() => store.read('default', 'c1'), /c1\.json: malformed vm/);
  });

  it('reads a version-1 state file (written by the smolvm before version 2) as version 2', () => {
    const v1 = JSON.parse(fs.readFileSync(V1_FIXTURE, 'utf8')) as Record<string, unknown>;
    const state = parseState(v1, V1_FIXTURE);
    const vm = state.vm!;
    assert.equal(state.version, STATE_VERSION);
    assert.deepEqual(vm.vmm, { pid: 3137, startTime: '1010074' });
    assert.match(vm.stateDir, /\/run\/vms\/24e3840128b4$/);
    assert.match(vm.dataDir ?? '', /\/lib\/vms\/24e3840128b4$/);
    assert.equal(vm.hostCgroupDirs.length, 10);
    assert.deepEqual(Object.keys(vm.sockets).sort(), ['agent', 'qmp']);
    // Before data dirs existed (no dataDir): everything was in the state dir.
    const older = JSON.parse(JSON.stringify(v1)) as { vm: Record<string, unknown> };
    delete older.vm.dataDir;
    delete older.vm.hostCgroupDirs;
    assert.equal(parseState(older, 'older').vm!.dataDir, null);
    assert.deepEqual(parseState(older, 'older').vm!.hostCgroupDirs, []);
  });

  it('`delete` tears down a task that a version-1 state file describes: VMM, cgroups, directories, state', async () => {
    const root = path.join(dir, 'smolvm');
    const cgroupParent = `/sys/fs/cgroup/pids/smolvm-state-test-${process.pid}`;
    const cgroup = path.join(cgroupParent, 'c1');
    const vmm = spawn('sleep', ['600'], { stdio: 'ignore' });
    await new Promise((r) => vmm.once('spawn', r));
    const exited = new Promise((r) => vmm.once('exit', r));
    try {
      // Today's file for this root: its VMM a live stand-in, its cgroups and directories real.
      const v1 = JSON.parse(fs.readFileSync(V1_FIXTURE, 'utf8')) as {
        bundle: string; namespace: string; id: string; vm: Record<string, unknown> & { sockets: Record<string, string> };
      };
      const stateDir = path.join(root, 'run', 'vms', 'v1vm');
      const dataDir = path.join(root, 'lib', 'vms', 'v1vm');
      Object.assign(v1.vm, {
        pid: vmm.pid, pidStartTime: processStartTime(vmm.pid!), dir: stateDir, dataDir,
        sockets: { agent: path.join(stateDir, 'agent.sock'), qmp: path.join(stateDir, 'qmp.sock') }, hostCgroupDirs: [cgroupParent, cgroup],
      });
      v1.id = 'c1';
      v1.namespace = 'default';
      v1.bundle = path.join(dir, 'bundle');
      for (const d of [stateDir, dataDir, v1.bundle, cgroup]) fs.mkdirSync(d, { recursive: true });
      fs.writeFileSync(path.join(dataDir, 'writable.ext4'), 'disk');
      fs.writeFileSync(path.join(stateDir, 'agent.sock'), '');
      fs.mkdirSync(path.join(root, 'run', 'tasks', 'default'), { recursive: true });
      const stateFile = path.join(root, 'run', 'tasks', 'default', 'c1.json');
      fs.writeFileSync(stateFile, JSON.stringify(v1, null, 2));
      const r = spawnSync(process.execPath, [SHIM_JS, '-namespace', 'default', '-id', 'c1', '-bundle', v1.bundle, 'delete'], {
        env: { ...process.env, SMOLVM_ROOT: root }, cwd: v1.bundle, timeout: 20_000,
      });
      assert.equal(r.status, 0, r.stderr.toString());
      assert.equal(DeleteResponse.decode(r.stdout).pid, vmm.pid, 'the response names the VMM');
      await exited;
      for (const gone of [stateFile, stateDir, dataDir, cgroup, cgroupParent]) assert.ok(!fs.existsSync(gone), `${gone} left`);
    } finally {
      vmm.kill('SIGKILL');
      for (const d of [cgroup, cgroupParent]) if (fs.existsSync(d)) fs.rmdirSync(d);
    }
  });

  it('validates ids that become file names', () => {
    validateId('abc-1.2_3');
    assert.throws(() => validateId('../etc'), /invalid container id/);
    assert.throws(() => validateId(''), /invalid container id/);
  });
});

describe('process identity', () => {
  it('kills only the process with the recorded start time', async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    await new Promise((r) => child.once('spawn', r));
    const id = { pid: child.pid!, startTime: processStartTime(child.pid!)! };
    assert.ok(isSameProcessAlive(id));
    assert.equal(killIdentified({ ...id, startTime: '1' }), false, 'a different start time is another process');
    assert.ok(isSameProcessAlive(id));
    const exited = new Promise((r) => child.once('exit', r));
    assert.equal(killIdentified(id), true);
    await exited;
    assert.ok(await waitGone(id, 1000));
  });
});
