// Builds and runs the native VMM's virtio device tests (native-vmm/tests/virtio: transport,
// virtqueues, blk/rng/console/vsock, hostile guests) so they run with the rest of CI: once as
// a plain build and once under AddressSanitizer + UBSan, which is what proves that hostile
// rings never make the VMM touch memory outside guest RAM.
import * as assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import * as path from 'node:path';

const repoRoot = path.resolve(__dirname, '..', '..', '..');
const testDir = path.join(repoRoot, 'native-vmm', 'tests', 'virtio');

interface RunResult {
  code: number;
  output: string;
}

function runMake(target: string): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    // -j2: the build machines are shared; never more than two compile jobs.
    execFile('make', ['-j2', '-C', testDir, target], { maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const output = `${stdout}${stderr}`;
        if (error === null) {
          resolve({ code: 0, output });
        } else if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
          reject(new Error('make is not installed (Debian packages: make g++)'));
        } else {
          resolve({ code: typeof error.code === 'number' ? error.code : 1, output });
        }
      });
  });
}

function checkRun(result: RunResult, variant: string): void {
  const summary = /(\d+) passed, (\d+) failed/.exec(result.output);
  const failures = result.output.split('\n').filter((line) => /^FAIL |^\s+\S+:\d+: /.test(line));
  const tail = result.output.split('\n').slice(-40).join('\n');
  assert.ok(summary !== null, `virtio tests (${variant}) did not run to the end:\n${tail}`);
  assert.equal(summary[2], '0', `virtio tests (${variant}) failed:\n${failures.join('\n')}`);
  assert.equal(result.code, 0, `virtio tests (${variant}) exited ${result.code}:\n${tail}`);
  assert.ok(Number(summary[1]) > 0, `virtio tests (${variant}) ran no test`);
}

describe('native VMM virtio devices (C++)', function () {
  // A cold build compiles every device twice (plain, sanitized) on a shared 2-core machine.
  this.timeout(15 * 60 * 1000);

  it('pass as a plain build', async () => {
    checkRun(await runMake('run-plain'), 'plain');
  });

  it('pass under -fsanitize=address,undefined with guard pages around guest RAM', async () => {
    checkRun(await runMake('run-asan'), 'asan');
  });
});
