// `ctr run --rm` through the runtime under test: output, exit code, guest kernel, stdin, env and
// cwd, stderr apart from stdout, 1 MiB of output byte-exact, writes to `/`, a missing binary.
import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as os from 'node:os';
import { describeResult } from './harness/exec';
import { IMAGE_PATH_ENV } from './harness/image';
import { describeConformance } from './harness/suite';
import { skipBecause } from '../test/helpers/skip';

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

/** A missing binary must fail this fast (VM boot included). */
const MISSING_BINARY_BOUND_MS = 15_000;

describeConformance('ctr run', (test) => {
  test('prints the command output and exits 0', 60_000, async (env) => {
    const result = await env.run(env.newId('output'), ['echo', 'hello', 'from', 'smolvm']);
    assert.equal(result.exitCode, 0, describeResult(result));
    assert.equal(result.stdout.toString(), 'hello from smolvm\n', describeResult(result));
  });

  test("returns the process's exit code", 90_000, async (env) => {
    const exit42 = await env.run(env.newId('exit42'), ['sh', '-c', 'exit 42']);
    assert.equal(exit42.exitCode, 42, describeResult(exit42));
    const falseResult = await env.run(env.newId('false'), ['false']);
    assert.equal(falseResult.exitCode, 1, describeResult(falseResult));
  });

  test("runs on the guest's own kernel, not the host's", 60_000, async (env, ctx) => {
    if (!env.vm) skipBecause(ctx, { notHere: 'runc shares the host kernel' });
    const result = await env.run(env.newId('uname'), ['uname', '-r']);
    assert.equal(result.exitCode, 0, describeResult(result));
    const guestRelease = result.stdout.toString().trim();
    assert.ok(guestRelease.length > 0, `empty uname -r\n${describeResult(result)}`);
    assert.notEqual(guestRelease, os.release(), 'the guest reports the host kernel release: not in a VM');
  });

  test('feeds stdin to the process (reader that stops by itself)', 60_000, async (env) => {
    // ctr 1.6 never closes the task's stdin at EOF, so the reader must stop on its own.
    const input = Buffer.alloc(64 * 1024);
    for (let i = 0; i < input.length; i++) input[i] = (i * 7 + (i >> 8)) & 0xff;
    const result = await env.run(env.newId('stdin'), ['sh', '-c', `head -c ${input.length} | sha256sum`], { input });
    assert.equal(result.exitCode, 0, describeResult(result));
    assert.equal(result.stdout.toString().split(/\s+/)[0], sha256(input), describeResult(result));
  });

  test('passes --env and --cwd, and keeps the image PATH', 60_000, async (env) => {
    const result = await env.run(
      env.newId('envcwd'),
      ['sh', '-c', 'echo "$SMOLVM_TEST_VAR"; pwd; echo "PATH=$PATH"'],
      { ctrFlags: ['--env', 'SMOLVM_TEST_VAR=value with spaces', '--cwd', '/tmp'] },
    );
    assert.equal(result.exitCode, 0, describeResult(result));
    assert.deepEqual(result.stdout.toString().split('\n'), ['value with spaces', '/tmp', IMAGE_PATH_ENV, '']);
  });

  test('runs in the image working dir (/) by default', 60_000, async (env) => {
    const result = await env.run(env.newId('cwd'), ['pwd']);
    assert.equal(result.exitCode, 0, describeResult(result));
    assert.equal(result.stdout.toString(), '/\n');
  });

  test('keeps stderr apart from stdout', 60_000, async (env) => {
    const result = await env.run(env.newId('stderr'), ['sh', '-c', 'echo to-stdout; echo to-stderr >&2; echo more-stdout']);
    assert.equal(result.exitCode, 0, describeResult(result));
    assert.equal(result.stdout.toString(), 'to-stdout\nmore-stdout\n', describeResult(result));
    assert.match(result.stderr.toString(), /to-stderr/, describeResult(result));
    assert.doesNotMatch(result.stderr.toString(), /stdout/, describeResult(result));
  });

  test('delivers 1 MiB of stdout byte-exact', 120_000, async (env) => {
    const zeros = await env.run(env.newId('mib'), ['dd', 'if=/dev/zero', 'bs=1024', 'count=1024'], { timeoutMs: 90_000 });
    assert.equal(zeros.exitCode, 0, describeResult(zeros, 300));
    assert.equal(zeros.stdout.length, 1024 * 1024, describeResult(zeros, 300));
    assert.equal(sha256(zeros.stdout), sha256(Buffer.alloc(1024 * 1024)));
    assert.match(zeros.stderr.toString(), /1024\+0 records out/, 'dd statistics must arrive on stderr');

    // A stream where order matters: any lost, duplicated or reordered chunk changes the hash.
    const count = 180_000;
    let expected = '';
    for (let i = 1; i <= count; i++) expected += `${i}\n`;
    const seq = await env.run(env.newId('seq'), ['seq', '1', String(count)], { timeoutMs: 90_000 });
    assert.equal(seq.exitCode, 0, describeResult(seq, 300));
    assert.ok(expected.length > 1024 * 1024);
    assert.equal(seq.stdout.length, expected.length, 'seq output length');
    assert.equal(sha256(seq.stdout), sha256(expected), 'seq output differs');
  });

  test('allows writes to /', 60_000, async (env) => {
    const result = await env.run(env.newId('write'), [
      'sh', '-c', 'echo written > /f && cat /f && mkdir -p /newdir/sub && touch /newdir/sub/x && ls /newdir/sub',
    ]);
    assert.equal(result.exitCode, 0, describeResult(result));
    assert.equal(result.stdout.toString(), 'written\nx\n');
  });

  test('fails fast with a clear error for a missing binary', MISSING_BINARY_BOUND_MS + 30_000, async (env) => {
    const missing = '/bin/no-such-binary-smolvm';
    const result = await env.run(env.newId('missing'), [missing], { timeoutMs: MISSING_BINARY_BOUND_MS + 15_000 });
    assert.ok(!result.timedOut, `no answer within the bound\n${describeResult(result)}`);
    assert.notEqual(result.exitCode, 0, describeResult(result));
    assert.ok(
      result.durationMs <= MISSING_BINARY_BOUND_MS,
      `took ${result.durationMs} ms (bound ${MISSING_BINARY_BOUND_MS} ms)\n${describeResult(result)}`,
    );
    const output = result.stdout.toString() + result.stderr.toString();
    assert.ok(output.includes('no-such-binary-smolvm'), `the error must name the binary\n${describeResult(result)}`);
  });
});
