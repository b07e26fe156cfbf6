// The detached lifecycle: `ctr run -d`, `ctr task ls` shows RUNNING, `ctr task kill`, the task
// becomes STOPPED, `ctr task rm`, `ctr containers rm`, and nothing is left.
import * as assert from 'node:assert/strict';
import { PrivateContainerd, RUN_MARKER_ENV, lines } from './harness/containerd';
import { findMarkedProcesses, findProcessesByCmdline } from './harness/host';
import { describeResult, sleep } from './harness/exec';
import { describeConformance } from './harness/suite';
import { TasksClient } from './harness/tasks-rpc';

interface TaskRow {
  readonly id: string;
  readonly pid: number;
  readonly status: string;
}

async function taskRow(containerd: PrivateContainerd, id: string): Promise<TaskRow | undefined> {
  const listing = await containerd.ctrChecked(['tasks', 'ls'], { timeoutMs: 15_000 });
  for (const row of lines(listing.stdout).slice(1)) {
    const [taskId, pid, status] = row.split(/\s+/);
    if (taskId === id) return { id: taskId, pid: Number(pid), status: status ?? '' };
  }
  return undefined;
}

async function waitForStatus(containerd: PrivateContainerd, id: string, status: string, boundMs: number): Promise<TaskRow | undefined> {
  const deadline = Date.now() + boundMs;
  let row: TaskRow | undefined;
  while (Date.now() < deadline) {
    row = await taskRow(containerd, id);
    if (row?.status === status) return row;
    await sleep(200);
  }
  return row;
}

describeConformance('detached lifecycle', (test) => {
  test('run -d, task ls RUNNING, task kill, task rm, containers rm', 120_000, async (env) => {
    const { containerd } = env;
    const id = env.newId('detached');
    const started = await env.run(id, ['sleep', '600'], { keep: true, ctrFlags: ['-d'], timeoutMs: 60_000 });
    assert.equal(started.exitCode, 0, describeResult(started));

    const running = await waitForStatus(containerd, id, 'RUNNING', 30_000);
    assert.equal(running?.status, 'RUNNING', `task ${id}: ${JSON.stringify(running)}`);
    assert.ok((running?.pid ?? 0) > 0, `task ${id} has no pid: ${JSON.stringify(running)}`);
    if (env.vm) {
      // A VM runtime reports its VMM's pid (as Kata does): a live host process of this runtime.
      const vmmPid = running?.pid ?? 0;
      const ours =
        findMarkedProcesses(RUN_MARKER_ENV, containerd.marker).some((p) => p.pid === vmmPid) ||
        findProcessesByCmdline([containerd.smolvmRoot]).some((p) => p.pid === vmmPid);
      assert.ok(ours, `pid ${vmmPid} of task ${id} is not a live process of this runtime (expected the VMM's pid)`);
    }

    const killed = await containerd.ctr(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 30_000 });
    assert.equal(killed.exitCode, 0, describeResult(killed));
    const stopped = await waitForStatus(containerd, id, 'STOPPED', 30_000);
    assert.equal(stopped?.status, 'STOPPED', `task ${id} after kill: ${JSON.stringify(stopped)}`);

    const taskRemoved = await containerd.ctr(['tasks', 'rm', id], { timeoutMs: 30_000 });
    assert.equal(taskRemoved.exitCode, 0, describeResult(taskRemoved));
    assert.equal(await taskRow(containerd, id), undefined, `task ${id} still listed after tasks rm`);

    const containerRemoved = await containerd.ctr(['containers', 'rm', id], { timeoutMs: 30_000 });
    assert.equal(containerRemoved.exitCode, 0, describeResult(containerRemoved));
  });

  // containerd starts the next task of a container as soon as the last one's Delete (and the
  // daemon's Shutdown) answered: a `start` in that moment must not find the leaving daemon,
  // or the Create fails with "ttrpc: closed". The Tasks API gives ctr's gap a millisecond.
  test('a task of the same container again right after Delete, 10 times over', 240_000, async (env) => {
    const { containerd } = env;
    const id = env.newId('again');
    await containerd.ctrChecked(['containers', 'create', '--runtime', env.runtime, '--', env.image.ref, id, 'sh', '-c', 'exit 3'], { timeoutMs: 60_000 });
    const tasks = new TasksClient(containerd);
    try {
      for (let round = 1; round <= 10; round++) {
        await tasks.create(id).catch((err: unknown) => { throw new Error(`round ${round}: Create right after the last Delete: ${(err as Error).message}`); });
        await tasks.start(id);
        const exit = await tasks.wait(id, '', 60_000);
        assert.equal(exit.exitStatus, 3, `round ${round}`);
        await tasks.delete(id);
      }
    } finally {
      tasks.close();
    }
    await containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });
  });
});
