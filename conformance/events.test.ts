// The task events of one container, as `ctr events` sees them: create → start → exit → delete,
// each exactly once, with the exit status and the container id in the exit event.
import * as assert from 'node:assert/strict';
import { describeResult } from './harness/exec';
import { EventWatcher } from './harness/events';
import { describeConformance } from './harness/suite';

describeConformance('events', (test) => {
  test('come in order /tasks/create → /tasks/start → /tasks/exit → /tasks/delete', 90_000, async (env) => {
    const watcher = await EventWatcher.start(env.containerd);
    try {
      const id = env.newId('events');
      const result = await env.run(id, ['sh', '-c', 'echo events; exit 7']);
      assert.equal(result.exitCode, 7, describeResult(result));
      const deleted = await watcher.waitFor(
        (e) => e.topic === '/tasks/delete' && e.payload?.container_id === id,
        30_000,
      );
      const seen = watcher.taskEventsFor(id);
      const topics = seen.map((e) => e.topic);
      assert.ok(deleted, `no /tasks/delete for ${id} within 30 s; saw: ${topics.join(', ')}\n${watcher.errorOutput}`);
      assert.deepEqual(topics, ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);

      const [create, start, exit, del] = seen.map((e) => e.payload ?? {});
      assert.ok(Number(create?.pid) > 0, `TaskCreate without pid: ${JSON.stringify(create)}`);
      assert.equal(start?.pid, create?.pid, 'TaskStart.pid differs from TaskCreate.pid');
      assert.equal(exit?.id, id, `TaskExit.id must be the container id: ${JSON.stringify(exit)}`);
      assert.equal(exit?.exit_status, 7, `TaskExit.exit_status: ${JSON.stringify(exit)}`);
      assert.equal(del?.exit_status, 7, `TaskDelete.exit_status: ${JSON.stringify(del)}`);
    } finally {
      watcher.stop();
    }
  });
});
