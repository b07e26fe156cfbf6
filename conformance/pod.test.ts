// A Kubernetes pod is one VM, through real ctr: containers whose spec carries the same
// `io.kubernetes.cri.sandbox-id` annotation (as CRI sets it; here `ctr run --annotation`) are
// served by one shim daemon and run in one VM: one VMM process, the same task pid, the same
// guest kernel (boot id); a sandbox and three apps at once, each with its own rootfs, output and
// exit code; one leaving and another joining leaves the others running; pausing one of several is refused; deleting them all leaves nothing. Two
// pods get two VMs. The shim daemon killed with -9 under a pod: containerd runs `delete` for
// each container, which tears the pod's VM down from the state files alone.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { lines, type PrivateContainerd } from './harness/containerd';
import { describeResult, sleep } from './harness/exec';
import { mountsUnder } from './harness/host';
import { isShareExportMount, SHARE_ROOT_PROBE, SHARE_ROOT_REFUSED } from './harness/share';
import { describeConformance, type ConformanceEnv } from './harness/suite';
import { taskStatus, waitForStatus } from './harness/tasks';
import { vmmProcsOf } from '../test/helpers/vmm-procs';
import { stateFileOf, stateOf } from './harness/state';

const SANDBOX_ID = 'io.kubernetes.cri.sandbox-id';
const BOOT_ID = 'cat /proc/sys/kernel/random/boot_id';

/** Task pid per task id, as `ctr tasks ls` shows them. */
async function taskPids(containerd: PrivateContainerd): Promise<Map<string, number>> {
  const listing = await containerd.ctrChecked(['tasks', 'ls'], { timeoutMs: 15_000 });
  const pids = new Map<string, number>();
  for (const row of lines(listing.stdout).slice(1)) {
    const [taskId, pid] = row.split(/\s+/);
    if (taskId && pid) pids.set(taskId, Number(pid));
  }
  return pids;
}

/** QEMU processes of this containerd's smolvm root (one per VM). */
/** The VMMs running containers of this root (a template build's VM, which the first container
 *  of a fresh root starts in the background, is none of them). */
function vmmProcesses(containerd: PrivateContainerd): number[] {
  return vmmProcsOf(path.join(containerd.smolvmRoot, 'run')).filter((v) => !v.templateBuild).map((v) => v.pid);
}

async function waitForFileMatch(file: string, pattern: RegExp, boundMs: number): Promise<string> {
  const deadline = Date.now() + boundMs;
  let text = '';
  while (Date.now() < deadline) {
    text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
    if (pattern.test(text)) return text;
    await sleep(100);
  }
  return text;
}

/** `ctr run -d` of a container in pod `pod`, its output appended to `log`. */
async function runInPod(env: ConformanceEnv, pod: string, id: string, script: string, log: string): Promise<void> {
  const started = await env.run(id, ['sh', '-c', script], {
    keep: true, timeoutMs: 90_000,
    ctrFlags: ['-d', '--annotation', `${SANDBOX_ID}=${pod}`, '--log-uri', `file://${log}`],
  });
  assert.equal(started.exitCode, 0, describeResult(started));
  assert.equal(await waitForStatus(env.containerd, id, 'RUNNING', 30_000), 'RUNNING');
}

async function killAndRemove(containerd: PrivateContainerd, id: string): Promise<void> {
  if ((await taskStatus(containerd, id)) === 'RUNNING') {
    await containerd.ctr(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 30_000 });
    await waitForStatus(containerd, id, 'STOPPED', 30_000);
  }
  const rm = await containerd.ctr(['tasks', 'rm', id], { timeoutMs: 60_000 });
  assert.equal(rm.exitCode, 0, describeResult(rm));
  const crm = await containerd.ctr(['containers', 'rm', id], { timeoutMs: 60_000 });
  assert.equal(crm.exitCode, 0, describeResult(crm));
}

describeConformance('a pod is one VM', (test) => {
  let logDir = '';
  beforeEach(() => { logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-pod-')); });
  afterEach(() => { fs.rmSync(logDir, { recursive: true, force: true }); });

  // A pod VM takes its containers' disks as they come (tcg: virtio-scsi hotplug; kvm: slot
  // pairs): the sandbox and three apps run at once, one app leaves and another joins while
  // the rest run on.
  test('sandbox + three apps run at once in one VMM, each with its own rootfs, output and exit code; one leaves, another joins', 420_000, async (env) => {
    if (!env.vm) return;
    const { containerd } = env;
    const pod = env.newId('pod');
    const sandbox = env.newId('sandbox');
    const apps = [1, 2, 3].map((n) => ({ n, id: env.newId(`app${n}`), log: path.join(logDir, `app${n}.log`), code: 10 + n }));
    const sandboxLog = path.join(logDir, 'sandbox.log');

    // The sandbox (pause) container boots the pod's VM; the apps join it and keep running.
    // Each app's init traps SIGTERM and exits with a code of its own.
    await runInPod(env, pod, sandbox, `${BOOT_ID}; echo sandbox > /owner; exec sleep 100000`, sandboxLog);
    const outputs: string[] = [];
    for (const app of apps) {
      await runInPod(env, pod, app.id, [
        BOOT_ID, 'cat /owner 2>/dev/null || echo no-owner', `echo app${app.n} > /owner`, `trap 'exit ${app.code}' TERM`,
        'echo ready', 'while :; do sleep 0.2; done',
      ].join('; '), app.log);
      const out = await waitForFileMatch(app.log, /^ready$/m, 60_000);
      assert.match(out, /^ready$/m, `app${app.n} did not start:\n${out}`);
      assert.match(out, /^no-owner$/m, `app${app.n} sees another container's rootfs:\n${out}`);
      outputs.push(out);
    }

    // One VMM, one task pid, one guest kernel for all four.
    const pids = await taskPids(containerd);
    const vmmPid = pids.get(sandbox)!;
    assert.ok(vmmPid > 0, `no pid for ${sandbox}`);
    for (const app of apps) assert.equal(pids.get(app.id), vmmPid, `app${app.n} has another task pid than the sandbox`);
    assert.deepEqual(vmmProcesses(containerd), [vmmPid], 'the pod must run in exactly one VMM process, the task pid');
    const bootIds = [await waitForFileMatch(sandboxLog, /^[0-9a-f-]{36}$/m, 10_000), ...outputs]
      .map((text) => /^([0-9a-f-]{36})$/m.exec(text)?.[1]);
    assert.ok(bootIds[0], 'no boot id in the sandbox\'s output');
    assert.deepEqual(bootIds, bootIds.map(() => bootIds[0]), 'the containers run on different guest kernels');

    // While all run, each sees its own rootfs.
    const owner = async (id: string): Promise<string> => {
      const exec = await containerd.ctr(['tasks', 'exec', '--exec-id', `owner-${id}`, id, 'cat', '/owner'], { timeoutMs: 60_000 });
      assert.equal(exec.exitCode, 0, describeResult(exec));
      return exec.stdout.toString().trim();
    };
    assert.equal(await owner(sandbox), 'sandbox');
    for (const app of apps) assert.equal(await owner(app.id), `app${app.n}`);
    // Hot-added disks (tcg): one writable file per container in the pod VM's data dir (on disk),
    // removed with the container (slot pairs, kvm: fixed files).
    const vmDir = path.join(containerd.smolvmRoot, 'lib', 'vms');
    const disksLeft = (): string[] => fs.readdirSync(vmDir, { recursive: true }).map(String).filter((f) => /-rw\.ext4$/.test(f));
    const hotplug = disksLeft().length > 0;
    if (hotplug) assert.equal(disksLeft().length, 4, `one writable disk per container: ${disksLeft().join(' ')}`);

    // Pausing one container would freeze the whole pod: refused while others run.
    const pause = await containerd.ctr(['tasks', 'pause', apps[0]!.id], { timeoutMs: 30_000 });
    assert.notEqual(pause.exitCode, 0, describeResult(pause));
    assert.match(pause.stderr.toString(), /cannot pause one container of pod/, describeResult(pause));
    assert.equal(await taskStatus(containerd, apps[0]!.id), 'RUNNING');

    // app2 leaves with its own exit code; the others run on in the same VM.
    const stop = async (app: typeof apps[number]): Promise<void> => {
      await containerd.ctrChecked(['tasks', 'kill', '-s', 'SIGTERM', app.id], { timeoutMs: 30_000 });
      assert.equal(await waitForStatus(containerd, app.id, 'STOPPED', 30_000), 'STOPPED');
      // ctr 1.6's `tasks rm` reports the task's exit code as a warning.
      const rm = await containerd.ctr(['tasks', 'rm', app.id], { timeoutMs: 60_000 });
      assert.equal(rm.exitCode, 0, describeResult(rm));
      assert.match(rm.stderr.toString(), new RegExp(`exit with non-zero exit code ${app.code}\\b`), describeResult(rm));
      await containerd.ctrChecked(['containers', 'rm', app.id], { timeoutMs: 60_000 });
    };
    await stop(apps[1]!);
    for (const id of [sandbox, apps[0]!.id, apps[2]!.id]) assert.equal(await taskStatus(containerd, id), 'RUNNING', `removing app2 stopped ${id}`);
    assert.deepEqual(vmmProcesses(containerd), [vmmPid], 'the pod VM must outlive its app containers');
    if (hotplug) assert.equal(disksLeft().length, 3, `app2's writable disk outlived it: ${disksLeft().join(' ')}`);

    // app4 joins while the sandbox, app1 and app3 run: its own output and exit code, the same VM.
    const app4 = env.newId('app4');
    const app4Run = await env.run(app4, ['sh', '-c', `${BOOT_ID}; cat /owner 2>/dev/null || echo no-owner; echo app4-out; echo app4-err >&2; exit 7`], {
      keep: true, timeoutMs: 90_000, ctrFlags: ['--annotation', `${SANDBOX_ID}=${pod}`],
    });
    assert.equal(app4Run.exitCode, 7, describeResult(app4Run));
    const app4Out = app4Run.stdout.toString();
    assert.match(app4Out, /^no-owner$/m, describeResult(app4Run));
    assert.match(app4Out, /^app4-out$/m);
    assert.match(app4Run.stderr.toString(), /app4-err/);
    assert.doesNotMatch(app4Out, /sandbox|app[123]/, 'another container\'s output leaked into app4\'s');
    assert.match(app4Out, new RegExp(`^${bootIds[0]}$`, 'm'), 'app4 did not join the pod VM');
    await containerd.ctrChecked(['containers', 'rm', app4], { timeoutMs: 60_000 });
    assert.equal(await owner(apps[0]!.id), 'app1');
    assert.equal(await owner(apps[2]!.id), 'app3');

    await stop(apps[0]!);
    await stop(apps[2]!);
    assert.equal(await owner(sandbox), 'sandbox');
    const sandboxOut = fs.readFileSync(sandboxLog, 'utf8');
    assert.doesNotMatch(sandboxOut, /app[1-4]/, `app output in the sandbox's log:\n${sandboxOut}`);
    for (const app of apps) {
      const out = fs.readFileSync(app.log, 'utf8');
      assert.doesNotMatch(out, /sandbox|app4/, `another container's output in app${app.n}'s log:\n${out}`);
    }
    if (hotplug) assert.equal(disksLeft().length, 1, `writable disks of gone apps left: ${disksLeft().join(' ')}`);

    // The last container out ends the VM (the suite's leak check: no qemu, file, mount, FIFO).
    await killAndRemove(containerd, sandbox);
    const deadline = Date.now() + 15_000;
    while (vmmProcesses(containerd).length > 0 && Date.now() < deadline) await sleep(100);
    assert.deepEqual(vmmProcesses(containerd), [], 'the pod VM outlived its last container');
  });

  test('an app joining the running pod VM gets host directories (rw: written through; ro: refused), under a read-only share root; delete leaves none mounted', 300_000, async (env) => {
    if (!env.vm) return;
    const { containerd } = env;
    const pod = env.newId('podvol');
    const sandbox = env.newId('sandbox');
    const app = env.newId('app');
    // As kubelet's emptyDir (rw) and configMap/secret/token volumes (ro).
    const emptyDir = fs.mkdtempSync(path.join(logDir, 'emptydir-'));
    const configMap = fs.mkdtempSync(path.join(logDir, 'configmap-'));
    fs.writeFileSync(path.join(emptyDir, 'seed'), 'from the host\n');
    fs.writeFileSync(path.join(configMap, 'key'), 'value\n');
    // A privileged sandbox, as a guest root: it mounts the pod VM's share itself and finds its
    // root read-only (then unmounts it: the agent mounts it for the app).
    const sandboxLog = path.join(logDir, 'sandbox.log');
    const sandboxRun = await env.run(sandbox, ['sh', '-c', `${SHARE_ROOT_PROBE}; ${BOOT_ID}; exec sleep 100000`], {
      keep: true, timeoutMs: 90_000,
      ctrFlags: ['-d', '--privileged', '--annotation', `${SANDBOX_ID}=${pod}`, '--log-uri', `file://${sandboxLog}`],
    });
    assert.equal(sandboxRun.exitCode, 0, describeResult(sandboxRun));
    assert.equal(await waitForStatus(containerd, sandbox, 'RUNNING', 30_000), 'RUNNING');
    const sandboxOut = await waitForFileMatch(sandboxLog, /^[0-9a-f-]{36}$/m, 10_000);
    const bootId = /^([0-9a-f-]{36})$/m.exec(sandboxOut)?.[1];
    assert.ok(bootId, `no boot id from the sandbox:\n${sandboxOut}`);
    assert.deepEqual(sandboxOut.split('\n').filter((l) => /^(mounted|unmounted|[a-z]+-(ok|refused))$/.test(l)), SHARE_ROOT_REFUSED, sandboxOut);
    const vmm = vmmProcesses(containerd);
    const vmDirs = path.join(containerd.smolvmRoot, 'run', 'vms');
    const exportMounts = mountsUnder(vmDirs);
    assert.equal(exportMounts.length, 2, `the pod VM's share export and its work tmpfs: ${exportMounts.join(' ')}`);
    assert.ok(exportMounts.every(isShareExportMount), exportMounts.join(' '));

    const script = [
      BOOT_ID, 'cat /vol/seed /config/key', 'echo from-the-pod > /vol/written && echo vol-rw',
      'echo x > /config/new 2>/dev/null || echo config-ro', 'grep -qE " /config [^ ]+ ro[, ]" /proc/mounts && echo config-mounted-ro',
    ].join('; ');
    const run = await env.run(app, ['sh', '-c', script], {
      timeoutMs: 90_000, ctrFlags: ['--annotation', `${SANDBOX_ID}=${pod}`,
        '--mount', `type=bind,src=${emptyDir},dst=/vol,options=rbind:rw`,
        '--mount', `type=bind,src=${configMap},dst=/config,options=rbind:ro`],
    });
    assert.equal(run.exitCode, 0, describeResult(run));
    assert.deepEqual(run.stdout.toString().split('\n'),
      [bootId, 'from the host', 'value', 'vol-rw', 'config-ro', 'config-mounted-ro', ''], describeResult(run));
    assert.deepEqual(vmmProcesses(containerd), vmm, 'the app ran in the pod VM, which outlives it');
    assert.equal(fs.readFileSync(path.join(emptyDir, 'written'), 'utf8'), 'from-the-pod\n');
    assert.ok(!fs.existsSync(path.join(configMap, 'new')), 'a read-only volume was written');
    // The app is gone (ctr run --rm): its host bind mounts into the running pod VM's share too.
    const hostDirMounts = (): string[] => mountsUnder(vmDirs).filter((p) => !isShareExportMount(p));
    let left = hostDirMounts();
    for (const deadline = Date.now() + 15_000; left.length > 0 && Date.now() < deadline; left = hostDirMounts()) await sleep(200);
    assert.deepEqual(left, [], 'the app\'s host bind mounts outlived it');
    assert.deepEqual(mountsUnder(vmDirs), exportMounts, 'the share export stays while the pod VM runs');

    // Another app joins later still, with the same configMap: a new mount in the same share.
    const again = await env.run(env.newId('again'), ['sh', '-c', `${BOOT_ID}; cat /config/key`], {
      timeoutMs: 90_000, ctrFlags: ['--annotation', `${SANDBOX_ID}=${pod}`, '--mount', `type=bind,src=${configMap},dst=/config,options=rbind:ro`],
    });
    assert.equal(again.exitCode, 0, describeResult(again));
    assert.deepEqual(again.stdout.toString().split('\n'), [bootId, 'value', ''], describeResult(again));

    await killAndRemove(containerd, sandbox);
    assert.equal(fs.readFileSync(path.join(emptyDir, 'seed'), 'utf8'), 'from the host\n');
    assert.equal(fs.readFileSync(path.join(configMap, 'key'), 'utf8'), 'value\n');
  });

  test('shim daemon killed -9 while a pod app has host directories: delete unmounts them, host files stay', 240_000, async (env) => {
    if (!env.vm) return;
    const { containerd } = env;
    const pod = env.newId('podkill');
    const first = env.newId('first');
    const second = env.newId('second');
    const hostDir = fs.mkdtempSync(path.join(logDir, 'vol-'));
    fs.writeFileSync(path.join(hostDir, 'precious'), 'keep\n');
    await runInPod(env, pod, first, 'exec sleep 100000', path.join(logDir, 'first.log'));
    const started = await env.run(second, ['sh', '-c', 'exec sleep 100000'], {
      keep: true, timeoutMs: 90_000,
      ctrFlags: ['-d', '--annotation', `${SANDBOX_ID}=${pod}`, '--log-uri', `file://${path.join(logDir, 'second.log')}`,
        '--mount', `type=bind,src=${hostDir},dst=/vol,options=rbind:rw`],
    });
    assert.equal(started.exitCode, 0, describeResult(started));
    assert.equal(await waitForStatus(containerd, second, 'RUNNING', 30_000), 'RUNNING');
    const state = stateOf(containerd, second);
    assert.equal(state.hostMounts?.length, 1, `the state file records the host mount: ${JSON.stringify(state)}`);
    assert.deepEqual(mountsUnder(path.join(containerd.smolvmRoot, 'run', 'vms')).filter((p) => !isShareExportMount(p)), state.hostMounts);

    process.kill(state.shimPid, 'SIGKILL');
    // `ctr tasks ls` stops listing a task as soon as its shim is gone, before `delete` has
    // run: its unmounts (after the VMM is killed) are waited for too.
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      const pids = await taskPids(containerd);
      if (!pids.has(first) && !pids.has(second) && vmmProcesses(containerd).length === 0 && mountsUnder(containerd.smolvmRoot).length === 0) break;
      await sleep(200);
    }
    assert.deepEqual(vmmProcesses(containerd), [], 'the pod VM survived its shim');
    assert.deepEqual(mountsUnder(containerd.smolvmRoot), [], 'delete left host bind mounts behind');
    assert.equal(fs.readFileSync(path.join(hostDir, 'precious'), 'utf8'), 'keep\n');
    for (const id of [first, second]) {
      const left = await taskStatus(containerd, id);
      if (left) await containerd.ctr(['tasks', 'rm', '-f', id], { timeoutMs: 30_000 });
      await containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });
    }
  });

  test('two pods get two VMs', 240_000, async (env) => {
    if (!env.vm) return;
    const { containerd } = env;
    const podA = env.newId('poda');
    const podB = env.newId('podb');
    const a = env.newId('a');
    const b = env.newId('b');
    await runInPod(env, podA, a, `${BOOT_ID}; exec sleep 100000`, path.join(logDir, 'a.log'));
    await runInPod(env, podB, b, `${BOOT_ID}; exec sleep 100000`, path.join(logDir, 'b.log'));
    const pids = await taskPids(containerd);
    assert.notEqual(pids.get(a), pids.get(b), 'two pods share a VM');
    assert.deepEqual(vmmProcesses(containerd).sort(), [pids.get(a), pids.get(b)].sort());
    const bootA = (await waitForFileMatch(path.join(logDir, 'a.log'), /[0-9a-f-]{36}/, 10_000)).trim();
    const bootB = (await waitForFileMatch(path.join(logDir, 'b.log'), /[0-9a-f-]{36}/, 10_000)).trim();
    assert.notEqual(bootA, bootB);
    await killAndRemove(containerd, a);
    await killAndRemove(containerd, b);
  });

  test('shim daemon killed -9 under a pod: delete tears the pod VM down from disk state', 240_000, async (env) => {
    if (!env.vm) return;
    const { containerd } = env;
    const pod = env.newId('pod');
    const first = env.newId('first');
    const second = env.newId('second');
    await runInPod(env, pod, first, 'exec sleep 100000', path.join(logDir, 'first.log'));
    await runInPod(env, pod, second, 'exec sleep 100000', path.join(logDir, 'second.log'));
    const stateFile = (id: string): string => stateFileOf(containerd, id);
    const states = [first, second].map((id) => stateOf(containerd, id));
    assert.equal(states[0]!.shimPid, states[1]!.shimPid, 'one shim daemon per pod');
    assert.equal(states[0]!.vm?.vmm.pid, states[1]!.vm?.vmm.pid, 'both state files record the pod VM');
    const vmm = states[0]!.vm!.vmm.pid;
    assert.deepEqual(vmmProcesses(containerd), [vmm]);

    process.kill(states[0]!.shimPid, 'SIGKILL');
    // The VMM dies with its shim at once (the exec wrapper's parent-death signal); containerd
    // sees the connection drop and runs `containerd-shim-smolvm-v1 delete` per task, a moment
    // later: wait for the state files too.
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      const pids = await taskPids(containerd);
      const stateLeft = [first, second].some((id) => fs.existsSync(stateFile(id)));
      if (!pids.has(first) && !pids.has(second) && vmmProcesses(containerd).length === 0 && !stateLeft) break;
      await sleep(200);
    }
    assert.deepEqual(vmmProcesses(containerd), [], 'the pod VM survived its shim');
    for (const id of [first, second]) {
      assert.ok(!fs.existsSync(stateFile(id)), `state file of ${id} left behind`);
      const left = await taskStatus(containerd, id);
      if (left) await containerd.ctr(['tasks', 'rm', '-f', id], { timeoutMs: 30_000 });
      await containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });
    }
  });
});
