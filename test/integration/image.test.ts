// Real guest images: mkfs.erofs, overlay merges, the cache, cleanup, and writable ext4 disks.
// Needs erofs-utils and e2fsprogs; the overlay cases need root (mount).
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Code, RpcError } from '../../shim/src/errdefs';
import type { Mount } from '../../shim/src/gen/containerd/types/mount';
import { createWritableDisk, ensureImage } from '../../shim/src/image';
import { skipBecause } from '../helpers/skip';

const isRoot = process.getuid?.() === 0;
const run = (file: string, args: string[]): string =>
  execFileSync(file, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const ms = (start: bigint): number => Number(process.hrtime.bigint() - start) / 1e6;

/** Unpacks an erofs image with fsck.erofs (which also checks its integrity). */
function extract(image: string, into: string): void {
  run('fsck.erofs', [`--extract=${into}`, image]);
}

function mountsUnder(dir: string): string[] {
  return fs.readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(dir));
}

/** A busybox rootfs: the static binary plus its applet links (~280 entries, 2 MB). */
function busyboxRootfs(root: string): void {
  for (const applet of run('/bin/busybox', ['--list-full']).split('\n').filter(Boolean)) {
    fs.mkdirSync(path.join(root, path.dirname(applet)), { recursive: true });
    fs.symlinkSync('/bin/busybox', path.join(root, applet));
  }
  fs.rmSync(path.join(root, 'bin', 'busybox'), { force: true });
  fs.copyFileSync('/bin/busybox', path.join(root, 'bin', 'busybox'));
  fs.chmodSync(path.join(root, 'bin', 'busybox'), 0o755);
  for (const d of ['etc', 'proc', 'sys', 'dev', 'tmp']) fs.mkdirSync(path.join(root, d), { recursive: true });
  fs.writeFileSync(path.join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
}

describe('guest images (integration)', function () {
  this.timeout(120_000);
  let tmp: string;
  let cacheDir: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-image-it-'));
    cacheDir = path.join(tmp, 'cache');
  });
  afterEach(() => {
    for (const line of mountsUnder(tmp)) {
      const mountPoint = line.split(' ')[4];
      execFileSync('umount', ['-l', mountPoint]);
    }
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('makes an erofs image of a directory that keeps modes, owners, links and special files', async () => {
    const root = path.join(tmp, 'rootfs');
    fs.mkdirSync(path.join(root, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(root, 'etc', 'conf'), 'hello\n');
    if (isRoot) fs.chownSync(path.join(root, 'etc', 'conf'), 1234, 5678);
    fs.chmodSync(path.join(root, 'etc', 'conf'), 0o4750); // after chown, which clears setuid
    fs.utimesSync(path.join(root, 'etc', 'conf'), new Date('2001-02-03T04:05:06Z'), new Date('2001-02-03T04:05:06Z'));
    fs.symlinkSync('etc/conf', path.join(root, 'link'));
    fs.linkSync(path.join(root, 'etc', 'conf'), path.join(root, 'hard'));
    run('mkfifo', [path.join(root, 'fifo')]);
    fs.writeFileSync(path.join(root, 'big'), Buffer.alloc(300_000, 7));

    const img = await ensureImage({ kind: 'dir', path: root }, { cacheDir });
    assert.equal(img.built, true);
    assert.equal(img.path, path.join(cacheDir, 'images', `${img.key}.erofs`));
    // As root, look at it the way the guest kernel will (fsck.erofs --extract drops setuid).
    const out = path.join(tmp, 'out');
    fs.mkdirSync(out);
    if (isRoot) run('mount', ['-o', 'loop,ro', '-t', 'erofs', img.path, out]);
    else extract(img.path, out);
    const st = fs.statSync(path.join(out, 'etc', 'conf'));
    assert.equal(st.mode & 0o7777, isRoot ? 0o4750 : 0o750);
    if (isRoot) assert.deepEqual([st.uid, st.gid], [1234, 5678]);
    assert.equal(st.mtime.toISOString(), '2001-02-03T04:05:06.000Z');
    assert.equal(fs.readFileSync(path.join(out, 'etc', 'conf'), 'utf8'), 'hello\n');
    assert.equal(fs.readlinkSync(path.join(out, 'link')), 'etc/conf');
    assert.equal(fs.statSync(path.join(out, 'hard')).ino, st.ino, 'hard link kept');
    assert.ok(fs.lstatSync(path.join(out, 'fifo')).isFIFO());
    assert.ok(fs.readFileSync(path.join(out, 'big')).equals(Buffer.alloc(300_000, 7)));
    if (isRoot) run('umount', [out]);
    run('fsck.erofs', [img.path]);
    assert.match(run('dump.erofs', ['-s', img.path]), /Filesystem magic number/);

    // The second run converts nothing; a change to the tree makes a new image.
    const again = await ensureImage({ kind: 'dir', path: root }, { cacheDir });
    assert.deepEqual(again, { ...img, built: false });
    fs.writeFileSync(path.join(root, 'etc', 'new'), 'x');
    const changed = await ensureImage({ kind: 'dir', path: root }, { cacheDir });
    assert.equal(changed.built, true);
    assert.notEqual(changed.key, img.key);
    // Nothing but the published images is left in the cache.
    assert.deepEqual(fs.readdirSync(path.join(cacheDir, 'images')).sort(), [`${img.key}.erofs`, `${changed.key}.erofs`].sort());
  });

  it('merges three overlay layers with a whiteout and an opaque dir, leaving no mount behind', async function () {
    if (!isRoot) skipBecause(this, { lacks: 'root', detail: 'mounting needs root' });
    // Make real layers the way the overlayfs snapshotter does: the kernel writes the whiteout
    // and the opaque xattr into each new upper dir.
    const layer = (n: number): string => {
      const dir = path.join(tmp, 'snapshots', String(n), 'fs');
      fs.mkdirSync(dir, { recursive: true });
      fs.mkdirSync(path.join(tmp, 'snapshots', String(n), 'work'));
      return dir;
    };
    const l1 = layer(1);
    fs.mkdirSync(path.join(l1, 'a'));
    fs.mkdirSync(path.join(l1, 'dir'));
    fs.writeFileSync(path.join(l1, 'a', 'keep'), 'keep');
    fs.writeFileSync(path.join(l1, 'a', 'gone'), 'gone');
    fs.writeFileSync(path.join(l1, 'dir', 'old'), 'old');
    fs.writeFileSync(path.join(l1, 'shared'), '1');
    const mnt = path.join(tmp, 'mnt');
    fs.mkdirSync(mnt);
    const withOverlay = (upper: string, lowers: string[], change: () => void): void => {
      const work = path.join(path.dirname(upper), 'work');
      run('mount', ['-t', 'overlay', '-o', `lowerdir=${lowers.join(':')},upperdir=${upper},workdir=${work}`, 'overlay', mnt]);
      try {
        change();
      } finally {
        run('umount', [mnt]);
      }
    };
    const l2 = layer(2);
    withOverlay(l2, [l1], () => {
      fs.rmSync(path.join(mnt, 'a', 'gone'));
      fs.rmSync(path.join(mnt, 'dir'), { recursive: true });
      fs.mkdirSync(path.join(mnt, 'dir'));
      fs.writeFileSync(path.join(mnt, 'dir', 'new'), 'new');
      fs.writeFileSync(path.join(mnt, 'shared'), '2');
    });
    assert.ok(fs.lstatSync(path.join(l2, 'a', 'gone')).isCharacterDevice(), 'a whiteout in layer 2');
    const l3 = layer(3);
    withOverlay(l3, [l2, l1], () => {
      fs.writeFileSync(path.join(mnt, 'top'), 'top');
      fs.writeFileSync(path.join(mnt, 'shared'), '3');
    });

    // The container's active snapshot, as containerd 1.6 passes it in CreateTaskRequest.rootfs.
    const active = path.join(tmp, 'snapshots', '4');
    fs.mkdirSync(path.join(active, 'fs'), { recursive: true });
    fs.mkdirSync(path.join(active, 'work'));
    const rootfs: Mount = {
      type: 'overlay',
      source: 'overlay',
      target: '',
      options: ['index=off', `workdir=${active}/work`, `upperdir=${active}/fs`, `lowerdir=${l3}:${l2}:${l1}`],
    };
    const img = await ensureImage({ kind: 'mounts', mounts: [rootfs] }, { cacheDir });
    assert.equal(img.built, true);
    const out = path.join(tmp, 'out');
    extract(img.path, out);
    const tree = run('find', [out, '-mindepth', '1', '-printf', '%P %y\n']).split('\n').filter(Boolean).sort();
    assert.deepEqual(tree, ['a d', 'a/keep f', 'dir d', 'dir/new f', 'shared f', 'top f']);
    assert.equal(fs.readFileSync(path.join(out, 'shared'), 'utf8'), '3');
    assert.deepEqual(mountsUnder(tmp), [], 'no mount left');
    assert.deepEqual(fs.readdirSync(path.join(cacheDir, 'images')), [`${img.key}.erofs`]);

    const hit = await ensureImage({ kind: 'mounts', mounts: [rootfs] }, { cacheDir });
    assert.equal(hit.built, false);
    // A single-lowerdir view (ro bind) of layer 1 is read directly.
    const bind = await ensureImage({ kind: 'mounts', mounts: [{ type: 'bind', source: l1, target: '', options: ['ro', 'rbind'] }] }, { cacheDir });
    assert.equal(bind.built, true);
  });

  it('cleans up everything when the conversion fails, and sweeps a dead builder\'s leftovers', async function () {
    if (!isRoot) skipBecause(this, { lacks: 'root', detail: 'mounting needs root' });
    const l1 = path.join(tmp, 'l1');
    const l2 = path.join(tmp, 'l2');
    fs.mkdirSync(l1);
    fs.mkdirSync(l2);
    fs.writeFileSync(path.join(l1, 'f'), '1');
    const source = { kind: 'mounts' as const, mounts: [{ type: 'overlay', source: 'overlay', target: '', options: [`lowerdir=${l2}:${l1}`] }] };
    // A mkfs.erofs that writes half an image, proves the merged mount is there, then fails.
    const fakeBin = path.join(tmp, 'fakebin');
    fs.mkdirSync(fakeBin);
    fs.writeFileSync(
      path.join(fakeBin, 'mkfs.erofs'),
      '#!/bin/sh\nwhile [ $# -gt 2 ]; do shift; done\necho partial > "$1"\n' +
        'test -f "$2/f" && echo "fake failure, merged view seen" >&2\nexit 3\n',
      { mode: 0o755 },
    );
    const savedPath = process.env.PATH;
    process.env.PATH = `${fakeBin}:${savedPath ?? ''}`;
    try {
      await assert.rejects(ensureImage(source, { cacheDir }), (err: unknown) => {
        assert.ok(err instanceof RpcError);
        assert.equal(err.code, Code.Internal);
        assert.match(err.message, /exit status 3.*fake failure, merged view seen/s);
        return true;
      });
    } finally {
      process.env.PATH = savedPath;
    }
    assert.deepEqual(fs.readdirSync(path.join(cacheDir, 'images')), [], 'no temp file, mount dir or lock left');
    assert.deepEqual(mountsUnder(tmp), [], 'no mount left');

    // A builder that died mid-way: its lock (dead pid), temp file and mount dir are swept.
    const first = await ensureImage(source, { cacheDir });
    fs.rmSync(first.path);
    const images = path.join(cacheDir, 'images');
    const bootId = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const deadPid = Number(run('/bin/sh', ['-c', 'echo $$']).trim());
    fs.writeFileSync(path.join(images, `${first.key}.lock`), `smolvm-lock v1\nboot ${bootId}\npid ${deadPid}\nstart 1\n`);
    fs.writeFileSync(path.join(images, `.tmp-${first.key}-${deadPid}-0000.erofs`), 'partial');
    fs.mkdirSync(path.join(images, `.mnt-${first.key}-${deadPid}-0000`));
    const logs: string[] = [];
    const rebuilt = await ensureImage(source, { cacheDir, log: (m) => logs.push(m) });
    assert.equal(rebuilt.built, true);
    assert.deepEqual(fs.readdirSync(images), [`${first.key}.erofs`]);
    assert.ok(logs.some((l) => /removed leftover .*\.tmp-/.test(l)), logs.join('\n'));
  });

  it('builds a busybox-size rootfs and hits the cache (timings)', async () => {
    const root = path.join(tmp, 'busybox');
    busyboxRootfs(root);
    let start = process.hrtime.bigint();
    const img = await ensureImage({ kind: 'dir', path: root }, { cacheDir });
    const buildMs = ms(start);
    assert.equal(img.built, true);
    const hits: number[] = [];
    for (let i = 0; i < 5; i++) {
      start = process.hrtime.bigint();
      assert.equal((await ensureImage({ kind: 'dir', path: root }, { cacheDir })).built, false);
      hits.push(ms(start));
    }
    hits.sort((x, y) => x - y);
    const size = fs.statSync(img.path).size;
    console.log(`      busybox rootfs (${fs.readdirSync(path.join(root, 'bin')).length} entries in bin/, image ${size} bytes): build ${buildMs.toFixed(1)} ms, cache hit median ${hits[2].toFixed(2)} ms`);
  });

  it('creates sparse writable ext4 disks with /upper and /work, quickly after the first', async () => {
    const disks = path.join(tmp, 'disks');
    fs.mkdirSync(disks);
    const times: number[] = [];
    for (let i = 0; i < 4; i++) {
      const start = process.hrtime.bigint();
      await createWritableDisk(path.join(disks, `d${i}.img`), 1024 ** 3, { cacheDir });
      times.push(ms(start));
    }
    const disk = path.join(disks, 'd0.img');
    const st = fs.statSync(disk);
    assert.equal(st.size, 1024 ** 3);
    assert.ok(st.blocks * 512 < 4 * 1024 * 1024, `sparse: ${st.blocks * 512} bytes allocated`);
    run('e2fsck', ['-fn', disk]);
    const listing = run('debugfs', ['-R', 'ls -l /', disk]);
    assert.match(listing, / 40755 .* upper\n/);
    assert.match(listing, / 40755 .* work\n/);
    assert.doesNotMatch(run('dumpe2fs', ['-h', disk]), /has_journal/);
    console.log(`      1 GiB disk: first (mkfs + template) ${times[0].toFixed(1)} ms, then ${times.slice(1).map((t) => t.toFixed(1)).join(', ')} ms`);

    const rejectsWith = async (p: Promise<void>, code: Code, pattern: RegExp): Promise<void> =>
      assert.rejects(p, (err: unknown) => err instanceof RpcError && err.code === code && pattern.test(err.message));
    await rejectsWith(createWritableDisk(disk, 1024 ** 3, { cacheDir }), Code.AlreadyExists, /already exists/);
    await rejectsWith(createWritableDisk('rel.img', 1024 ** 3, { cacheDir }), Code.InvalidArgument, /not an absolute path/);
    await rejectsWith(createWritableDisk(path.join(disks, 'x.img'), 1000, { cacheDir }), Code.InvalidArgument, /size 1000/);
    await rejectsWith(createWritableDisk(path.join(disks, 'x.img'), 4096, { cacheDir }), Code.InvalidArgument, /outside/);
    await rejectsWith(createWritableDisk(path.join(tmp, 'nodir', 'x.img'), 1024 ** 3, { cacheDir }), Code.InvalidArgument, /nodir is not usable/);
    assert.deepEqual(fs.readdirSync(disks).sort(), ['d0.img', 'd1.img', 'd2.img', 'd3.img'], 'no temp file left');

    if (isRoot) {
      // The guest's view: it mounts and the two dirs are empty and writable.
      const mnt = path.join(tmp, 'mnt');
      fs.mkdirSync(mnt);
      run('mount', ['-o', 'loop', '-t', 'ext4', path.join(disks, 'd1.img'), mnt]);
      try {
        assert.deepEqual(fs.readdirSync(path.join(mnt, 'upper')), []);
        fs.writeFileSync(path.join(mnt, 'upper', 'x'), 'y');
      } finally {
        run('umount', [mnt]);
      }
    }
  });
});
