import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Code, RpcError } from '../../shim/src/errdefs';
import { expandSlice, parseCgroupMounts, placeInCgroup, removeCgroupPlacement, resolveCgroupsPath } from '../../shim/src/vm/host-cgroup';

function refused(cgroupsPath: string, pattern: RegExp): void {
  assert.throws(() => resolveCgroupsPath(cgroupsPath), (err: unknown) => {
    assert.ok(err instanceof RpcError);
    assert.equal(err.code, Code.InvalidArgument);
    assert.ok(err.message.includes(JSON.stringify(cgroupsPath)), err.message);
    assert.match(err.message, pattern);
    return true;
  });
}

describe('host cgroup: cgroupsPath', () => {
  it('leaves the VMM where it is for an empty path', () => {
    assert.equal(resolveCgroupsPath(undefined), null);
    assert.equal(resolveCgroupsPath(''), null);
  });

  it('takes the cgroupfs form relative to each hierarchy root', () => {
    assert.equal(resolveCgroupsPath('/a/b/c'), 'a/b/c');
    assert.equal(resolveCgroupsPath('//default//ctr1/'), 'default/ctr1');
  });

  it('expands the systemd form as runc does', () => {
    assert.equal(resolveCgroupsPath('system.slice:cri-containerd:abc'), 'system.slice/cri-containerd-abc.scope');
    assert.equal(resolveCgroupsPath('kubepods-burstable-podX.slice:cri-containerd:abc'),
      'kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podX.slice/cri-containerd-abc.scope');
    assert.equal(resolveCgroupsPath(':cri-containerd:abc'), 'system.slice/cri-containerd-abc.scope');
    assert.equal(resolveCgroupsPath('-.slice::abc'), 'abc.scope');
    assert.equal(resolveCgroupsPath('system.slice::sub.slice'), 'system.slice/sub.slice');
  });

  it('expands nested slice names', () => {
    assert.equal(expandSlice('x', 'a-b-c.slice'), 'a.slice/a-b.slice/a-b-c.slice');
    assert.equal(expandSlice('x', '-.slice'), '');
  });

  it('refuses bad paths with InvalidArgument naming them', () => {
    refused('/a/../b', /"\.\."/);
    refused('/', /root cgroup/);
    refused('relative/path', /absolute/);
    refused('a:b', /slice:prefix:name/);
    refused('a:b:c:d', /slice:prefix:name/);
    refused('system.slice:cri:', /needs a name/);
    refused('system:cri:abc', /ending in "\.slice"/);
    refused('a--b.slice:cri:abc', /empty/);
    refused('system.slice:cri:a/b', /name must not contain "\/"/);
    refused('system.slice:..:abc', /"\.\."/);
    refused('/a/b\nc', /control characters/);
  });
});

describe('host cgroup: mounts', () => {
  it('finds v1 hierarchies and the unified one, each once', () => {
    const mountinfo = [
      '31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755',
      '34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset',
      '35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
      '36 31 0:32 / /mnt/mem\\040copy rw,relatime - cgroup cgroup rw,memory',
      '40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd',
      '41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate',
      '',
    ].join('\n');
    assert.deepEqual(parseCgroupMounts(mountinfo), [
      { mountPoint: '/sys/fs/cgroup/cpuset', version: 1, controllers: ['cpuset'] },
      { mountPoint: '/sys/fs/cgroup/memory', version: 1, controllers: ['memory'] },
      { mountPoint: '/sys/fs/cgroup/systemd', version: 1, controllers: ['name=systemd'] },
      { mountPoint: '/sys/fs/cgroup/unified', version: 2, controllers: [] },
    ]);
  });
});

describe('host cgroup: placement (directories standing in for cgroupfs)', () => {
  let root: string;
  beforeEach(() => { root = fs.mkdtempSync(path.join(os.tmpdir(), 'host-cgroup-')); });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  it('creates the missing directories, writes the pid, removes only what it made', async () => {
    const v2 = path.join(root, 'v2');
    fs.mkdirSync(path.join(v2, 'existing'), { recursive: true });
    const placement = placeInCgroup(4242, 'existing/leaf', [{ mountPoint: v2, version: 2, controllers: [] }]);
    assert.deepEqual(placement.created, [path.join(v2, 'existing/leaf')]);
    assert.equal(fs.readFileSync(path.join(v2, 'existing/leaf/cgroup.procs'), 'utf8'), '4242');
    // A real cgroup directory is empty once its processes are gone: stand in for that.
    fs.rmSync(path.join(v2, 'existing/leaf/cgroup.procs'));
    assert.deepEqual(await removeCgroupPlacement(placement), []);
    assert.ok(!fs.existsSync(path.join(v2, 'existing/leaf')));
    assert.ok(fs.existsSync(path.join(v2, 'existing')));
  });

  it('never removes a non-empty directory', async () => {
    const v2 = path.join(root, 'v2');
    fs.mkdirSync(v2);
    const placement = placeInCgroup(1, 'a/b', [{ mountPoint: v2, version: 2, controllers: [] }]);
    assert.deepEqual(await removeCgroupPlacement(placement), [path.join(v2, 'a/b'), path.join(v2, 'a')]);
    assert.ok(fs.existsSync(path.join(v2, 'a/b/cgroup.procs')));
  });

  it('gives a new v1 cpuset child its parent cpus and mems', () => {
    const cpuset = path.join(root, 'cpuset');
    fs.mkdirSync(cpuset);
    fs.writeFileSync(path.join(cpuset, 'cpuset.cpus'), '0-1\n');
    fs.writeFileSync(path.join(cpuset, 'cpuset.mems'), '0\n');
    // The kernel makes these files, empty, with each directory: a plain mkdir cannot, so the
    // directories exist already (existing cgroups get the same treatment).
    for (const dir of ['x', 'x/y']) {
      fs.mkdirSync(path.join(cpuset, dir));
      fs.writeFileSync(path.join(cpuset, dir, 'cpuset.cpus'), '');
      fs.writeFileSync(path.join(cpuset, dir, 'cpuset.mems'), '');
    }
    placeInCgroup(7, 'x/y', [{ mountPoint: cpuset, version: 1, controllers: ['cpuset'] }]);
    assert.equal(fs.readFileSync(path.join(cpuset, 'x/y/cpuset.cpus'), 'utf8'), '0-1');
    assert.equal(fs.readFileSync(path.join(cpuset, 'x/y/cpuset.mems'), 'utf8'), '0');
  });

  it('on failure removes what it created and names the directory', () => {
    const v2 = path.join(root, 'v2');
    fs.mkdirSync(v2);
    const missing = path.join(root, 'not-mounted');
    assert.throws(() => placeInCgroup(9, 'p/q', [
      { mountPoint: v2, version: 2, controllers: [] },
      { mountPoint: missing, version: 1, controllers: ['memory'] },
    ]), (err: unknown) => {
      assert.ok(err instanceof RpcError);
      assert.equal(err.code, Code.FailedPrecondition);
      assert.ok(err.message.includes(path.join(missing, 'p')), err.message);
      return true;
    });
    // cgroup.procs stays in the fake (a real cgroup would be empty), so the v2 leaf remains;
    // the failing hierarchy left nothing.
    assert.ok(!fs.existsSync(missing));
  });
});
