import * as assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Code, RpcError } from '../../shim/src/errdefs';
import { acquireLock, ownerAlive } from '../../shim/src/util/file-lock';

const LOCK_MODULE = path.resolve(__dirname, '../../shim/src/util/file-lock.js');
const IMAGE_MODULE = path.resolve(__dirname, '../../shim/src/image/index.js');

function runNode(script: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['-e', script, '--', ...args], { timeout: 60_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${err.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

/** A pid that certainly belongs to no running process any more. */
function deadPid(): number {
  const child = spawnSync('/bin/sh', ['-c', 'echo $$']);
  return Number(child.stdout.toString().trim());
}

describe('image lock', () => {
  let tmp: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-image-lock-'));
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('is exclusive within a process; a waiter gets it after release; no files remain', async () => {
    const lockPath = path.join(tmp, 'k.lock');
    const first = await acquireLock(lockPath, { timeoutMs: 5000 });
    let secondHeld = false;
    let waited = false;
    const second = acquireLock(lockPath, { timeoutMs: 5000, onWait: () => (waited = true) }).then((l) => {
      secondHeld = true;
      return l;
    });
    // The waiter reports that it waits (however long a loaded machine takes to get there)...
    for (const deadline = Date.now() + 5000; !waited && Date.now() < deadline;) {
      await new Promise((r) => setTimeout(r, 5));
    }
    assert.equal(waited, true);
    // ...and still does not hold the lock while the first holder keeps it.
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(secondHeld, false);
    await first.release();
    const l2 = await second;
    assert.equal(secondHeld, true);
    await l2.release();
    assert.deepEqual(fs.readdirSync(tmp), []);
  });

  it('times out with Unavailable naming the holder', async () => {
    const lockPath = path.join(tmp, 'k.lock');
    const held = await acquireLock(lockPath, { timeoutMs: 1000 });
    const started = Date.now();
    await assert.rejects(acquireLock(lockPath, { timeoutMs: 100 }), (err: unknown) => {
      assert.ok(err instanceof RpcError);
      assert.equal(err.code, Code.Unavailable);
      assert.match(err.message, new RegExp(`held by pid ${process.pid}`));
      return true;
    });
    assert.ok(Date.now() - started < 1000);
    await held.release();
  });

  it('breaks the lock of a dead owner, and of a garbage record', async () => {
    const lockPath = path.join(tmp, 'k.lock');
    const bootId = fs.readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const dead = { bootId, pid: deadPid(), startTime: '1' };
    assert.equal(await ownerAlive(dead), false);
    fs.writeFileSync(lockPath, `smolvm-lock v1\nboot ${bootId}\npid ${dead.pid}\nstart 1\n`);
    const l = await acquireLock(lockPath, { timeoutMs: 1000 });
    assert.equal(l.brokeStale, true);
    await l.release();
    fs.writeFileSync(lockPath, 'garbage');
    const g = await acquireLock(lockPath, { timeoutMs: 1000 });
    await g.release();
    // A record from another boot is stale even when the pid is alive now.
    fs.writeFileSync(lockPath, `smolvm-lock v1\nboot other-boot\npid ${process.pid}\nstart 1\n`);
    const o = await acquireLock(lockPath, { timeoutMs: 1000 });
    await o.release();
    assert.deepEqual(fs.readdirSync(tmp), []);
  });

  it('lets exactly one of several processes hold it at a time', async () => {
    const lockPath = path.join(tmp, 'k.lock');
    const counter = path.join(tmp, 'inside');
    // Each child takes the lock, checks nobody else is inside, stays a while, leaves.
    const script = `
      const fs = require('fs');
      const { acquireLock } = require(${JSON.stringify(LOCK_MODULE)});
      const [lockPath, counter] = process.argv.slice(1);
      (async () => {
        for (let i = 0; i < 5; i++) {
          const l = await acquireLock(lockPath, { timeoutMs: 30000 });
          fs.mkdirSync(counter); // throws EEXIST if another holder is inside
          await new Promise((r) => setTimeout(r, 10));
          fs.rmdirSync(counter);
          await l.release();
        }
        console.log('ok');
      })().catch((e) => { console.error(e); process.exit(1); });`;
    const outputs = await Promise.all([1, 2, 3].map(() => runNode(script, [lockPath, counter])));
    assert.deepEqual(outputs.map((o) => o.trim()), ['ok', 'ok', 'ok']);
  });

  it('two processes ensuring the same image build it once', async function () {
    this.timeout(60_000);
    const rootfs = path.join(tmp, 'rootfs');
    fs.mkdirSync(path.join(rootfs, 'bin'), { recursive: true });
    for (let i = 0; i < 200; i++) fs.writeFileSync(path.join(rootfs, 'bin', `f${i}`), `file ${i}\n`.repeat(100));
    const cacheDir = path.join(tmp, 'cache');
    const script = `
      const { ensureImage } = require(${JSON.stringify(IMAGE_MODULE)});
      const [rootfs, cacheDir] = process.argv.slice(1);
      ensureImage({ kind: 'dir', path: rootfs }, { cacheDir }).then(
        (img) => console.log(JSON.stringify(img)),
        (e) => { console.error(e); process.exit(1); });`;
    const results = (await Promise.all([1, 2, 3].map(() => runNode(script, [rootfs, cacheDir])))).map(
      (o) => JSON.parse(o) as { path: string; key: string; built: boolean },
    );
    assert.equal(results.filter((r) => r.built).length, 1, JSON.stringify(results));
    assert.equal(new Set(results.map((r) => r.path)).size, 1);
    assert.deepEqual(fs.readdirSync(path.join(cacheDir, 'images')), [`${results[0].key}.erofs`]);
  });
});
