import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Code, RpcError } from '../../shim/src/errdefs';
import type { Mount } from '../../shim/src/gen/containerd/types/mount';
import { overlayMountData } from '../../shim/src/image/erofs';
import { resolveSource, splitLowerdir } from '../../shim/src/image/source';
import { findTool } from '../../shim/src/image/tools';

const mount = (type: string, source: string, options: string[]): Mount => ({ type, source, target: '', options });

async function rejectsInvalid(p: Promise<unknown>, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof RpcError, `expected RpcError, got ${String(err)}`);
    assert.equal(err.code, Code.InvalidArgument);
    assert.match(err.message, pattern);
    return true;
  });
}

describe('image source', () => {
  let tmp: string;
  let a: string;
  let b: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-image-source-'));
    a = path.join(tmp, 'a');
    b = path.join(tmp, 'b');
    fs.mkdirSync(a);
    fs.mkdirSync(b);
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('takes a ro bind as one immutable layer and a rw bind as mutable', async () => {
    const ro = await resolveSource({ kind: 'mounts', mounts: [mount('bind', a, ['ro', 'rbind'])] });
    assert.deepEqual(ro.layers, [a]);
    assert.equal(ro.mutable, false);
    const rw = await resolveSource({ kind: 'mounts', mounts: [mount('bind', a, ['rw', 'rbind'])] });
    assert.equal(rw.mutable, true);
  });

  it('takes overlay lowerdirs top first, with an empty upperdir and extra options', async () => {
    const upper = path.join(tmp, 'upper');
    fs.mkdirSync(upper);
    const r = await resolveSource({
      kind: 'mounts',
      mounts: [mount('overlay', 'overlay', ['index=off', 'userxattr', `workdir=${tmp}/work`, `upperdir=${upper}`, `lowerdir=${a}:${b}`])],
    });
    assert.deepEqual(r.layers, [a, b]);
    assert.equal(r.mutable, false);
    assert.equal(r.userxattr, true);
  });

  it('takes a plain directory as mutable', async () => {
    const r = await resolveSource({ kind: 'dir', path: a });
    assert.deepEqual(r.layers, [a]);
    assert.equal(r.mutable, true);
  });

  it('rejects bad mounts with InvalidArgument naming the mount', async () => {
    await rejectsInvalid(resolveSource({ kind: 'mounts', mounts: [] }), /no rootfs mounts/);
    await rejectsInvalid(
      resolveSource({ kind: 'mounts', mounts: [mount('bind', a, ['ro']), mount('bind', b, ['ro'])] }),
      /exactly one rootfs mount, got 2/,
    );
    await rejectsInvalid(
      resolveSource({ kind: 'mounts', mounts: [mount('tmpfs', 'tmpfs', [])] }),
      /type: "tmpfs".*unsupported mount type/,
    );
    await rejectsInvalid(
      resolveSource({ kind: 'mounts', mounts: [mount('bind', path.join(tmp, 'missing'), ['ro'])] }),
      /source .*missing is not accessible \(ENOENT\)/,
    );
    await rejectsInvalid(
      resolveSource({ kind: 'mounts', mounts: [mount('bind', 'relative/dir', ['ro'])] }),
      /"relative\/dir" is not an absolute path/,
    );
    await rejectsInvalid(
      resolveSource({ kind: 'mounts', mounts: [mount('overlay', 'overlay', [`lowerdir=${a}:rel`])] }),
      /lowerdir "rel" is not an absolute path/,
    );
    await rejectsInvalid(
      resolveSource({ kind: 'mounts', mounts: [mount('overlay', 'overlay', [`upperdir=${a}`])] }),
      /no lowerdir option/,
    );
    fs.writeFileSync(path.join(a, 'file'), 'x');
    await rejectsInvalid(
      resolveSource({ kind: 'mounts', mounts: [mount('overlay', 'overlay', [`upperdir=${a}`, `lowerdir=${b}`])] }),
      /upperdir .* is not empty/,
    );
    await rejectsInvalid(
      resolveSource({ kind: 'mounts', mounts: [mount('overlay', 'overlay', [`lowerdir=${path.join(a, 'file')}`])] }),
      /is not a directory/,
    );
  });

  it('rejects a bad directory source', async () => {
    await rejectsInvalid(resolveSource({ kind: 'dir', path: 'rootfs' }), /rootfs directory: path "rootfs" is not an absolute path/);
    await rejectsInvalid(resolveSource({ kind: 'dir', path: path.join(tmp, 'nope') }), /not accessible \(ENOENT\)/);
  });

  it('splits lowerdir honouring \\: escapes', () => {
    assert.deepEqual(splitLowerdir('/a:/b:/c'), ['/a', '/b', '/c']);
    assert.deepEqual(splitLowerdir('/a\\:x:/b'), ['/a:x', '/b']);
  });

  it('makes lowerdirs relative to their common parent when they do not fit in a page', () => {
    const base = '/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots';
    const layers = Array.from({ length: 120 }, (_, i) => `${base}/${1000 + i}/fs`);
    const { data, cwd } = overlayMountData({ layers, mutable: false, userxattr: false, description: 'test' });
    assert.equal(cwd, base);
    assert.ok(data.startsWith('ro,lowerdir=1000/fs:1001/fs:'));
    assert.ok(data.length < 4096);
    const short = overlayMountData({ layers: ['/x/1', '/x/2'], mutable: false, userxattr: true, description: 't' });
    assert.deepEqual(short, { data: 'ro,lowerdir=/x/1:/x/2,userxattr', cwd: '/' });
    assert.throws(
      () => overlayMountData({ layers: ['/x,y', '/z'], mutable: false, userxattr: false, description: 't' }),
      /cannot be merged/,
    );
  });

  it('names the Debian package of a missing tool', async () => {
    await assert.rejects(findTool('mkfs.erofs', 'erofs-utils', [tmp]), (err: unknown) => {
      assert.ok(err instanceof RpcError);
      assert.equal(err.code, Code.FailedPrecondition);
      assert.match(err.message, /mkfs\.erofs not found.*install the Debian package erofs-utils/);
      return true;
    });
  });
});
