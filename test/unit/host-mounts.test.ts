// Host directories through the VM's one 9p share (shim/src/sandbox/host-mounts.ts) and the
// removal that never crosses into a mount (shim/src/util/fsutil.ts removeTree): real bind
// mounts on this host (root only), no VM. The point of the safety tests: a host directory
// bind-mounted under a VM directory must keep its files whatever removes that directory.
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { deleteShim } from '../../shim/src/bootstrap/delete';
import { Code, codeOf } from '../../shim/src/errdefs';
import { nullLogger } from '../../shim/src/log';
import { bindMountHostDir, detachAll, HostShares } from '../../shim/src/sandbox/host-mounts';
import { StateStore } from '../../shim/src/state/store';
import { mountPoints, mountPointsUnder, removeQuietly, removeTree } from '../../shim/src/util/fsutil';

const isRoot = process.getuid?.() === 0;

function writeFails(file: string): string | null {
  try {
    fs.writeFileSync(file, 'x');
    return null;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code ?? 'error';
  }
}

describe('host directories in the VM share, and removal that never crosses a mount', function () {
  this.timeout(30_000);
  let work: string;

  before(function () {
    if (!isRoot) this.skip();
  });
  beforeEach(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-hostmounts-'));
  });
  afterEach(async () => {
    // Whatever a failed test left mounted goes first, then the files (never across a mount).
    for (const point of mountPointsUnder(work)) execFileSync('umount', ['-l', point]);
    fs.rmSync(work, { recursive: true, force: true });
  });

  /** A "host" directory with a file, and a VM directory with a share dir and other files. */
  function layout(): { host: string; vmDir: string; shares: string } {
    const host = path.join(work, 'host');
    fs.mkdirSync(path.join(host, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(host, 'precious.txt'), 'keep me\n');
    fs.writeFileSync(path.join(host, 'sub', 'deep.txt'), 'keep me too\n');
    const vmDir = path.join(work, 'run', 'vms', 'abc');
    const shares = path.join(vmDir, 'shares');
    fs.mkdirSync(shares, { recursive: true });
    fs.writeFileSync(path.join(vmDir, 'console.log'), 'log\n');
    fs.mkdirSync(path.join(vmDir, 'nested', 'more'), { recursive: true });
    fs.writeFileSync(path.join(vmDir, 'nested', 'more', 'f'), 'f');
    return { host, vmDir, shares };
  }

  it('removeTree leaves a bind mount under a VM directory alone (same filesystem: same st_dev)', async () => {
    const { host, vmDir, shares } = layout();
    const point = path.join(shares, '0');
    fs.mkdirSync(point);
    await bindMountHostDir(host, point, { readOnly: false, recursive: false });
    assert.equal(fs.statSync(point).dev, fs.statSync(vmDir).dev, 'the test needs a bind of the same filesystem');

    const left = removeQuietly(vmDir);
    assert.deepEqual(left, [point], 'only the mount point (and so its parents) stays');
    assert.equal(fs.readFileSync(path.join(host, 'precious.txt'), 'utf8'), 'keep me\n');
    assert.equal(fs.readFileSync(path.join(host, 'sub', 'deep.txt'), 'utf8'), 'keep me too\n');
    assert.ok(mountPoints().has(point), 'still mounted: nobody unmounted it');
    assert.ok(!fs.existsSync(path.join(vmDir, 'console.log')), 'everything else went');
    assert.ok(!fs.existsSync(path.join(vmDir, 'nested')));

    // Once unmounted, the same removal takes the rest and the host files are still there.
    assert.deepEqual(await detachAll([], vmDir), []);
    assert.deepEqual(removeTree(vmDir), []);
    assert.ok(!fs.existsSync(vmDir));
    assert.equal(fs.readFileSync(path.join(host, 'precious.txt'), 'utf8'), 'keep me\n');
  });

  it('removeTree does not descend into another filesystem, nor remove a mount point given itself', () => {
    const { vmDir, shares } = layout();
    const point = path.join(shares, 'tmp');
    fs.mkdirSync(point);
    execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', point]);
    fs.writeFileSync(path.join(point, 'inside'), 'x');
    assert.deepEqual(removeTree(vmDir), [point]);
    assert.ok(fs.existsSync(path.join(point, 'inside')));
    assert.deepEqual(removeTree(point), [point], 'a mount point itself is never emptied');
    assert.ok(fs.existsSync(path.join(point, 'inside')));
    execFileSync('umount', [point]);
    assert.deepEqual(removeTree(vmDir), []);
  });

  it('removeTree empties a directory on overlayfs, whose files report the layer\'s st_dev', () => {
    // As when the state dir is on an overlay root (the KVM lab's L1, a container): a file
    // there reports its layer's device, not the overlay's, yet is no mount and must go.
    const [lower, upper, workdir, merged] = ['lower', 'upper', 'ovl-work', 'merged'].map((d) => path.join(work, d));
    for (const d of [lower, upper, workdir, merged]) fs.mkdirSync(d);
    // Layers on two filesystems: then overlayfs passes each file's own st_dev through.
    execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', lower]);
    fs.mkdirSync(path.join(lower, 'vm'));
    fs.writeFileSync(path.join(lower, 'vm', 'from-lower'), 'x');
    execFileSync('mount', ['-t', 'overlay', 'overlay', '-o', `lowerdir=${lower},upperdir=${upper},workdir=${workdir}`, merged]);
    try {
      const vmDir = path.join(merged, 'vm');
      fs.writeFileSync(path.join(vmDir, 'from-upper'), 'y');
      const devs = new Set(['from-lower', 'from-upper'].map((f) => fs.lstatSync(path.join(vmDir, f)).dev));
      assert.ok([...devs].some((d) => d !== fs.statSync(vmDir).dev), 'the test needs files whose st_dev differs from their directory\'s');
      assert.deepEqual(removeTree(vmDir), []);
      assert.ok(!fs.existsSync(vmDir));
    } finally {
      execFileSync('umount', [merged]);
      execFileSync('umount', [lower]);
    }
  });

  it('removeTree removes symlinks without following them', () => {
    const { host, vmDir } = layout();
    fs.symlinkSync(host, path.join(vmDir, 'link-to-host'));
    fs.symlinkSync(path.join(host, 'precious.txt'), path.join(vmDir, 'file-link'));
    assert.deepEqual(removeTree(vmDir), []);
    assert.equal(fs.readFileSync(path.join(host, 'precious.txt'), 'utf8'), 'keep me\n');
  });

  it('HostShares: rw, ro and recursive ro binds; release unmounts and removes only the mount points', async () => {
    const { host, vmDir, shares } = layout();
    const other = path.join(work, 'other');
    fs.mkdirSync(other);
    const nested = path.join(host, 'sub');
    execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', nested]);
    fs.writeFileSync(path.join(nested, 'on-tmpfs'), 'y');
    const hs = new HostShares(shares, nullLogger);
    const recorded: string[][] = [];
    const subpaths = await hs.add('c1', [
      { hostPath: other, readOnly: false, recursive: false, destination: '/rw' },
      { hostPath: host, readOnly: true, recursive: true, destination: '/ro' },
    ], (points) => recorded.push(points));
    assert.deepEqual(subpaths, ['0', '1']);
    assert.deepEqual(recorded, [[path.join(shares, '0'), path.join(shares, '1')]], 'recorded before mounting');
    assert.deepEqual(hs.mountPointsOf('c1'), recorded[0]);

    fs.writeFileSync(path.join(shares, '0', 'written'), 'through the share\n');
    assert.equal(fs.readFileSync(path.join(other, 'written'), 'utf8'), 'through the share\n');
    assert.equal(writeFails(path.join(shares, '1', 'nope')), 'EROFS', 'read-only bind');
    assert.equal(writeFails(path.join(shares, '1', 'sub', 'nope')), 'EROFS', 'rbind: the submount is read-only too');
    assert.equal(fs.readFileSync(path.join(shares, '1', 'sub', 'on-tmpfs'), 'utf8'), 'y', 'rbind brought the submount');
    assert.equal(writeFails(path.join(host, 'still-writable')), null, 'the host directory itself stays writable');

    // A second owner (a pod's next container) gets new names; releasing one keeps the other.
    assert.deepEqual(await hs.add('c2', [{ hostPath: other, readOnly: true, recursive: false, destination: '/x' }]), ['2']);
    await hs.release('c1');
    assert.deepEqual(mountPointsUnder(shares), [path.join(shares, '2')]);
    assert.deepEqual(fs.readdirSync(shares), ['2']);
    await hs.releaseAll();
    assert.deepEqual(mountPointsUnder(vmDir), []);
    assert.deepEqual(fs.readdirSync(shares), []);
    await assert.rejects(hs.add('c3', [{ hostPath: other, readOnly: false, recursive: false, destination: '/y' }]), /being torn down/);

    assert.equal(fs.readFileSync(path.join(host, 'precious.txt'), 'utf8'), 'keep me\n');
    assert.equal(fs.readFileSync(path.join(other, 'written'), 'utf8'), 'through the share\n');
    execFileSync('umount', [nested]);
  });

  it('never mounts through a symlink planted at the mount point (a guest writes the share through 9p)', async () => {
    const { host, shares } = layout();
    const victim = path.join(work, 'victim');
    fs.mkdirSync(victim);
    fs.writeFileSync(path.join(victim, 'etc-file'), 'host config\n');
    const point = path.join(shares, '0');
    fs.symlinkSync(victim, point);
    await assert.rejects(bindMountHostDir(host, point, { readOnly: false, recursive: true }), /mount point .*\/shares\/0: (ELOOP|ENOTDIR)/);
    assert.deepEqual(mountPointsUnder(work), [], 'nothing mounted, least of all over the symlink\'s target');
    assert.deepEqual(fs.readdirSync(victim), ['etc-file']);
  });

  it('HostShares: a failing mount is InvalidArgument naming the host path and destination; nothing stays', async () => {
    const { host, shares } = layout();
    const hs = new HostShares(shares, nullLogger);
    const missing = path.join(work, 'gone');
    await assert.rejects(hs.add('c1', [
      { hostPath: host, readOnly: false, recursive: false, destination: '/ok' },
      { hostPath: missing, readOnly: false, recursive: false, destination: '/bad' },
    ]), (err: unknown) => {
      assert.equal(codeOf(err), Code.InvalidArgument);
      assert.match((err as Error).message, new RegExp(`mount /bad: bind-mount host directory ${missing} at `));
      return true;
    });
    assert.deepEqual(mountPointsUnder(shares), []);
    assert.deepEqual(fs.readdirSync(shares), []);
    assert.deepEqual(hs.mountPointsOf('c1'), []);
  });

  it('delete (daemon killed -9) detaches recorded and leftover mounts, then removes the VM dir; host files stay', async () => {
    const root = path.join(work, 'root');
    const previous = process.env.SMOLVM_ROOT;
    process.env.SMOLVM_ROOT = root;
    try {
      const host = path.join(work, 'host');
      fs.mkdirSync(host);
      fs.writeFileSync(path.join(host, 'precious.txt'), 'keep me\n');
      const vmDir = path.join(root, 'run', 'vms', 'v1');
      const shares = path.join(vmDir, 'shares');
      fs.mkdirSync(shares, { recursive: true });
      const hs = new HostShares(shares, nullLogger);
      let recorded: string[] = [];
      await hs.add('c1', [{ hostPath: host, readOnly: false, recursive: true, destination: '/d' }], (p) => { recorded = p; });
      // Another pod member's mount, not in c1's state file.
      await hs.add('c2', [{ hostPath: host, readOnly: true, recursive: false, destination: '/e' }]);
      const store = new StateStore(path.join(root, 'run'));
      store.write({
        version: 1, id: 'c1', namespace: 'ns', bundle: work, status: 'running', shimPid: 1,
        // A VMM that is gone already (a start time no process has).
        vm: { backend: 'tcg', pid: process.pid, pidStartTime: '1', dir: vmDir, sockets: {}, disks: {} },
        hostMounts: [...recorded, '/proc'],
      });
      await deleteShim({ namespace: 'ns', address: '', publishBinary: '', id: 'c1', bundle: work, debug: false, version: false, action: 'delete' });
      assert.deepEqual(mountPointsUnder(vmDir), []);
      assert.ok(mountPoints().has('/proc'), 'a recorded path outside the state dir is never touched');
      assert.ok(!fs.existsSync(vmDir), 'the VM directory is gone');
      assert.equal(fs.readFileSync(path.join(host, 'precious.txt'), 'utf8'), 'keep me\n');
      assert.equal(store.read('ns', 'c1'), null);
    } finally {
      if (previous === undefined) delete process.env.SMOLVM_ROOT;
      else process.env.SMOLVM_ROOT = previous;
    }
  });
});
