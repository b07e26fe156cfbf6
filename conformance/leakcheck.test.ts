// The leak checker itself must see leftovers, or every "nothing left behind" check is vacuous:
// leave a detached container running on purpose and check that it is reported (task, container,
// active snapshot, bundle, shim process, FIFOs, mounts), then clean up and check it is clean.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { describeResult } from './harness/exec';
import { CGROUP_ROOT, findLeaks, waitForNoLeaks } from './harness/leaks';
import { describeConformance } from './harness/suite';

describeConformance('leak checker', (test) => {
  test('reports a container left running, and is clean after removal', 120_000, async (env) => {
    const id = env.newId('leak');
    const started = await env.run(id, ['sleep', '600'], { keep: true, ctrFlags: ['-d'] });
    assert.equal(started.exitCode, 0, describeResult(started));

    const leaks = await findLeaks({ containerd: env.containerd, containerIds: [id] });
    const has = (prefix: string, needle: string): boolean => leaks.some((l) => l.startsWith(prefix) && l.includes(needle));
    assert.ok(has('task:', id), `no task reported:\n${leaks.join('\n')}`);
    assert.ok(has('container:', id), `no container reported:\n${leaks.join('\n')}`);
    assert.ok(has('active snapshot:', id), `no active snapshot reported:\n${leaks.join('\n')}`);
    assert.ok(has('bundle:', id), `no bundle reported:\n${leaks.join('\n')}`);
    assert.ok(leaks.some((l) => l.startsWith('process ')), `no shim process reported:\n${leaks.join('\n')}`);
    assert.ok(has('fifo:', `${id}-stdout`), `no ctr FIFO reported:\n${leaks.join('\n')}`);
    // runc mounts the rootfs in the bundle; a VM runtime need not mount anything on the host.
    if (!env.vm) assert.ok(has('mount:', id), `no rootfs mount reported:\n${leaks.join('\n')}`);

    await env.containerd.removeAllContainers();
    const left = await waitForNoLeaks({ containerd: env.containerd, containerIds: [id] });
    assert.deepEqual(left, [], `left after removeAllContainers:\n${left.join('\n')}`);
  });

  // VM directories have random names and no container id in them: the checker must see them by
  // where they are, as it must see a pool entry, a stray socket, a state file and a cgroup.
  test('reports what a VM, a pool spare or a task leaves under the runtime root, whatever its name', 60_000, async (env) => {
    const root = env.containerd.smolvmRoot;
    const id = env.newId('leakroot');
    const vmDir = path.join(root, 'run', 'vms', '5eed1eaf0001');
    const dataDir = path.join(root, 'lib', 'vms', '5eed1eaf0001');
    const spare = path.join(root, 'run', 'pool', '001700000000000-1f');
    const stateFile = path.join(root, 'run', 'tasks', env.containerd.namespace, 'someone-else.json');
    const cgroup = path.join(CGROUP_ROOT, 'memory', env.containerd.namespace, id);
    // Other runs may use the namespace's cgroup folder: only what this test made goes.
    const namespaceCgroupExisted = fs.existsSync(path.dirname(cgroup));
    const planted = [vmDir, dataDir, spare, stateFile];
    const socketServer = net.createServer();
    try {
      fs.mkdirSync(vmDir, { recursive: true });
      await new Promise<void>((resolve) => socketServer.listen(path.join(vmDir, 'agent.sock'), resolve));
      fs.mkdirSync(dataDir, { recursive: true });
      const disk = fs.openSync(path.join(dataDir, 'writable.ext4'), 'w');
      fs.ftruncateSync(disk, 1024 * 1024 * 1024);
      fs.closeSync(disk);
      fs.mkdirSync(spare, { recursive: true });
      fs.mkdirSync(path.dirname(stateFile), { recursive: true });
      fs.writeFileSync(stateFile, '{}');
      fs.mkdirSync(cgroup, { recursive: true });
      const leaks = await findLeaks({ containerd: env.containerd, containerIds: [id] });
      const report = leaks.join('\n');
      assert.ok(leaks.some((l) => l.startsWith(`runtime state: ${vmDir} (directory`)), `VM directory not reported:\n${report}`);
      assert.ok(leaks.some((l) => l.startsWith(`runtime data: ${dataDir} (directory, 1073741824 bytes in 1 files)`)), `VM data not reported:\n${report}`);
      assert.ok(leaks.some((l) => l.startsWith(`runtime state: ${spare}`)), `pool entry not reported:\n${report}`);
      assert.ok(leaks.some((l) => l.startsWith(`runtime state: ${stateFile}`)), `state file not reported:\n${report}`);
      assert.ok(leaks.some((l) => l === `cgroup: ${cgroup}`), `cgroup not reported:\n${report}`);
    } finally {
      await new Promise<void>((resolve) => socketServer.close(() => resolve()));
      for (const p of planted) fs.rmSync(p, { recursive: true, force: true });
      fs.rmdirSync(cgroup);
      if (!namespaceCgroupExisted) fs.rmdirSync(path.dirname(cgroup));
    }
    const left = await findLeaks({ containerd: env.containerd, containerIds: [id] });
    assert.deepEqual(left, [], `left after removing what was planted:\n${left.join('\n')}`);
  });
});
