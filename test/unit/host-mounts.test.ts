// Host directories through the VM's one 9p share (shim/src/vm/host-mounts.ts) and the
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
import { nullLogger, type Logger } from '../../shim/src/log';
import { bindMountHostDir, detachAll, HostShares, mountOptionsAt } from '../../shim/src/vm/host-mounts';
import { StateStore } from '../../shim/src/state/store';
import { mountPoints, mountPointsUnder, removeQuietly, removeTree } from '../../shim/src/util/fsutil';
import { skipBecause } from '../helpers/skip';

const isRoot = process.getuid?.() === 0;

/** The per-mount flags of the mount at `point` that matter here, in a fixed order. */
function flagsOf(point: string): string[] {
  const options = mountOptionsAt(point);
  assert.ok(options, `${point} is not mounted`);
  return [options.includes('ro') ? 'ro' : 'rw', ...['nosuid', 'nodev', 'noexec'].filter((o) => options.includes(o))];
}

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
    if (!isRoot) skipBecause(this, { lacks: 'root', detail: 'bind mounts need root' });
  });
  beforeEach(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-hostmounts-'));
  });
  afterEach(async () => {
    // Whatever a failed test left mounted goes first, then the files (never across a mount).
    for (const point of mountPointsUnder(work)) execFileSync('umount', ['-l', point]);
    fs.rmSync(work, { recursive: true, force: true });
  });

  /** A "host" directory with a file, and a VM directory with other files (`shares` not made). */
  function layout(): { host: string; vmDir: string; shares: string } {
    const host = path.join(work, 'host');
    fs.mkdirSync(path.join(host, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(host, 'precious.txt'), 'keep me\n');
    fs.writeFileSync(path.join(host, 'sub', 'deep.txt'), 'keep me too\n');
    const vmDir = path.join(work, 'run', 'vms', 'abc');
    const shares = path.join(vmDir, 'shares');
    fs.mkdirSync(vmDir, { recursive: true });
    fs.writeFileSync(path.join(vmDir, 'console.log'), 'log\n');
    fs.mkdirSync(path.join(vmDir, 'nested', 'more'), { recursive: true });
    fs.writeFileSync(path.join(vmDir, 'nested', 'more', 'f'), 'f');
    return { host, vmDir, shares };
  }

  it('removeTree leaves a bind mount under a VM directory alone (same filesystem: same st_dev)', async () => {
    const { host, vmDir, shares } = layout();
    const point = path.join(shares, '0');
    fs.mkdirSync(point, { recursive: true });
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
    fs.mkdirSync(point, { recursive: true });
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

  it('HostShares: rw, ro and recursive ro binds, all nosuid,nodev; release unmounts and removes only the mount points', async () => {
    const { host, vmDir, shares } = layout();
    const other = path.join(work, 'other');
    fs.mkdirSync(other);
    const nested = path.join(host, 'sub');
    execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', nested]);
    fs.writeFileSync(path.join(nested, 'on-tmpfs'), 'y');
    const hs = await HostShares.export(vmDir, nullLogger);
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
    assert.deepEqual(flagsOf(path.join(shares, '0')), ['rw', 'nosuid', 'nodev']);
    assert.deepEqual(flagsOf(path.join(shares, '1')), ['ro', 'nosuid', 'nodev']);
    assert.deepEqual(flagsOf(path.join(shares, '1', 'sub')), ['ro', 'nosuid', 'nodev'], 'the rbind\'s submount as well');
    assert.equal(writeFails(path.join(nested, 'still-writable')), null, 'the host\'s own submount stays writable');

    // A second owner (a pod's next container) gets new names; releasing one keeps the other.
    assert.deepEqual(await hs.add('c2', [{ hostPath: other, readOnly: true, recursive: false, destination: '/x' }]), ['2']);
    await hs.release('c1');
    assert.deepEqual(mountPointsUnder(shares), [path.join(shares, '2'), shares]);
    assert.deepEqual(fs.readdirSync(shares), ['2'], 'the released mount points are gone from the export');
    assert.deepEqual(fs.readdirSync(path.join(vmDir, 'share-work', 'staging')), [], 'nothing stays staged');
    await hs.releaseAll();
    assert.deepEqual(mountPointsUnder(vmDir), []);
    assert.ok(!fs.existsSync(shares) && !fs.existsSync(path.join(vmDir, 'share-work')), 'the share\'s directories are gone');
    await assert.rejects(hs.add('c3', [{ hostPath: other, readOnly: false, recursive: false, destination: '/y' }]), /being torn down/);

    assert.equal(fs.readFileSync(path.join(host, 'precious.txt'), 'utf8'), 'keep me\n');
    assert.equal(fs.readFileSync(path.join(other, 'written'), 'utf8'), 'through the share\n');
    execFileSync('umount', [nested]);
  });

  it('the exported share root is a read-only, nosuid, nodev mount: nothing can be written, made or chmodded there', async () => {
    const { host, vmDir, shares } = layout();
    const hs = await HostShares.export(vmDir, nullLogger);
    await hs.add('c1', [{ hostPath: host, readOnly: false, recursive: false, destination: '/d' }]);
    // What a guest root asks QEMU (root, passthrough) to do at the share root.
    assert.deepEqual(flagsOf(shares), ['ro', 'nosuid', 'nodev', 'noexec']);
    assert.equal(writeFails(path.join(shares, 'planted')), 'EROFS');
    assert.throws(() => fs.mkdirSync(path.join(shares, 'dir')), /EROFS/);
    assert.throws(() => fs.symlinkSync('/etc', path.join(shares, 'etc')), /EROFS/);
    assert.throws(() => execFileSync('mknod', [path.join(shares, 'null'), 'c', '1', '3'], { stdio: 'pipe' }), /Read-only file system/);
    assert.throws(() => fs.chmodSync(shares, 0o4755), /EROFS/);
    assert.throws(() => fs.rmdirSync(path.join(shares, '0')), /EROFS|EBUSY/, 'a mount point cannot be removed or swapped');
    assert.throws(() => fs.renameSync(path.join(shares, '0'), path.join(shares, 'x')), /EROFS|EBUSY|EXDEV/);
    assert.deepEqual(fs.readdirSync(shares), ['0']);
    await hs.releaseAll();
    assert.deepEqual(mountPointsUnder(vmDir), []);
  });

  it('a host directory whose own mount is read-only (and noexec) stays so when shared read-write', async () => {
    const { host, vmDir, shares } = layout();
    const roView = path.join(work, 'ro-view');
    fs.mkdirSync(roView);
    execFileSync('mount', ['--bind', host, roView]);
    execFileSync('mount', ['-o', 'remount,bind,ro,noexec', roView]);
    const hs = await HostShares.export(vmDir, nullLogger);
    await hs.add('c1', [{ hostPath: roView, readOnly: false, recursive: false, destination: '/d' }]);
    assert.deepEqual(flagsOf(path.join(shares, '0')), ['ro', 'nosuid', 'nodev', 'noexec']);
    assert.equal(writeFails(path.join(shares, '0', 'nope')), 'EROFS');
    await hs.releaseAll();
    execFileSync('umount', [roView]);
  });

  it('a mount added later is seen through the export\'s root opened before it (as QEMU holds it)', async () => {
    const { host, vmDir, shares } = layout();
    const hs = await HostShares.export(vmDir, nullLogger);
    const rootFd = fs.openSync(shares, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    try {
      await hs.add('member', [{ hostPath: host, readOnly: true, recursive: false, destination: '/late' }]);
      assert.equal(fs.readFileSync(`/proc/self/fd/${rootFd}/0/precious.txt`, 'utf8'), 'keep me\n');
      await hs.release('member');
      assert.throws(() => fs.readFileSync(`/proc/self/fd/${rootFd}/0/precious.txt`), /ENOENT/, 'gone once released');
    } finally {
      fs.closeSync(rootFd);
    }
    await hs.releaseAll();
    assert.deepEqual(mountPointsUnder(vmDir), []);
  });

  it('in a read-write host directory, a device node made through the share cannot be opened there, nor a setuid bit act', async () => {
    // passthrough mknod and chmod reach the host file system (nodev and nosuid do not refuse
    // them): what the share's flags guarantee is that such files are inert through it.
    const { host, vmDir, shares } = layout();
    const hs = await HostShares.export(vmDir, nullLogger);
    await hs.add('c1', [{ hostPath: host, readOnly: false, recursive: false, destination: '/d' }]);
    const node = path.join(shares, '0', 'null');
    execFileSync('mknod', ['-m', '0666', node, 'c', '1', '3']);
    assert.ok(fs.statSync(path.join(host, 'null')).isCharacterDevice(), 'observed: the node exists in the host directory');
    assert.throws(() => fs.openSync(node, 'w'), /EACCES/, 'nodev: not through the share');
    const id = path.join(shares, '0', 'id');
    fs.copyFileSync('/usr/bin/id', id);
    fs.chmodSync(id, 0o4755);
    assert.equal(fs.statSync(path.join(host, 'id')).mode & 0o4000, 0o4000, 'observed: the setuid bit is set on the host file');
    const asNobody = (file: string): string => execFileSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', file, '-u'], { encoding: 'utf8' }).trim();
    assert.equal(asNobody(id), '65534', 'nosuid: run through the share, it gives no root');
    await hs.releaseAll();
    assert.deepEqual(mountPointsUnder(vmDir), []);
  });

  it('under a shared parent mount (systemd\'s /run): nothing is left in the parent or its peers', async () => {
    const runDir = path.join(work, 'run');
    const peer = path.join(work, 'peer');
    fs.mkdirSync(runDir);
    fs.mkdirSync(peer);
    execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', runDir]);
    execFileSync('mount', ['--make-shared', runDir]);
    execFileSync('mount', ['--bind', runDir, peer]);
    try {
      const host = path.join(work, 'host');
      fs.mkdirSync(path.join(host, 'sub'), { recursive: true });
      execFileSync('mount', ['-t', 'tmpfs', 'tmpfs', path.join(host, 'sub')]);
      const vmDir = path.join(runDir, 'vms', 'v1');
      fs.mkdirSync(vmDir, { recursive: true });
      const hs = await HostShares.export(vmDir, nullLogger);
      await hs.add('c1', [{ hostPath: host, readOnly: true, recursive: true, destination: '/d' }]);
      assert.ok(fs.existsSync(path.join(vmDir, 'shares', '0', 'sub')));
      assert.deepEqual(mountPointsUnder(path.join(peer, 'vms', 'v1', 'shares', '0')), [], 'a host directory\'s mount stays private');
      await hs.release('c1');
      await hs.releaseAll();
      assert.deepEqual(mountPointsUnder(runDir).filter((p) => p !== runDir), []);
      assert.deepEqual(mountPointsUnder(peer).filter((p) => p !== peer), [], 'the copies propagated to the peer went too');
      execFileSync('umount', [path.join(host, 'sub')]);
    } finally {
      for (const point of [...mountPointsUnder(peer), ...mountPointsUnder(runDir)]) execFileSync('umount', ['-l', point]);
    }
  });

  it('release unmounts plainly; a mount still in use is detached, with a warning naming it', async () => {
    const { host, vmDir, shares } = layout();
    const warnings: string[] = [];
    const quiet = (): void => undefined;
    const log: Logger = {
      debug: quiet, info: quiet, error: quiet, child: () => log,
      warn: (msg, fields) => { warnings.push(`${msg} ${JSON.stringify(fields)}`); },
    };
    const hs = await HostShares.export(vmDir, log);
    await hs.add('idle', [{ hostPath: host, readOnly: true, recursive: false, destination: '/a' }]);
    await hs.add('busy', [{ hostPath: host, readOnly: true, recursive: false, destination: '/b' }]);
    await hs.add('brief', [{ hostPath: host, readOnly: true, recursive: false, destination: '/c' }]);
    await hs.release('idle');
    // Busy for a moment only (as a VMM just killed, still closing its files): waited for.
    const brief = fs.openSync(path.join(shares, '2', 'precious.txt'), 'r');
    setTimeout(() => fs.closeSync(brief), 30);
    await hs.release('brief');
    assert.deepEqual(warnings, []);
    assert.deepEqual(mountPointsUnder(shares), [path.join(shares, '1'), shares]);
    const held = fs.openSync(path.join(shares, '1', 'precious.txt'), 'r');
    try {
      await hs.release('busy');
      assert.equal(warnings.length, 1, warnings.join('\n'));
      assert.match(warnings[0]!, new RegExp(`${path.join(shares, '1')} was busy: detached`));
      assert.deepEqual(mountPointsUnder(shares), [shares]);
      assert.equal(fs.readFileSync(held, 'utf8'), 'keep me\n', 'an open file stays usable');
    } finally {
      fs.closeSync(held);
    }
    await hs.releaseAll();
    assert.deepEqual(mountPointsUnder(vmDir), []);
  });

  it('never mounts through a symlink planted at the mount point', async () => {
    const { host, shares } = layout();
    fs.mkdirSync(shares);
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
    const { host, vmDir, shares } = layout();
    const hs = await HostShares.export(vmDir, nullLogger);
    const missing = path.join(work, 'gone');
    await assert.rejects(hs.add('c1', [
      { hostPath: host, readOnly: false, recursive: false, destination: '/ok' },
      { hostPath: missing, readOnly: false, recursive: false, destination: '/bad' },
    ]), (err: unknown) => {
      assert.equal(codeOf(err), Code.InvalidArgument);
      assert.match((err as Error).message, new RegExp(`mount /bad: bind-mount host directory ${missing} at `));
      return true;
    });
    assert.deepEqual(mountPointsUnder(shares), [shares], 'only the export itself');
    assert.deepEqual(fs.readdirSync(shares), []);
    assert.deepEqual(fs.readdirSync(path.join(vmDir, 'share-work', 'staging')), []);
    assert.deepEqual(hs.mountPointsOf('c1'), []);
    await hs.releaseAll();
    assert.deepEqual(mountPointsUnder(vmDir), []);
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
      fs.mkdirSync(vmDir, { recursive: true });
      const hs = await HostShares.export(vmDir, nullLogger);
      let recorded: string[] = [];
      await hs.add('c1', [{ hostPath: host, readOnly: false, recursive: true, destination: '/d' }], (p) => { recorded = p; });
      // Another pod member's mount, not in c1's state file.
      await hs.add('c2', [{ hostPath: host, readOnly: true, recursive: false, destination: '/e' }]);
      const store = new StateStore(path.join(root, 'run'));
      store.write({
        version: 2, id: 'c1', namespace: 'ns', bundle: work, status: 'running', shimPid: 1,
        // A VMM that is gone already (a start time no process has).
        vm: { backend: 'tcg', vmm: { pid: process.pid, startTime: '1' }, stateDir: vmDir, dataDir: null, sockets: {}, hostCgroupDirs: [] },
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
