// stdio URIs through real ctr: `--log-uri file:///…` (parents created, appended, 0644, stdout
// and stderr in the one file, byte-exact) and `--log-uri binary:///…?k=v` (a logger script gets
// the pairs as args, CONTAINER_ID/CONTAINER_NAMESPACE, stdout on fd 3 and stderr on fd 4, fd 5
// to close when ready; it is gone once the task is deleted), for `ctr run` and `ctr task exec`;
// an unsupported scheme is a clear error that leaves nothing behind.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describeResult } from './harness/exec';
import { describeConformance } from './harness/suite';
import { waitForStatus } from './harness/tasks';
import { waitPidGone } from './harness/host';

/** `seq 1 N` as the guest prints it. */
const seqOutput = (n: number): string => Array.from({ length: n }, (_, i) => `${i + 1}\n`).join('');



/**
 * A logging binary as containerd documents it: records its args, env and pid, closes fd 5 once
 * ready, copies fd 3 and fd 4 into files. (containerd gives it no PATH: dash's default applies.)
 */
function writeLogger(dir: string): string {
  const file = path.join(dir, 'logger.sh');
  fs.writeFileSync(file, [
    '#!/bin/sh',
    'out="$(dirname "$0")/$CONTAINER_ID"',
    'mkdir -p "$out"',
    'echo $$ > "$out/pid"',
    'printf "%s\\n" "$@" > "$out/args"',
    'echo "$CONTAINER_ID $CONTAINER_NAMESPACE" > "$out/env"',
    // Ready: close fd 5 first, so the copies below do not inherit (and hold) it.
    'exec 5>&-',
    'cat <&3 > "$out/stdout" &',
    'cat <&4 > "$out/stderr" &',
    'exec 3<&- 4<&-',
    'wait',
    'echo done > "$out/finished"',
    '',
  ].join('\n'), { mode: 0o755 });
  return file;
}

describeConformance('stdio URIs (--log-uri)', (test) => {
  let dir = '';
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-logs-')); });
  afterEach(() => { fs.rmSync(dir, { recursive: true, force: true }); });

  test('file://: parents made, appended, 0644, stdout and stderr in one file, byte-exact', 120_000, async (env) => {
    const log = path.join(dir, 'a', 'b', 'out.log');
    const count = 40_000; // ~230 KB: many guest frames, flow control included
    const run = await env.run(env.newId('file'), ['sh', '-c', `seq 1 ${count}; sleep 1; echo to-stderr >&2; exit 5`], {
      ctrFlags: ['--log-uri', `file://${log}`],
    });
    assert.equal(run.exitCode, 5, describeResult(run));
    assert.equal(run.stdout.length + run.stderr.length, 0, `output went to ctr, not to the log\n${describeResult(run)}`);
    const content = fs.readFileSync(log, 'utf8');
    assert.equal(content, `${seqOutput(count)}to-stderr\n`, `log content differs (${content.length} bytes)`);
    assert.equal(fs.statSync(log).mode & 0o777, 0o644);
    assert.ok(fs.statSync(path.join(dir, 'a')).isDirectory());

    // A second container appends to the same file.
    const second = await env.run(env.newId('file2'), ['echo', 'second'], { ctrFlags: ['--log-uri', `file://${log}`] });
    assert.equal(second.exitCode, 0, describeResult(second));
    assert.equal(fs.readFileSync(log, 'utf8'), `${seqOutput(count)}to-stderr\nsecond\n`);
  });

  test('binary://: args, env, fd 3/4 byte-exact, ready on fd 5, logger gone after delete', 120_000, async (env) => {
    const logger = writeLogger(dir);
    const id = env.newId('binary');
    const run = await env.run(id, ['sh', '-c', 'seq 1 20000; echo oops >&2; printf "no newline"'], {
      ctrFlags: ['--log-uri', `binary://${logger}?mode=test&level=debug%20x`],
    });
    assert.equal(run.exitCode, 0, describeResult(run));
    const out = path.join(dir, id);
    const pid = Number(fs.readFileSync(path.join(out, 'pid'), 'utf8'));
    // ctr run --rm deleted the task: the logger had its inputs closed and is gone.
    assert.ok(await waitPidGone(pid, 15_000), `logger ${pid} still running after the task was deleted`);
    assert.equal(fs.readFileSync(path.join(out, 'stdout'), 'utf8'), `${seqOutput(20000)}no newline`);
    assert.equal(fs.readFileSync(path.join(out, 'stderr'), 'utf8'), 'oops\n');
    assert.deepEqual(fs.readFileSync(path.join(out, 'args'), 'utf8').split('\n').slice(0, -1).sort(), ['debug x', 'level', 'mode', 'test']);
    assert.equal(fs.readFileSync(path.join(out, 'env'), 'utf8'), `${id} ${env.containerd.namespace}\n`);
    // runc's shim sends SIGTERM at once; we first let the logger drain and finish on its own.
    if (env.vm) assert.equal(fs.readFileSync(path.join(out, 'finished'), 'utf8'), 'done\n', 'the logger saw EOF and finished by itself');
  });

  test('exec with --log-uri file:// and binary://; the task keeps its own', 180_000, async (env) => {
    const { containerd } = env;
    const logger = writeLogger(dir);
    const id = env.newId('execlog');
    const initLog = path.join(dir, 'init.log');
    const started = await env.run(id, ['sh', '-c', 'echo init-started; sleep 600'], {
      keep: true, ctrFlags: ['-d', '--log-uri', `file://${initLog}`],
    });
    assert.equal(started.exitCode, 0, describeResult(started));
    assert.equal(await waitForStatus(containerd, id, 'RUNNING', 30_000), 'RUNNING');

    const execLog = path.join(dir, 'exec.log');
    const fileExec = await containerd.ctr(['tasks', 'exec', '--exec-id', 'f1', '--log-uri', `file://${execLog}`, id, 'sh', '-c', 'echo from-exec; echo err-exec >&2; exit 4'], { timeoutMs: 60_000 });
    assert.equal(fileExec.exitCode, 4, describeResult(fileExec));
    const execContent = fs.readFileSync(execLog, 'utf8');
    assert.ok(execContent === 'from-exec\nerr-exec\n' || execContent === 'err-exec\nfrom-exec\n', `exec log: ${JSON.stringify(execContent)}`);

    const binExec = await containerd.ctr(['tasks', 'exec', '--exec-id', 'b1', '--log-uri', `binary://${logger}?exec=b1`, id, 'sh', '-c', 'seq 1 5000'], { timeoutMs: 60_000 });
    assert.equal(binExec.exitCode, 0, describeResult(binExec));
    const out = path.join(dir, 'b1'); // for an exec, CONTAINER_ID is the exec id (as runc's shim)
    const pid = Number(fs.readFileSync(path.join(out, 'pid'), 'utf8'));
    assert.ok(await waitPidGone(pid, 15_000), `exec logger ${pid} still running after the exec was deleted`);
    assert.equal(fs.readFileSync(path.join(out, 'stdout'), 'utf8'), seqOutput(5000));
    assert.deepEqual(fs.readFileSync(path.join(out, 'args'), 'utf8'), 'exec\nb1\n');

    assert.equal(fs.readFileSync(initLog, 'utf8'), 'init-started\n');
    await containerd.ctrChecked(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 30_000 });
    assert.equal(await waitForStatus(containerd, id, 'STOPPED', 30_000), 'STOPPED');
    await containerd.ctr(['tasks', 'rm', id], { timeoutMs: 30_000 });
    await containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });
  });

  test('an unsupported scheme or a missing logger is a clear error, nothing left behind', 120_000, async (env) => {
    const bad = await env.run(env.newId('badscheme'), ['true'], { ctrFlags: ['--log-uri', 'tcp://127.0.0.1:9/x'], timeoutMs: 60_000 });
    assert.notEqual(bad.exitCode, 0, describeResult(bad));
    assert.match(bad.stderr.toString(), /tcp/, describeResult(bad));
    const missing = path.join(dir, 'no-such-logger');
    const absent = await env.run(env.newId('nologger'), ['true'], { ctrFlags: ['--log-uri', `binary://${missing}`], timeoutMs: 60_000 });
    assert.notEqual(absent.exitCode, 0, describeResult(absent));
    assert.match(absent.stderr.toString(), /no-such-logger/, describeResult(absent));
    // ctr run --rm does not remove a container whose task never got created.
    await env.containerd.removeAllContainers();
  });
});
