// Pause/Resume through real ctr: `ctr task pause` stops the whole VM (the container's counter,
// written to a host file through --log-uri file://, makes no progress), `ctr task ls` shows
// PAUSED, /tasks/paused and /tasks/resumed are published, `ctr task resume` lets it go on; a
// paused task refuses a plain `task rm`, and SIGKILL stops a paused task (as runc's).
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { EventWatcher } from './harness/events';
import { describeResult, sleep } from './harness/exec';
import { describeConformance } from './harness/suite';
import { taskStatus, waitForStatus } from './harness/tasks';


const fileSize = (file: string): number => {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
};

async function waitForGrowth(file: string, beyond: number, boundMs: number): Promise<number> {
  const deadline = Date.now() + boundMs;
  while (Date.now() < deadline) {
    const size = fileSize(file);
    if (size > beyond) return size;
    await sleep(100);
  }
  return fileSize(file);
}

/** Prints an increasing counter ten times a second, forever. */
const COUNTER = ['sh', '-c', 'i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done'];

describeConformance('ctr task pause/resume', (test) => {
  let logDir = '';
  beforeEach(() => { logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-pause-')); });
  afterEach(() => { fs.rmSync(logDir, { recursive: true, force: true }); });

  test('pause stops all progress, ls shows PAUSED, events, resume continues', 240_000, async (env) => {
    const { containerd } = env;
    const id = env.newId('pause');
    const log = path.join(logDir, 'counter.log');
    const started = await env.run(id, COUNTER, { keep: true, ctrFlags: ['-d', '--log-uri', `file://${log}`], timeoutMs: 60_000 });
    assert.equal(started.exitCode, 0, describeResult(started));
    assert.equal(await waitForStatus(containerd, id, 'RUNNING', 30_000), 'RUNNING');
    assert.ok(await waitForGrowth(log, 8, 30_000) > 8, `the counter does not run: ${fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : 'no log'}`);

    const watcher = await EventWatcher.start(containerd);
    try {
      const paused = await containerd.ctr(['tasks', 'pause', id], { timeoutMs: 30_000 });
      assert.equal(paused.exitCode, 0, describeResult(paused));
      assert.equal(await taskStatus(containerd, id), 'PAUSED');
      // Let output already in flight land, then nothing more may arrive.
      await sleep(500);
      const frozenAt = fileSize(log);
      await sleep(3_000);
      assert.equal(fileSize(log), frozenAt, 'the counter made progress while the task was paused');
      assert.equal(await taskStatus(containerd, id), 'PAUSED');

      // Pausing again is refused, and so is a plain delete (as runc: "cannot pause a paused container").
      const again = await containerd.ctr(['tasks', 'pause', id], { timeoutMs: 30_000 });
      assert.notEqual(again.exitCode, 0, describeResult(again));
      assert.match(again.stderr.toString(), /paused/, describeResult(again));
      const rm = await containerd.ctr(['tasks', 'rm', id], { timeoutMs: 30_000 });
      assert.notEqual(rm.exitCode, 0, `task rm of a paused task must fail\n${describeResult(rm)}`);

      const resumed = await containerd.ctr(['tasks', 'resume', id], { timeoutMs: 30_000 });
      assert.equal(resumed.exitCode, 0, describeResult(resumed));
      assert.equal(await taskStatus(containerd, id), 'RUNNING');
      assert.ok(await waitForGrowth(log, frozenAt, 20_000) > frozenAt, 'the counter did not continue after resume');
      const counts = fs.readFileSync(log, 'utf8').trim().split('\n').map(Number);
      assert.deepEqual(counts, counts.map((_, i) => i + 1), 'the counter restarted or skipped: the process is not the same one');

      const notPaused = await containerd.ctr(['tasks', 'resume', id], { timeoutMs: 30_000 });
      assert.notEqual(notPaused.exitCode, 0, `resume of a running task must fail\n${describeResult(notPaused)}`);

      assert.ok(await watcher.waitFor((e) => e.topic === '/tasks/resumed' && e.payload?.container_id === id, 10_000), 'no /tasks/resumed');
      const topics = watcher.taskEventsFor(id).map((e) => e.topic);
      assert.deepEqual(topics, ['/tasks/paused', '/tasks/resumed'], `task events: ${topics.join(', ')}`);
    } finally {
      watcher.stop();
    }

    const killed = await containerd.ctr(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 30_000 });
    assert.equal(killed.exitCode, 0, describeResult(killed));
    assert.equal(await waitForStatus(containerd, id, 'STOPPED', 30_000), 'STOPPED');
    await containerd.ctrChecked(['tasks', 'rm', id], { timeoutMs: 30_000 });
    await containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });
  });

  test('a signal sent to a paused task is held until resume (as with a frozen cgroup)', 180_000, async (env) => {
    const { containerd } = env;
    const id = env.newId('pausesig');
    const log = path.join(logDir, 'signal.log');
    const script = 'trap "echo got-usr1" USR1; echo armed; while :; do sleep 0.1; done';
    const started = await env.run(id, ['sh', '-c', script], { keep: true, ctrFlags: ['-d', '--log-uri', `file://${log}`], timeoutMs: 60_000 });
    assert.equal(started.exitCode, 0, describeResult(started));
    assert.ok(await waitForGrowth(log, 0, 30_000) > 0, 'the trap was not armed');
    await containerd.ctrChecked(['tasks', 'pause', id], { timeoutMs: 30_000 });
    const sent = await containerd.ctr(['tasks', 'kill', '-s', 'SIGUSR1', id], { timeoutMs: 30_000 });
    assert.equal(sent.exitCode, 0, describeResult(sent));
    await sleep(2_000);
    assert.equal(fs.readFileSync(log, 'utf8'), 'armed\n', 'the paused task handled a signal');
    assert.equal(await taskStatus(containerd, id), 'PAUSED');
    await containerd.ctrChecked(['tasks', 'resume', id], { timeoutMs: 30_000 });
    assert.ok(await waitForGrowth(log, 'armed\n'.length, 20_000) > 'armed\n'.length, 'the held signal was not delivered after resume');
    assert.equal(fs.readFileSync(log, 'utf8'), 'armed\ngot-usr1\n');
    await containerd.ctrChecked(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 30_000 });
    assert.equal(await waitForStatus(containerd, id, 'STOPPED', 30_000), 'STOPPED');
    await containerd.ctr(['tasks', 'rm', id], { timeoutMs: 30_000 });
    await containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });
  });

  test('SIGKILL stops a paused task; task rm -f cleans up', 180_000, async (env) => {
    const { containerd } = env;
    const id = env.newId('pausekill');
    const started = await env.run(id, ['sleep', '600'], { keep: true, ctrFlags: ['-d'], timeoutMs: 60_000 });
    assert.equal(started.exitCode, 0, describeResult(started));
    assert.equal(await waitForStatus(containerd, id, 'RUNNING', 30_000), 'RUNNING');
    await containerd.ctrChecked(['tasks', 'pause', id], { timeoutMs: 30_000 });
    assert.equal(await taskStatus(containerd, id), 'PAUSED');
    const killed = await containerd.ctr(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 30_000 });
    assert.equal(killed.exitCode, 0, describeResult(killed));
    assert.equal(await waitForStatus(containerd, id, 'STOPPED', 30_000), 'STOPPED');
    const removed = await containerd.ctr(['tasks', 'rm', '-f', id], { timeoutMs: 30_000 });
    // 137: ctr passes the task's exit status on (SIGKILL).
    assert.ok(removed.exitCode === 0 || removed.exitCode === 137, describeResult(removed));
    await containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });
  });
});
