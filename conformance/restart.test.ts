// containerd restarted under running tasks: containerd is stopped (SIGTERM) while two tasks
// run detached; meanwhile one task's exec and then its init exit (their /tasks/exit events must
// be held, not lost); containerd is started again on the same root and state. It reconnects to
// the shims through `address`: `ctr task ls` shows the exited task STOPPED and the other
// RUNNING, both held exit events are delivered once containerd is back (and only once), exec
// and kill still work on the running task, `ctr task rm` reports the exit status, and nothing
// is left behind.
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PrivateContainerd, lines } from './harness/containerd';
import { describeResult, sleep } from './harness/exec';
import { busyboxImage, importImage, type OciImage } from './harness/image';
import { findLeaks } from './harness/leaks';
import { RestartedContainerd, stopContainerdOnly } from './harness/restart';
import { isVmRuntime, repoRoot, selectedRuntime } from './harness/suite';

/** The init of the exiting task ends this long after it starts; its exec a bit earlier. */
const INIT_EXIT_AFTER_S = 8;
const EXEC_EXIT_AFTER_S = 4;

async function taskStatuses(containerd: PrivateContainerd): Promise<Map<string, string>> {
  const listing = await containerd.ctrChecked(['tasks', 'ls'], { timeoutMs: 15_000 });
  const statuses = new Map<string, string>();
  for (const row of lines(listing.stdout).slice(1)) {
    const [taskId, , status] = row.split(/\s+/);
    if (taskId && status) statuses.set(taskId, status);
  }
  return statuses;
}

async function waitForStatus(containerd: PrivateContainerd, id: string, status: string, boundMs: number): Promise<string | undefined> {
  const deadline = Date.now() + boundMs;
  let current: string | undefined;
  while (Date.now() < deadline) {
    current = (await taskStatuses(containerd)).get(id);
    if (current === status) return current;
    await sleep(200);
  }
  return current;
}

/** smolvm records the exit in its state file (run/tasks/NS/ID.json) as it happens. */
function smolvmRecordedExit(containerd: PrivateContainerd, id: string): boolean {
  try {
    const state = JSON.parse(fs.readFileSync(path.join(containerd.smolvmRoot, 'run', 'tasks', containerd.namespace, `${id}.json`), 'utf8')) as { status?: string };
    return state.status === 'stopped';
  } catch {
    return false;
  }
}

/** containerd (debug) logs every event a shim forwards: `msg="event forwarded" ns=… topic=… type=…`. */
function forwardedExits(log: string, namespace: string): number {
  return log.split('\n').filter((line) => line.includes('msg="event forwarded"') && line.includes(`ns=${namespace}`) && line.includes('topic=/tasks/exit')).length;
}

describe(`containerd restart [${selectedRuntime()}]`, function () {
  const runtime = selectedRuntime();
  let containerd: PrivateContainerd | undefined;
  let restarted: RestartedContainerd | undefined;
  let image: OciImage;

  before(async function () {
    this.timeout(180_000);
    image = busyboxImage();
    containerd = await PrivateContainerd.start({ repoRoot: repoRoot() });
    await importImage(containerd, image);
  });

  after(async function () {
    this.timeout(120_000);
    if (!containerd) return;
    if (restarted?.running) {
      await containerd.removeAllContainers().catch(() => undefined);
      await restarted.stop();
    }
    await containerd.stop();
  });

  it('holds events while containerd is away, delivers them once it is back; tasks keep working', async function () {
    this.timeout(300_000);
    const c = containerd!;
    const suffix = randomBytes(2).toString('hex');
    const staying = `rs-${suffix}-stay`;
    const exiting = `rs-${suffix}-exit`;
    const run = (id: string, command: string[]) =>
      c.ctr(['run', '--runtime', runtime, '-d', image.ref, id, ...command], { timeoutMs: 120_000 });

    try {
      const stay = await run(staying, ['sleep', '600']);
      assert.equal(stay.exitCode, 0, describeResult(stay));
      const exit = await run(exiting, ['sh', '-c', `sleep ${INIT_EXIT_AFTER_S}; exit 3`]);
      assert.equal(exit.exitCode, 0, describeResult(exit));
      const startedAt = Date.now();
      const exec = await c.ctr(['tasks', 'exec', '-d', '--exec-id', 'early', exiting, 'sh', '-c', `sleep ${EXEC_EXIT_AFTER_S}; exit 7`], { timeoutMs: 60_000 });
      assert.equal(exec.exitCode, 0, describeResult(exec));

      await stopContainerdOnly(c);
      assert.ok(Date.now() - startedAt < EXEC_EXIT_AFTER_S * 1000, 'containerd stopped too late: the exits did not happen while it was away');

      // Both exits happen now, with containerd away.
      if (isVmRuntime(runtime)) {
        const deadline = Date.now() + 60_000;
        while (!smolvmRecordedExit(c, exiting) && Date.now() < deadline) await sleep(200);
        assert.ok(smolvmRecordedExit(c, exiting), `task ${exiting} did not exit while containerd was away`);
        await sleep(2_000); // the shim keeps retrying meanwhile
      } else {
        await sleep(INIT_EXIT_AFTER_S * 1000 + 3_000 - (Date.now() - startedAt));
      }

      const offset = c.logOffset();
      restarted = await RestartedContainerd.start(c, repoRoot());

      const statuses = await taskStatuses(c);
      assert.equal(statuses.get(exiting), 'STOPPED', `after the restart: ${JSON.stringify([...statuses])}`);
      assert.equal(statuses.get(staying), 'RUNNING', `after the restart: ${JSON.stringify([...statuses])}`);

      // The two held exits (exec, then init) reach containerd, once each.
      const deadline = Date.now() + 30_000;
      while (forwardedExits(c.logSince(offset), c.namespace) < 2 && Date.now() < deadline) await sleep(200);
      await sleep(2_000); // and nothing more (no duplicates)
      assert.equal(forwardedExits(c.logSince(offset), c.namespace), 2,
        `forwarded /tasks/exit events after the restart:\n${c.logSince(offset).split('\n').filter((l) => l.includes('event forwarded')).join('\n')}`);

      // The running task still answers: exec, kill, wait (via STOPPED).
      const late = await c.ctr(['tasks', 'exec', '--exec-id', 'after', staying, 'sh', '-c', 'echo still-here'], { timeoutMs: 60_000 });
      assert.equal(late.exitCode, 0, describeResult(late));
      assert.equal(late.stdout.toString(), 'still-here\n', describeResult(late));
      await c.ctrChecked(['tasks', 'kill', '-s', 'SIGKILL', staying], { timeoutMs: 30_000 });
      assert.equal(await waitForStatus(c, staying, 'STOPPED', 30_000), 'STOPPED');

      // ctr task rm reports the task's exit status (ctr 1.6: a warning, exit code 0).
      const removed = await c.ctr(['tasks', 'rm', exiting], { timeoutMs: 30_000 });
      assert.equal(removed.exitCode, 0, describeResult(removed));
      assert.match(removed.stderr.toString(), /non-zero exit code 3\b/, describeResult(removed));
      const removedStaying = await c.ctr(['tasks', 'rm', staying], { timeoutMs: 30_000 });
      assert.equal(removedStaying.exitCode, 0, describeResult(removedStaying));
      assert.match(removedStaying.stderr.toString(), /non-zero exit code 137\b/, describeResult(removedStaying));
      await c.ctrChecked(['containers', 'rm', exiting, staying], { timeoutMs: 30_000 });

      // Nothing left (the restarted containerd itself excepted).
      const boundAt = Date.now() + 15_000;
      let leaks: string[] = [];
      for (;;) {
        leaks = (await findLeaks({ containerd: c, containerIds: [exiting, staying] })).filter((l) => !l.startsWith(`process ${restarted!.pid}:`));
        if (leaks.length === 0 || Date.now() > boundAt) break;
        await sleep(250);
      }
      assert.deepEqual(leaks, [], `left behind:\n  ${leaks.join('\n  ')}`);
    } catch (err) {
      console.error(`\n=== containerd log tail ===\n${c.logTail(120)}\n=== end ===`);
      throw err;
    }
  });
});
