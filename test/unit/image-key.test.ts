import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { computeImageKey } from '../../shim/src/image/key';
import { resolveSource } from '../../shim/src/image/source';

const BUILDER = 'mkfs.erofs@1:2:3 --quiet';

describe('image key', () => {
  let tmp: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-image-key-'));
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const layer = (name: string, files: Record<string, string> = { f: name }): string => {
    const dir = path.join(tmp, name, 'fs');
    fs.mkdirSync(dir, { recursive: true });
    for (const [file, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, file), content);
    return dir;
  };
  const overlayKey = async (lowers: string[], builder = BUILDER): Promise<string> =>
    computeImageKey(
      await resolveSource({ kind: 'mounts', mounts: [{ type: 'overlay', source: 'overlay', target: '', options: [`lowerdir=${lowers.join(':')}`] }] }),
      builder,
    );
  const dirKey = async (dir: string): Promise<string> => computeImageKey(await resolveSource({ kind: 'dir', path: dir }), BUILDER);

  it('is stable for the same layers, and 64 hex', async () => {
    const l1 = layer('1');
    const l2 = layer('2');
    const k = await overlayKey([l2, l1]);
    assert.match(k, /^[0-9a-f]{64}$/);
    assert.equal(await overlayKey([l2, l1]), k);
  });

  it('changes with layer order and with the builder', async () => {
    const l1 = layer('1');
    const l2 = layer('2');
    const k = await overlayKey([l2, l1]);
    assert.notEqual(await overlayKey([l1, l2]), k);
    assert.notEqual(await overlayKey([l2, l1], 'mkfs.erofs@1:2:4 --quiet'), k);
  });

  it('changes when a snapshot id is reused for a different layer (same path, new directory)', async () => {
    const l1 = layer('1');
    const l2 = layer('2');
    const before = await overlayKey([l2, l1]);
    fs.rmSync(path.join(tmp, '2'), { recursive: true });
    // Hold on to an inode so the new dir cannot reuse the old one's number by chance alone.
    layer('2', { f: '2' });
    assert.notEqual(await overlayKey([l2, l1]), before);
  });

  it('does not walk committed layers (they are immutable): one stat per layer', async () => {
    const l1 = layer('1');
    const l2 = layer('2');
    const before = await overlayKey([l2, l1]);
    fs.writeFileSync(path.join(l1, 'f'), 'changed in place');
    assert.equal(await overlayKey([l2, l1]), before);
  });

  it('covers the whole tree of a plain directory', async () => {
    const root = path.join(tmp, 'rootfs');
    fs.mkdirSync(path.join(root, 'etc', 'deep'), { recursive: true });
    fs.writeFileSync(path.join(root, 'etc', 'deep', 'conf'), 'a');
    fs.symlinkSync('/etc/deep/conf', path.join(root, 'link'));
    let key = await dirKey(root);
    assert.equal(await dirKey(root), key, 'stable');

    const expectChange = async (what: string, change: () => void): Promise<void> => {
      change();
      const next = await dirKey(root);
      assert.notEqual(next, key, `${what} must change the key`);
      key = next;
    };
    await expectChange('a content write', () => fs.writeFileSync(path.join(root, 'etc', 'deep', 'conf'), 'b'));
    await expectChange('a write keeping size and mtime', () => {
      const file = path.join(root, 'etc', 'deep', 'conf');
      const st = fs.statSync(file);
      fs.writeFileSync(file, 'c');
      fs.utimesSync(file, st.atime, st.mtime);
    });
    await expectChange('a chmod', () => fs.chmodSync(path.join(root, 'etc', 'deep', 'conf'), 0o600));
    await expectChange('a new file', () => fs.writeFileSync(path.join(root, 'etc', 'new'), ''));
    await expectChange('a rename', () => fs.renameSync(path.join(root, 'etc', 'new'), path.join(root, 'etc', 'new2')));
    await expectChange('a new symlink target', () => {
      fs.unlinkSync(path.join(root, 'link'));
      fs.symlinkSync('/elsewhere', path.join(root, 'link'));
    });
    await expectChange('a removal', () => fs.rmSync(path.join(root, 'etc', 'deep'), { recursive: true }));
  });
});
