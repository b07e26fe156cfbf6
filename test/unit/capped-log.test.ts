// The capped logs a VM's console and its VMM's output go to (vm/capped-log.ts): never
// more than the cap on disk, the newest output kept, the panic line found across a rotation,
// watches that see text whatever the rotation does, and an end that is noticed.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { kernelPanicLine } from '../../shim/src/vm/backend';
import { CappedLog, logBytes, logsDrained, readLogTail, ROTATED_SUFFIX, tailLog } from '../../shim/src/vm/capped-log';

describe('capped log (console and VMM logs on the host)', () => {
  let dir: string;
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-capped-log-')); });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const size = (file: string): number => fs.statSync(file, { throwIfNoEntry: false })?.size ?? 0;

  it('keeps at most the cap, in two files of half of it each, the newest output last', () => {
    const file = path.join(dir, 'console.log');
    const log = new CappedLog(file, 1000);
    for (let i = 0; i < 500; i++) log.write(Buffer.from(`line ${String(i).padStart(4, '0')}\n`));
    log.close();
    assert.ok(size(file) <= 500 && size(file + ROTATED_SUFFIX) <= 500, `${size(file)} + ${size(file + ROTATED_SUFFIX)}`);
    assert.ok(logBytes(file) <= 1000 && logBytes(file) > 500, `${logBytes(file)} bytes on disk`);
    const tail = readLogTail(file);
    assert.ok(tail.endsWith('line 0499\n'), tail.slice(-40));
    // The two files read as one: consecutive lines across the rotation.
    const numbers = tail.split('\n').filter((l) => /^line \d{4}$/.test(l)).map((l) => Number(l.slice(5)));
    for (let i = 1; i < numbers.length; i++) assert.equal(numbers[i], numbers[i - 1]! + 1);
    assert.equal(tailLog(file, 2), 'line 0498\nline 0499');
  });

  it('keeps only the last half-cap bytes of a chunk larger than that', () => {
    const file = path.join(dir, 'console.log');
    const log = new CappedLog(file, 100);
    log.write(Buffer.from('a'.repeat(1000) + 'b'.repeat(50)));
    log.close();
    assert.equal(fs.readFileSync(file, 'utf8'), 'b'.repeat(50));
    assert.ok(logBytes(file) <= 100);
  });

  it('finds a kernel panic line cut in two by a rotation', () => {
    const file = path.join(dir, 'console.log');
    const log = new CappedLog(file, 200);
    log.write(Buffer.from('x'.repeat(60) + '\n[    1.0] Kernel panic - not'));
    log.write(Buffer.from(' syncing: Attempted to kill init!\n' + 'y'.repeat(40)));
    log.close();
    assert.ok(fs.existsSync(file + ROTATED_SUFFIX), 'rotated');
    assert.equal(kernelPanicLine(readLogTail(file)), 'Kernel panic - not syncing: Attempted to kill init!');
  });

  it('starts empty: a leftover rotated file of an earlier log is removed', () => {
    const file = path.join(dir, 'console.log');
    fs.writeFileSync(file, 'old');
    fs.writeFileSync(file + ROTATED_SUFFIX, 'older');
    new CappedLog(file, 100).close();
    assert.equal(readLogTail(file), '');
  });

  it('reads its sources to their end; watches see text split across reads and rotations', async () => {
    const file = path.join(dir, 'console.log');
    const log = new CappedLog(file, 64);
    const a = new PassThrough();
    const b = new PassThrough();
    log.attach(a);
    log.attach(b);
    const seen = log.waitFor('host disconnected', 5_000);
    const never = log.waitFor('never printed', 5_000);
    b.write('... from b ...');
    a.write('x'.repeat(40) + 'host disc');
    a.write('onnected\n' + 'z'.repeat(40));
    assert.equal(await seen, true);
    a.end();
    b.end();
    await log.drained;
    assert.equal(await never, false, 'a watch ends with the sources');
    assert.equal(await log.waitFor('anything', 5_000), false);
    assert.ok(logBytes(file) <= 64);
  });

  it('logsDrained stops waiting after its bound and closes the log', async () => {
    const file = path.join(dir, 'vmm.log');
    const log = new CappedLog(file, 1000);
    const source = new PassThrough();
    log.attach(source);
    const started = Date.now();
    await logsDrained([log], 50);
    assert.ok(Date.now() - started < 2_000);
    source.write('after the close\n');
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(fs.readFileSync(file, 'utf8'), '');
    source.end();
  });

  it('refuses a cap that cannot hold two files', () => {
    assert.throws(() => new CappedLog(path.join(dir, 'x.log'), 1), /cap 1 is not a byte count of at least 2/);
  });
});
