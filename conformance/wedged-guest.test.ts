// A wedged guest must not wedge the shim, through real containerd + ctr and a real guest frozen
// in the middle of a running container: with QMP `stop` sent behind the shim's back (tcg), and
// with SIGSTOP of the VMM process. `ctr task kill`, `ctr task exec` and `ctr task rm -f` each
// answer within the call's deadline (agent/deadlines.ts at the configured
// agent_deadline_scale) plus a second; the VM is then declared lost: every process of every
// container in it (a pod VM holds several) reports exit 137 with a log line naming the call
// that timed out, the VMM is gone, and the suite's leak check finds nothing left.
// Pause is not a wedge: a VM paused on purpose for longer than the deadlines, with a call to
// the guest (CloseIO) waiting meanwhile, resumes healthy; a SIGKILL to a paused task works as
// before.
//
// QMP: QEMU's monitor serves one client at a time, and the shim connects only for the length
// of one command (pause, resume, a hot-plug), never while a container just runs. So the test
// connects to the VM's own monitor socket itself, between the shim's commands (a connection
// made during one would wait in the listen backlog for it): no second monitor, and no test-only
// switch in the QEMU command line.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import { agentCallDeadlineMs, type DeadlineCall } from '../shim/src/agent/deadlines';
import { qmpExecute } from '../shim/src/vm/backends/qmp';
import type { ContainerState } from '../shim/src/state/store';
import type { PrivateContainerd } from './harness/containerd';
import { EventWatcher, type ObservedEvent } from './harness/events';
import { type RunResult, describeResult, sleep } from './harness/exec';
import { describeConformance, type ConformanceEnv } from './harness/suite';
import { taskStatus, waitForStatus } from './harness/tasks';
import { skipBecause } from '../test/helpers/skip';
import { waitPidGone } from './harness/host';
import { stateOf } from './harness/state';

/** Short enough to keep the test quick, long enough for a healthy guest under load: every
 *  deadline is still over 50 times the slowest round trip bench/agent-rtt.ts measured. */
const DEADLINE_SCALE = 0.3;
/** What the issue allows on top of the deadline: ctr's own work and containerd's. */
const ANSWER_SLACK_MS = 1_000;
/** From the deadline to the TaskExit events of every process in the VM, and the VMM gone. */
const LOSS_REPORT_BOUND_MS = 10_000;
const SANDBOX_ID = 'io.kubernetes.cri.sandbox-id';

const deadline = (call: DeadlineCall): number => agentCallDeadlineMs(call, DEADLINE_SCALE);


/** The container's state file (smolvm's own record of its VM). */
function vmOf(containerd: PrivateContainerd, id: string): NonNullable<ContainerState['vm']> {
  const vm = stateOf(containerd, id).vm;
  if (!vm) throw new Error(`the state file of ${id} names no VM`);
  return vm;
}

/** TaskExit events of one container, by process id (the container id for its init). */
function exitsOf(watcher: EventWatcher, id: string): Map<string, ObservedEvent> {
  const exits = new Map<string, ObservedEvent>();
  for (const e of watcher.taskEventsFor(id)) if (e.topic === '/tasks/exit') exits.set(String(e.payload?.id ?? ''), e);
  return exits;
}

interface Freeze {
  readonly name: string;
  /** Skips (returns false) where this way of freezing does not apply. */
  applies(env: ConformanceEnv, vm: NonNullable<ContainerState['vm']>): boolean;
  freeze(vm: NonNullable<ContainerState['vm']>): Promise<void>;
  /** Undoes what is left of the freeze when a test failed half-way (the shim kills the VMM otherwise). */
  thaw(vm: NonNullable<ContainerState['vm']>): void;
}

const QMP_STOP: Freeze = {
  name: 'QMP stop behind the shim\'s back (tcg)',
  applies: (_env, vm) => vm.backend === 'tcg' && typeof vm.sockets.qmp === 'string',
  async freeze(vm) {
    await qmpExecute(vm.sockets.qmp!, 'stop', undefined, 10_000);
    const status = await qmpExecute(vm.sockets.qmp!, 'query-status', undefined, 10_000) as { status?: string };
    assert.equal(status.status, 'paused', 'QMP stop did not stop the VM');
  },
  thaw: () => undefined,
};

const SIGSTOP: Freeze = {
  name: 'SIGSTOP of the VMM',
  applies: () => true,
  async freeze(vm) {
    process.kill(vm.vmm.pid, 'SIGSTOP');
    // The stop takes effect when the kernel next handles the VMM's signals: wait for it.
    const stopped = (): boolean => {
      const stat = fs.readFileSync(`/proc/${vm.vmm.pid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2).startsWith('T ');
    };
    const end = Date.now() + 5_000;
    while (!stopped() && Date.now() < end) await sleep(10);
    assert.ok(stopped(), 'the VMM is not stopped');
  },
  thaw(vm) {
    try {
      process.kill(vm.vmm.pid, 'SIGCONT');
    } catch {
      // gone already
    }
  },
};

/**
 * containerd's Tasks/CloseIO (stdin) for the init process, over containerd's gRPC socket
 * (ctr 1.6 never sends it). CloseIORequest{container_id=1, exec_id=2, stdin=3}.
 */
function closeStdin(containerd: PrivateContainerd, id: string): Promise<{ ms: number; error: string | null }> {
  const request = Buffer.from(new BinaryWriter().uint32(10).string(id).uint32(24).bool(true).finish());
  const client = new grpc.Client(`unix://${containerd.address}`, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set('containerd-namespace', containerd.namespace);
  const started = Date.now();
  return new Promise<{ ms: number; error: string | null }>((resolve) => {
    client.makeUnaryRequest('/containerd.services.tasks.v1.Tasks/CloseIO', (b: Buffer) => b, (b: Buffer) => b, request, metadata,
      { deadline: Date.now() + 120_000 },
      (err: grpc.ServiceError | null) => resolve({ ms: Date.now() - started, error: err ? `${err.code}: ${err.details}` : null }));
  }).finally(() => client.close());
}

describeConformance('a wedged guest does not wedge the shim', (test) => {
  let dir = '';
  let config = '';
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-wedged-'));
    config = path.join(dir, 'config.toml');
    fs.writeFileSync(config, `agent_deadline_scale = ${DEADLINE_SCALE}\n`);
  });
  afterEach(() => { fs.rmSync(dir, { recursive: true, force: true }); });

  /** `ctr run -d … sleep 600` with the test's config (and a pod annotation when given). */
  async function runSleeper(env: ConformanceEnv, id: string, pod?: string): Promise<void> {
    const flags = ['-d', '--runtime-config-path', config, ...(pod ? ['--annotation', `${SANDBOX_ID}=${pod}`] : [])];
    const started = await env.run(id, ['sleep', '600'], { keep: true, ctrFlags: flags, timeoutMs: 120_000 });
    assert.equal(started.exitCode, 0, describeResult(started));
    assert.equal(await waitForStatus(env.containerd, id, 'RUNNING', 30_000), 'RUNNING');
  }

  function assertAnsweredInTime(result: RunResult, call: DeadlineCall, what: string): void {
    const bound = deadline(call) + ANSWER_SLACK_MS;
    assert.ok(!result.timedOut, `${what}: no answer\n${describeResult(result)}`);
    assert.ok(result.durationMs <= bound, `${what}: answered after ${Math.round(result.durationMs)} ms; the ${call} deadline is ${deadline(call)} ms (+${ANSWER_SLACK_MS} ms allowed)\n${describeResult(result)}`);
  }

  /** Every process listed reported 137, each with a log line naming the call; the VMM is gone. */
  async function assertLost(
    env: ConformanceEnv, watcher: EventWatcher, logOffset: number, vmmPid: number, method: string, processes: Array<[string, string]>,
  ): Promise<void> {
    const all = await watcher.waitFor(() => processes.every(([id, proc]) => exitsOf(watcher, id).has(proc)), LOSS_REPORT_BOUND_MS);
    for (const [id, proc] of processes) {
      const exit = exitsOf(watcher, id).get(proc);
      assert.ok(all && exit, `no TaskExit for ${id}/${proc} within ${LOSS_REPORT_BOUND_MS} ms`);
      assert.equal(exit.payload?.exit_status, 137, `TaskExit of ${id}/${proc}: ${exit.raw}`);
    }
    assert.ok(await waitPidGone(vmmPid, LOSS_REPORT_BOUND_MS), `the VMM (pid ${vmmPid}) still runs`);
    const log = env.containerd.logSince(logOffset);
    for (const [id, proc] of processes) {
      const who = proc === id ? `container ${id}` : `container ${id} exec ${proc}`;
      const line = log.split('\n').find((l) => l.includes(`msg="${who}: the VM is gone`));
      assert.ok(line, `no log line for ${who}:\n${log.split('\n').filter((l) => l.includes(id)).slice(-20).join('\n')}`);
      assert.match(line, new RegExp(`no answer from the guest agent to ${method} within ${deadline(methodCall(method))} ms .*declared lost.*reporting exit status 137`), line);
    }
  }

  const methodCall = (method: string): DeadlineCall => ({ SignalProcess: 'signalProcess', ExecProcess: 'execProcess' } as Record<string, DeadlineCall>)[method]!;

  async function removeStopped(containerd: PrivateContainerd, id: string): Promise<void> {
    assert.equal(await waitForStatus(containerd, id, 'STOPPED', 30_000), 'STOPPED');
    const removed = await containerd.ctr(['tasks', 'rm', id], { timeoutMs: 30_000 });
    assert.equal(removed.exitCode, 0, describeResult(removed));
    await containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });
  }

  for (const how of [QMP_STOP, SIGSTOP]) {
    test(`${how.name}: ctr task kill, ctr task exec and ctr task rm -f each answer within the deadline + 1 s; 137 for all`, 420_000, async (env, ctx) => {
      if (!env.vm) skipBecause(ctx, { notHere: 'runc has no guest to wedge' });
      const { containerd } = env;
      const watcher = await EventWatcher.start(containerd);
      const frozen: Array<NonNullable<ContainerState['vm']>> = [];
      try {
        // kill (SIGTERM) of one container of a pod: the pod's VM is lost, both containers end.
        const pod = `wedged-pod-${process.pid}`;
        const [a, b] = [env.newId('wedge-kill-a'), env.newId('wedge-kill-b')];
        await runSleeper(env, a, pod);
        await runSleeper(env, b, pod);
        let vm = vmOf(containerd, a);
        assert.equal(vmOf(containerd, b).vmm.pid, vm.vmm.pid, 'the pod\'s containers do not share a VM');
        if (!how.applies(env, vm)) skipBecause(ctx, { notHere: `this way of freezing a guest does not apply to a ${vm.backend} VM` });
        let offset = containerd.logOffset();
        frozen.push(vm);
        await how.freeze(vm);
        const kill = await containerd.ctr(['tasks', 'kill', a], { timeoutMs: 60_000 });
        assertAnsweredInTime(kill, 'signalProcess', 'ctr task kill');
        assert.notEqual(kill.exitCode, 0, `a kill the guest never took must fail\n${describeResult(kill)}`);
        assert.match(kill.stderr.toString(), /container \S+: signal 15: no answer from the guest agent to SignalProcess within \d+ ms \(its deadline\).*deadline exceeded/, describeResult(kill));
        await assertLost(env, watcher, offset, vm.vmm.pid, 'SignalProcess', [[a, a], [b, b]]);
        await removeStopped(containerd, a);
        await removeStopped(containerd, b);

        // exec: the Exec that the guest never answers fails at its deadline; the VM is lost.
        const c = env.newId('wedge-exec');
        await runSleeper(env, c);
        vm = vmOf(containerd, c);
        offset = containerd.logOffset();
        frozen.push(vm);
        await how.freeze(vm);
        const exec = await containerd.ctr(['tasks', 'exec', '--exec-id', 'probe', c, 'echo', 'hi'], { timeoutMs: 60_000 });
        assertAnsweredInTime(exec, 'execProcess', 'ctr task exec');
        assert.notEqual(exec.exitCode, 0, describeResult(exec));
        assert.match(exec.stderr.toString(), /exec probe: .*no answer from the guest agent to ExecProcess within \d+ ms \(its deadline\).*deadline exceeded/, describeResult(exec));
        await assertLost(env, watcher, offset, vm.vmm.pid, 'ExecProcess', [[c, c]]);
        await removeStopped(containerd, c);

        // rm -f: its SIGKILL is not answered, the VM is given up (which is what a SIGKILL asks
        // for), the exit (137) follows and the task is deleted, all within the kill deadline.
        const d = env.newId('wedge-rmf');
        await runSleeper(env, d);
        vm = vmOf(containerd, d);
        offset = containerd.logOffset();
        frozen.push(vm);
        await how.freeze(vm);
        const rm = await containerd.ctr(['tasks', 'rm', '-f', d], { timeoutMs: 60_000 });
        assertAnsweredInTime(rm, 'signalProcess', 'ctr task rm -f');
        // 137: ctr passes the task's exit status on (as in pause.test.ts).
        assert.ok(rm.exitCode === 0 || rm.exitCode === 137, describeResult(rm));
        assert.equal(await taskStatus(containerd, d), undefined, 'the task is still listed after rm -f');
        const exit = exitsOf(watcher, d).get(d);
        assert.equal(exit?.payload?.exit_status, 137, `TaskExit: ${exit?.raw}`);
        assert.ok(await watcher.waitFor((e) => e.topic === '/tasks/delete' && e.payload?.container_id === d, 10_000), 'no /tasks/delete');
        assert.ok(await waitPidGone(vm.vmm.pid, LOSS_REPORT_BOUND_MS), `the VMM (pid ${vm.vmm.pid}) still runs`);
        const line = containerd.logSince(offset).split('\n').find((l) => l.includes(`msg="container ${d}: the VM is gone`));
        assert.ok(line && /to SignalProcess within \d+ ms .*declared lost/.test(line), `no log line naming the call: ${line}`);
        await containerd.ctrChecked(['containers', 'rm', d], { timeoutMs: 30_000 });
        console.log(`      ${how.name}: ctr task kill ${Math.round(kill.durationMs)} ms (deadline ${deadline('signalProcess')}), ` +
          `ctr task exec ${Math.round(exec.durationMs)} ms (deadline ${deadline('execProcess')}), ` +
          `ctr task rm -f ${Math.round(rm.durationMs)} ms (deadline ${deadline('signalProcess')})`);
      } finally {
        for (const vm of frozen) how.thaw(vm);
        watcher.stop();
      }
    });
  }

  test('pause is not a wedge: paused past every deadline with a call waiting, it resumes healthy; SIGKILL of a paused task as before', 300_000, async (env, ctx) => {
    if (!env.vm) skipBecause(ctx, { notHere: 'runc has no VM to pause' });
    const { containerd } = env;
    const id = env.newId('wedge-pause');
    const log = path.join(dir, 'counter.log');
    const started = await env.run(id, ['sh', '-c', 'i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done'], {
      keep: true, timeoutMs: 120_000, ctrFlags: ['-d', '--runtime-config-path', config, '--log-uri', `file://${log}`],
    });
    assert.equal(started.exitCode, 0, describeResult(started));
    assert.equal(await waitForStatus(containerd, id, 'RUNNING', 30_000), 'RUNNING');
    const size = (): number => (fs.existsSync(log) ? fs.statSync(log).size : 0);
    const grows = async (beyond: number): Promise<boolean> => {
      const end = Date.now() + 20_000;
      while (Date.now() < end) {
        if (size() > beyond) return true;
        await sleep(100);
      }
      return false;
    };
    assert.ok(await grows(0), 'the counter does not run');
    const offset = containerd.logOffset();

    await containerd.ctrChecked(['tasks', 'pause', id], { timeoutMs: 30_000 });
    // A call that needs the guest, sent while it is paused: it waits for the resume.
    const closing = closeStdin(containerd, id);
    let closeAnswered = false;
    void closing.then(() => { closeAnswered = true; });
    const pausedFor = 3 * Math.max(deadline('closeStdin'), deadline('signalProcess'));
    await sleep(pausedFor);
    assert.equal(await taskStatus(containerd, id), 'PAUSED', `the paused task did not stay paused for ${pausedFor} ms`);
    assert.equal(closeAnswered, false, 'CloseIO answered while the VM was paused');
    const frozenAt = size();
    const resumed = await containerd.ctr(['tasks', 'resume', id], { timeoutMs: 30_000 });
    assert.equal(resumed.exitCode, 0, describeResult(resumed));
    const close = await closing;
    assert.equal(close.error, null, `CloseIO held during the pause failed: ${close.error}`);
    assert.equal(await taskStatus(containerd, id), 'RUNNING');
    assert.ok(await grows(frozenAt), 'the counter did not go on after resume');
    const stats = await containerd.ctr(['tasks', 'metrics', id], { timeoutMs: 30_000 });
    assert.equal(stats.exitCode, 0, `the resumed guest does not answer: ${describeResult(stats)}`);

    // Paused again past the kill deadline: SIGKILL still resumes it and kills the task.
    await containerd.ctrChecked(['tasks', 'pause', id], { timeoutMs: 30_000 });
    await sleep(2 * deadline('signalProcess'));
    const killed = await containerd.ctr(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 30_000 });
    assert.equal(killed.exitCode, 0, describeResult(killed));
    assert.equal(await waitForStatus(containerd, id, 'STOPPED', 30_000), 'STOPPED');
    const rm = await containerd.ctr(['tasks', 'rm', id], { timeoutMs: 30_000 });
    assert.equal(rm.exitCode, 0, describeResult(rm));
    assert.match(rm.stderr.toString(), /non-zero exit code 137\b/, describeResult(rm));
    await containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });
    const lost = containerd.logSince(offset).split('\n').filter((l) => /vm lost|declared lost|deadline exceeded/.test(l));
    assert.deepEqual(lost, [], 'a deadline fired on a VM paused on purpose');
  });
});
