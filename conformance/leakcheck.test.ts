// The leak checker itself must see leftovers, or every "nothing left behind" check is vacuous:
// leave a detached container running on purpose and check that it is reported (task, container,
// active snapshot, bundle, shim process, FIFOs, mounts), then clean up and check it is clean.
import * as assert from 'node:assert/strict';
import { describeResult } from './harness/exec';
import { findLeaks, waitForNoLeaks } from './harness/leaks';
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
});
