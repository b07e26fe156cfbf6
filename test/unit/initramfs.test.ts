import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { agentBinaryPath, ensureInitramfs } from '../../rootfs-builder/initramfs/build';

describe('initramfs', () => {
  let cacheDir: string;

  beforeEach(() => {
    cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-initramfs-'));
  });
  afterEach(() => {
    fs.rmSync(cacheDir, { recursive: true, force: true });
  });

  it('holds /init (the agent binary, executable) and /dev/console (char 5:1)', async () => {
    const artifact = await ensureInitramfs({ cacheDir });
    const listing = execFileSync('cpio', ['-itv', '--quiet', '-F', artifact.path], { encoding: 'utf8' });
    const lines = listing.trim().split('\n');
    const names = lines.map((l) => l.split(/\s+/).pop());
    assert.deepEqual(names, ['dev', 'dev/console', 'init']);
    const consoleLine = lines.find((l) => l.endsWith(' dev/console'));
    assert.match(consoleLine ?? '', /^crw-------\s+\S+\s+root\s+root\s+5,\s+1 /);
    const initLine = lines.find((l) => l.endsWith(' init'));
    assert.match(initLine ?? '', /^-rwxr-xr-x /);

    const extracted = execFileSync('cpio', ['-i', '--quiet', '--to-stdout', 'init'], {
      input: fs.readFileSync(artifact.path),
      maxBuffer: 64 << 20,
    });
    assert.ok(extracted.equals(fs.readFileSync(agentBinaryPath())), '/init must be smolvm-init byte for byte');
  });

  it('is content-addressed, cached, and leaves no temporary files', async () => {
    const first = await ensureInitramfs({ cacheDir });
    const bytes = fs.readFileSync(first.path);
    assert.equal(first.key, crypto.createHash('sha256').update(bytes).digest('hex'));
    assert.equal(first.path, path.join(cacheDir, 'initramfs', `${first.key}.cpio`));
    const mtime = fs.statSync(first.path).mtimeMs;

    const second = await ensureInitramfs({ cacheDir });
    assert.deepEqual(second, first);
    assert.equal(fs.statSync(second.path).mtimeMs, mtime, 'a cache hit must not rewrite the file');
    assert.deepEqual(fs.readdirSync(path.join(cacheDir, 'initramfs')), [`${first.key}.cpio`]);
  });

  it('makes the archive again when its cached file went away (the agent seen before or not)', async () => {
    const first = await ensureInitramfs({ cacheDir });
    fs.rmSync(first.path);
    const again = await ensureInitramfs({ cacheDir });
    assert.deepEqual(again, first);
    assert.ok(fs.existsSync(again.path), 'remembering the agent binary never skips a missing archive');
    fs.truncateSync(again.path, 10);
    await ensureInitramfs({ cacheDir });
    assert.equal(crypto.createHash('sha256').update(fs.readFileSync(again.path)).digest('hex'), first.key, 'a truncated archive is replaced');
  });

  it('builds once when called in parallel', async () => {
    const results = await Promise.all([1, 2, 3, 4].map(() => ensureInitramfs({ cacheDir })));
    for (const r of results) assert.deepEqual(r, results[0]);
    assert.deepEqual(fs.readdirSync(path.join(cacheDir, 'initramfs')), [`${results[0].key}.cpio`]);
  });

  it('rejects an empty cacheDir', async () => {
    await assert.rejects(ensureInitramfs({ cacheDir: '' }), /cacheDir is empty/);
  });
});
