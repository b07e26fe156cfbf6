// Host cgroups: with `ctr run --cgroup /smolvm-test/ID` the task's host process (for smolvm the
// VMM, whose pid containerd reports) is in that cgroup in every hierarchy while it runs, and the
// cgroup is gone once `ctr run --rm` finished. A bad path fails the run and leaves nothing.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseCgroupMounts } from '../shim/src/vm/host-cgroup';
import { lines } from './harness/containerd';
import { describeResult, sleep } from './harness/exec';
import { describeConformance } from './harness/suite';

const PARENT = 'smolvm-test';

describeConformance('host cgroup', (test) => {
  test('puts the task in --cgroup while it runs and removes the cgroup after --rm', 120_000, async (env) => {
    const id = env.newId('cgroup');
    const cgroupPath = `/${PARENT}/${id}`;
    const run = env.run(id, ['sleep', '6'], { ctrFlags: ['--cgroup', cgroupPath], timeoutMs: 90_000 });

    // The pid ctr shows for the running task (the VMM's for a VM runtime).
    let pid = 0;
    const deadline = Date.now() + 60_000;
    while (pid === 0 && Date.now() < deadline) {
      const listing = await env.containerd.ctr(['tasks', 'ls'], { timeoutMs: 15_000 });
      for (const row of lines(listing.stdout).slice(1)) {
        const [taskId, pidText, status] = row.split(/\s+/);
        if (taskId === id && status === 'RUNNING') pid = Number(pidText);
      }
      if (pid === 0) await sleep(200);
    }
    assert.ok(pid > 0, `task ${id} never showed RUNNING`);
    const membership = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').trim().split('\n');
    assert.ok(membership.length > 0);
    for (const line of membership) {
      assert.ok(line.endsWith(`:${cgroupPath}`), `pid ${pid} is not in ${cgroupPath} in every hierarchy:\n${membership.join('\n')}`);
    }

    const result = await run;
    assert.equal(result.exitCode, 0, describeResult(result));
    const mounts = parseCgroupMounts(fs.readFileSync('/proc/self/mountinfo', 'utf8'));
    // The shim removes the cgroup right after the VMM is gone; allow for the delete to finish.
    const goneBy = Date.now() + 10_000;
    let left: string[] = [];
    do {
      left = mounts.map((m) => path.join(m.mountPoint, PARENT, id)).filter((dir) => fs.existsSync(dir));
      if (left.length > 0) await sleep(200);
    } while (left.length > 0 && Date.now() < goneBy);
    assert.deepEqual(left, [], 'the container cgroup is left behind');
  });

  test('refuses a cgroup path with ".." and leaves nothing', 60_000, async (env) => {
    const id = env.newId('badcg');
    const result = await env.run(id, ['true'], { ctrFlags: ['--cgroup', `/${PARENT}/../escape-${id}`] });
    assert.notEqual(result.exitCode, 0, describeResult(result));
    if (env.vm) assert.match(result.stderr.toString(), /cgroupsPath.*\.\./, describeResult(result));
    for (const m of parseCgroupMounts(fs.readFileSync('/proc/self/mountinfo', 'utf8'))) {
      assert.ok(!fs.existsSync(path.join(m.mountPoint, `escape-${id}`)), `${m.mountPoint}/escape-${id} was created`);
    }
    await env.assertNoLeaks();
  });
});
