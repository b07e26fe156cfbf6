// Runtime options end to end: `ctr run --runtime-config-path FILE` makes containerd 1.6 hand the
// shim `runtimeoptions.v1.Options{config_path}` (on `start`'s stdin, as CRI does with a
// runtime's `options.ConfigPath`); the daemon reads that TOML file. memory_mib from it reaches
// the guest (/proc/meminfo); a bad file is a clear, fast error naming the file and the key, and
// leaves nothing behind.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describeResult } from './harness/exec';
import { describeConformance } from './harness/suite';
import { skipBecause } from '../test/helpers/skip';

/** A bad config must fail this fast (no VM is booted for it). */
const BAD_CONFIG_BOUND_MS = 15_000;

function memTotalKiB(meminfo: string): number {
  const match = /^MemTotal:\s+(\d+) kB$/m.exec(meminfo);
  if (!match) throw new Error(`no MemTotal in ${JSON.stringify(meminfo.slice(0, 200))}`);
  return Number(match[1]);
}

describeConformance('runtime options (--runtime-config-path)', (test) => {
  let dir = '';
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-rtopts-')); });
  afterEach(() => { fs.rmSync(dir, { recursive: true, force: true }); });

  test('memory_mib and vcpus from the config file reach the guest', 180_000, async (env, ctx) => {
    if (!env.vm) skipBecause(ctx, { notHere: 'ctr sends runc its own options type, not runtimeoptions' });
    const config = path.join(dir, 'smolvm.toml');
    fs.writeFileSync(config, '# per-runtime config, as CRI would pass it\nbackend = "tcg"\nmemory_mib = 448\nvcpus = 2\n');
    const sized = await env.run(env.newId('rtopts'), ['sh', '-c', 'cat /proc/meminfo; grep -c ^processor /proc/cpuinfo'], {
      ctrFlags: ['--runtime-config-path', config], timeoutMs: 120_000,
    });
    assert.equal(sized.exitCode, 0, describeResult(sized));
    const out = sized.stdout.toString();
    const total = memTotalKiB(out);
    // The kernel keeps some for itself: MemTotal is a little under what the VM has.
    assert.ok(total > 384 * 1024 && total <= 448 * 1024, `MemTotal ${total} kB with memory_mib = 448`);
    assert.equal(out.trim().split('\n').pop(), '2', `vcpus = 2: ${out.slice(-100)}`);

    const plain = await env.run(env.newId('rtdefault'), ['cat', '/proc/meminfo'], { timeoutMs: 120_000 });
    assert.equal(plain.exitCode, 0, describeResult(plain));
    assert.ok(memTotalKiB(plain.stdout.toString()) < 384 * 1024, 'without the option the default memory applies');
  });

  test('a bad config file is a clear error naming the file and the key; nothing left', 120_000, async (env, ctx) => {
    if (!env.vm) skipBecause(ctx, { notHere: 'ctr sends runc its own options type, not runtimeoptions' });
    const cases: Array<{ text: string | null; expect: RegExp }> = [
      { text: 'memory_mib = 256\nmemroy_mib = 512\n', expect: /bad\d\.toml: unknown key memroy_mib/ },
      { text: 'vcpus = 0\n', expect: /bad\d\.toml: vcpus must be a positive integer/ },
      { text: 'backend = "xen"\n', expect: /bad\d\.toml: backend must be/ },
      { text: 'memory_mib = "lots\n', expect: /bad\d\.toml:1: unterminated string/ },
      { text: null, expect: /cannot read smolvm config .*bad\d\.toml/ },
    ];
    for (const [i, c] of cases.entries()) {
      const config = path.join(dir, `bad${i}.toml`);
      if (c.text !== null) fs.writeFileSync(config, c.text);
      const startedAt = Date.now();
      const id = env.newId(`rtbad${i}`);
      const result = await env.run(id, ['true'], { ctrFlags: ['--runtime-config-path', config], timeoutMs: 60_000 });
      assert.notEqual(result.exitCode, 0, describeResult(result));
      assert.match(result.stderr.toString(), c.expect, describeResult(result));
      assert.ok(Date.now() - startedAt < BAD_CONFIG_BOUND_MS, `took ${Date.now() - startedAt} ms`);
      // ctr run --rm leaves the container record when the task was never created.
      await env.containerd.ctr(['containers', 'rm', id], { timeoutMs: 30_000 });
    }
  });
});
