// Guest cgroups through real containerd 1.6: `ctr task metrics` (io.containerd.cgroups.v2.Metrics
// from the container's guest cgroup), `--memory-limit` enforced in the guest and sizing the VM,
// Update (containerd's Tasks/Update: ctr 1.6 has no `task update`) changing what the
// container's own /sys/fs/cgroup says, bad Update input refused clearly, and an OOM kill
// publishing /tasks/oom before /tasks/exit (and on its own for a child the OOM killer ended).
import * as assert from 'node:assert/strict';
import { EventWatcher } from './harness/events';
import { describeResult, sleep } from './harness/exec';
import { describeConformance, type ConformanceEnv } from './harness/suite';
import { waitForStatus } from './harness/tasks';
import { updateTask } from './harness/tasks-api';

const MiB = 1024 * 1024;
const GRPC_INVALID_ARGUMENT = 3;
const GRPC_FAILED_PRECONDITION = 9;
/** A shell that doubles a string until the OOM killer ends it. */
const MEMORY_HOG = 'x=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa; while :; do x=$x$x; done';

/** `ctr task metrics ID` as a map of METRIC → VALUE. */
async function metrics(env: ConformanceEnv, id: string): Promise<Map<string, string>> {
  const out = await env.containerd.ctrChecked(['tasks', 'metrics', id], { timeoutMs: 30_000 });
  const table = new Map<string, string>();
  for (const line of out.stdout.toString().split('\n')) {
    const [name, value] = line.trim().split(/\s+/);
    if (name && value !== undefined) table.set(name, value);
  }
  return table;
}

/** `ctr task exec` of a shell line in the container; its stdout, trimmed. */
async function sh(env: ConformanceEnv, id: string, execId: string, line: string): Promise<string> {
  const res = await env.containerd.ctr(['tasks', 'exec', '--exec-id', execId, id, 'sh', '-c', line], { timeoutMs: 60_000 });
  assert.equal(res.exitCode, 0, describeResult(res));
  return res.stdout.toString().trim();
}

async function stopAndRemove(env: ConformanceEnv, id: string): Promise<void> {
  await env.containerd.ctr(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 30_000 });
  assert.equal(await waitForStatus(env.containerd, id, 'STOPPED', 30_000), 'STOPPED');
  await env.containerd.ctrChecked(['tasks', 'rm', id], { timeoutMs: 30_000 });
  await env.containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });
}

describeConformance('guest cgroups: metrics, update, memory limits, OOM', (test) => {
  test('ctr task metrics shows the memory usage and limit and the pids; the limit sizes the VM', 240_000, async (env) => {
    const id = env.newId('metrics');
    const limit = 300 * MiB; // above the default 256 MiB VM: the VM must grow to hold it
    const started = await env.run(id, ['sleep', '600'], { keep: true, ctrFlags: ['-d', '--memory-limit', String(limit)], timeoutMs: 90_000 });
    assert.equal(started.exitCode, 0, describeResult(started));
    assert.equal(await waitForStatus(env.containerd, id, 'RUNNING', 30_000), 'RUNNING');

    const m = await metrics(env, id);
    assert.equal(m.get('memory.usage_limit'), String(limit), `metrics: ${JSON.stringify([...m])}`);
    assert.ok(Number(m.get('memory.usage')) > 0, `memory.usage: ${m.get('memory.usage')}`);
    assert.ok(Number(m.get('pids.current')) >= 1, `pids.current: ${m.get('pids.current')}`);
    assert.ok(Number(m.get('cpu.usage_usec')) > 0, `cpu.usage_usec: ${m.get('cpu.usage_usec')}`);

    // The container sees its own cgroup as /sys/fs/cgroup, with the limit; the VM holds it.
    assert.equal(await sh(env, id, 'max', 'cat /sys/fs/cgroup/memory.max'), String(limit));
    assert.equal(await sh(env, id, 'cg', 'cat /proc/self/cgroup'), '0::/');
    const memTotalKiB = Number((await sh(env, id, 'mem', "grep MemTotal /proc/meminfo")).split(/\s+/)[1]);
    assert.ok(memTotalKiB * 1024 > limit, `the VM has ${memTotalKiB} KiB, less than the ${limit}-byte limit`);
    // An exec is in the container's cgroup too: pids.current counts it.
    assert.ok(Number(await sh(env, id, 'pids', 'cat /sys/fs/cgroup/pids.current')) >= 2);
    await stopAndRemove(env, id);
  });

  test('Update changes memory.max, cpu.max and pids.max in the guest; bad input is a clear error', 240_000, async (env) => {
    const id = env.newId('update');
    const started = await env.run(id, ['sleep', '600'], { keep: true, ctrFlags: ['-d', '--memory-limit', String(128 * MiB)], timeoutMs: 90_000 });
    assert.equal(started.exitCode, 0, describeResult(started));
    assert.equal(await waitForStatus(env.containerd, id, 'RUNNING', 30_000), 'RUNNING');
    assert.equal(await sh(env, id, 'before', 'cat /sys/fs/cgroup/cpu.max'), 'max 100000');

    const failure = await updateTask(env.containerd, id, { memory: { limit: 100 * MiB }, cpu: { quota: 50_000, period: 100_000 }, pids: { limit: 20 } });
    assert.equal(failure, null, `update failed: ${JSON.stringify(failure)}`);
    assert.equal(await sh(env, id, 'mem', 'cat /sys/fs/cgroup/memory.max'), String(100 * MiB));
    assert.equal(await sh(env, id, 'cpu', 'cat /sys/fs/cgroup/cpu.max'), '50000 100000');
    assert.equal(await sh(env, id, 'pids', 'cat /sys/fs/cgroup/pids.max'), '20');
    assert.equal((await metrics(env, id)).get('memory.usage_limit'), String(100 * MiB));
    // Unset fields keep their values.
    assert.equal(await updateTask(env.containerd, id, { cpu: { quota: -1 } }), null);
    assert.equal(await sh(env, id, 'cpu2', 'cat /sys/fs/cgroup/cpu.max; cat /sys/fs/cgroup/memory.max'), `max 100000\n${100 * MiB}`);

    const notANumber = await updateTask(env.containerd, id, { memory: { limit: 'lots' } });
    assert.equal(notANumber?.code, GRPC_INVALID_ARGUMENT, JSON.stringify(notANumber));
    assert.match(notANumber!.details, /linux\.resources\.memory\.limit must be an integer/);
    const swapBelow = await updateTask(env.containerd, id, { memory: { limit: 64 * MiB, swap: 32 * MiB } });
    assert.equal(swapBelow?.code, GRPC_INVALID_ARGUMENT, JSON.stringify(swapBelow));
    assert.match(swapBelow!.details, /memory\.swap/);
    const badPeriod = await updateTask(env.containerd, id, { cpu: { period: 10 } });
    assert.equal(badPeriod?.code, GRPC_INVALID_ARGUMENT, JSON.stringify(badPeriod));
    assert.match(badPeriod!.details, /cpu\.period/);
    const tooBig = await updateTask(env.containerd, id, { memory: { limit: 64 * 1024 * MiB } });
    assert.equal(tooBig?.code, GRPC_FAILED_PRECONDITION, JSON.stringify(tooBig));
    assert.match(tooBig!.details, /does not fit the VM/);
    const wrongType = await updateTask(env.containerd, id, { memory: { limit: 1 } }, 'types.containerd.io/opencontainers/runtime-spec/1/Process');
    assert.equal(wrongType?.code, GRPC_INVALID_ARGUMENT, JSON.stringify(wrongType));
    // None of that changed anything.
    assert.equal(await sh(env, id, 'after', 'cat /sys/fs/cgroup/memory.max'), String(100 * MiB));
    await stopAndRemove(env, id);
  });

  test('an OOM kill publishes /tasks/oom before /tasks/exit; a child OOM-killed alone is reported too', 300_000, async (env) => {
    const watcher = await EventWatcher.start(env.containerd);
    try {
      const id = env.newId('oom');
      const started = await env.run(id, ['sh', '-c', MEMORY_HOG], { keep: true, ctrFlags: ['-d', '--memory-limit', String(32 * MiB)], timeoutMs: 90_000 });
      assert.equal(started.exitCode, 0, describeResult(started));
      assert.equal(await waitForStatus(env.containerd, id, 'STOPPED', 120_000), 'STOPPED');
      assert.ok(await watcher.waitFor((e) => e.topic === '/tasks/exit' && e.payload?.container_id === id, 10_000), 'no /tasks/exit');
      const topics = watcher.taskEventsFor(id).map((e) => e.topic);
      assert.deepEqual(topics.filter((t) => t === '/tasks/oom' || t === '/tasks/exit'), ['/tasks/oom', '/tasks/exit'], `task events: ${topics.join(', ')}`);
      const exit = watcher.taskEventsFor(id).find((e) => e.topic === '/tasks/exit');
      assert.equal(exit?.payload?.exit_status, 137, exit?.raw);
      await env.containerd.ctrChecked(['tasks', 'rm', id], { timeoutMs: 30_000 });
      await env.containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });

      // The hog is a child: the OOM killer ends it, the container goes on.
      const child = env.newId('oomchild');
      const line = `sh -c '${MEMORY_HOG}'; echo survived; sleep 600`;
      const running = await env.run(child, ['sh', '-c', line], { keep: true, ctrFlags: ['-d', '--memory-limit', String(32 * MiB)], timeoutMs: 90_000 });
      assert.equal(running.exitCode, 0, describeResult(running));
      assert.ok(await watcher.waitFor((e) => e.topic === '/tasks/oom' && e.payload?.container_id === child, 120_000), 'no /tasks/oom for the child');
      await sleep(500);
      assert.equal(await waitForStatus(env.containerd, child, 'RUNNING', 5_000), 'RUNNING');
      assert.ok(Number((await metrics(env, child)).get('pids.current')) >= 1, 'the container lives on');
      await stopAndRemove(env, child);
    } finally {
      watcher.stop();
    }
  });
});
