// Execs through real ctr: `ctr run -d`, then `ctr task exec --exec-id X ID …` (output, stderr,
// exit code, two at once, a missing binary), `ctr task ps` (the guest's processes, execs
// included), `ctr task kill -a` (every process of the container), exec into a stopped task.
import * as assert from 'node:assert/strict';
import { type PrivateContainerd, lines } from './harness/containerd';
import { describeResult, sleep } from './harness/exec';
import { describeConformance } from './harness/suite';
import { taskStatus, waitForStatus } from './harness/tasks';

/** A missing binary must fail this fast. */
const MISSING_BINARY_BOUND_MS = 15_000;


/** PIDs from `ctr task ps ID` (header line skipped). */
async function taskPids(containerd: PrivateContainerd, id: string): Promise<number[]> {
  const ps = await containerd.ctrChecked(['tasks', 'ps', id], { timeoutMs: 15_000 });
  return lines(ps.stdout).slice(1).map((row) => Number(row.trim().split(/\s+/)[0])).filter((pid) => pid > 0);
}

async function waitForPidCount(containerd: PrivateContainerd, id: string, count: number, boundMs: number): Promise<number[]> {
  const deadline = Date.now() + boundMs;
  let pids: number[] = [];
  while (Date.now() < deadline) {
    pids = await taskPids(containerd, id);
    if (pids.length === count) return pids;
    await sleep(200);
  }
  return pids;
}

describeConformance('ctr task exec', (test) => {
  test('exec: output, stderr apart, exit code; two at once; missing binary; ps; kill -a', 240_000, async (env) => {
    const { containerd } = env;
    const id = env.newId('exec');
    const started = await env.run(id, ['sleep', '600'], { keep: true, ctrFlags: ['-d'], timeoutMs: 60_000 });
    assert.equal(started.exitCode, 0, describeResult(started));
    assert.equal(await waitForStatus(containerd, id, 'RUNNING', 30_000), 'RUNNING');

    const one = await containerd.ctr(
      ['tasks', 'exec', '--exec-id', 'one', '--cwd', '/tmp', id, 'sh', '-c', 'echo "out $(pwd) $(cat /proc/1/cmdline | tr "\\0" " ")"; echo err >&2; exit 3'],
      { timeoutMs: 60_000 },
    );
    assert.equal(one.exitCode, 3, describeResult(one));
    assert.equal(one.stdout.toString(), 'out /tmp sleep 600 \n', `the exec sees the container's pid 1\n${describeResult(one)}`);
    assert.equal(one.stderr.toString(), 'err\n', describeResult(one));

    // Two at once, each with its own output and exit code.
    const [a, b] = await Promise.all(['a', 'b'].map((x, i) =>
      containerd.ctr(['tasks', 'exec', '--exec-id', `par-${x}`, id, 'sh', '-c', `sleep 1; echo from-${x}; exit ${i * 7}`], { timeoutMs: 60_000 })));
    assert.equal(a!.exitCode, 0, describeResult(a!));
    assert.equal(a!.stdout.toString(), 'from-a\n', describeResult(a!));
    assert.equal(b!.exitCode, 7, describeResult(b!));
    assert.equal(b!.stdout.toString(), 'from-b\n', describeResult(b!));

    // A missing binary: a clear error, fast, and nothing left in the container.
    const missingAt = Date.now();
    const missing = await containerd.ctr(['tasks', 'exec', '--exec-id', 'missing', id, '/no/such/binary'], { timeoutMs: 60_000 });
    assert.notEqual(missing.exitCode, 0, describeResult(missing));
    assert.match(missing.stderr.toString(), /no\/such\/binary/, describeResult(missing));
    assert.ok(Date.now() - missingAt < MISSING_BINARY_BOUND_MS, `missing binary took ${Date.now() - missingAt} ms`);

    // ps: the init, plus a detached exec and its child.
    const detached = await containerd.ctr(['tasks', 'exec', '-d', '--exec-id', 'bg', id, 'sh', '-c', 'sleep 600 & wait'], { timeoutMs: 60_000 });
    assert.equal(detached.exitCode, 0, describeResult(detached));
    const pids = await waitForPidCount(containerd, id, 3, 30_000);
    assert.equal(pids.length, 3, `ctr task ps: init + exec + its child, got ${JSON.stringify(pids)}`);

    // kill -a (SIGKILL: the container's init is PID 1 of its namespace and ignores SIGTERM).
    const killed = await containerd.ctr(['tasks', 'kill', '-a', '-s', 'SIGKILL', id], { timeoutMs: 30_000 });
    assert.equal(killed.exitCode, 0, describeResult(killed));
    assert.equal(await waitForStatus(containerd, id, 'STOPPED', 30_000), 'STOPPED');

    const late = await containerd.ctr(['tasks', 'exec', '--exec-id', 'late', id, 'true'], { timeoutMs: 30_000 });
    assert.notEqual(late.exitCode, 0, `exec into a stopped task must fail\n${describeResult(late)}`);

    const removed = await containerd.ctr(['tasks', 'rm', id], { timeoutMs: 30_000 });
    assert.equal(removed.exitCode, 0, describeResult(removed));
    const containerRemoved = await containerd.ctr(['containers', 'rm', id], { timeoutMs: 30_000 });
    assert.equal(containerRemoved.exitCode, 0, describeResult(containerRemoved));
  });

  test('kill -a -s SIGTERM ends the execs but not the init (PID 1 ignores it)', 180_000, async (env) => {
    const { containerd } = env;
    const id = env.newId('killall');
    const started = await env.run(id, ['sleep', '600'], { keep: true, ctrFlags: ['-d'], timeoutMs: 60_000 });
    assert.equal(started.exitCode, 0, describeResult(started));
    const detached = await containerd.ctr(['tasks', 'exec', '-d', '--exec-id', 'bg', id, 'sleep', '600'], { timeoutMs: 60_000 });
    assert.equal(detached.exitCode, 0, describeResult(detached));
    assert.equal((await waitForPidCount(containerd, id, 2, 30_000)).length, 2);
    const term = await containerd.ctr(['tasks', 'kill', '-a', '-s', 'SIGTERM', id], { timeoutMs: 30_000 });
    assert.equal(term.exitCode, 0, describeResult(term));
    assert.equal((await waitForPidCount(containerd, id, 1, 30_000)).length, 1, 'only the init is left');
    assert.equal(await taskStatus(containerd, id), 'RUNNING');
    const killed = await containerd.ctr(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 30_000 });
    assert.equal(killed.exitCode, 0, describeResult(killed));
    assert.equal(await waitForStatus(containerd, id, 'STOPPED', 30_000), 'STOPPED');
    await containerd.ctrChecked(['tasks', 'rm', id], { timeoutMs: 30_000 });
    await containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });
  });
});
