// A SIGTERM that follows a Start by about a millisecond (kubelet's StopContainer right after
// StartContainer, critest's "stopping container") must reach the process once it runs, as under
// runc. The container's init is PID 1 of its pid namespace: the kernel drops a signal it has no
// handler for, and in a VM a program installs its handlers a while after its exec (cold page
// cache, emulated CPU), so without the agent's signal hold the SIGTERM was lost and only the
// SIGKILL after the grace period stopped the container. Through containerd's Tasks API (the
// CRI plugin's path; ctr is too slow to race the start), 50 times each: an init that traps
// SIGTERM a little after its exec, critest's default command (busybox `top`, which catches
// SIGTERM and exits 143), and an exec that traps it.
// runc gives no such promise: its start answers before the execve, and a SIGTERM that beats the
// program's handler is dropped there too (measured here: lost within the first 4 of 50 rounds
// with either command), so the init tests are for VM runtimes; the exec one runs on both. An
// exec is no namespace init, so the kernel never dropped its signals: that test passed before
// the fix too and guards the path.
import * as assert from 'node:assert/strict';
import { describeResult } from './harness/exec';
import { describeConformance, type ConformanceEnv } from './harness/suite';
import { TasksClient } from './harness/tasks-rpc';
import { waitForStatus } from './harness/tasks';
import { skipBecause } from '../test/helpers/skip';

const SIGTERM = 15;
const SIGKILL = 9;
const ROUNDS = 50;
/** Bound for the exit after the SIGTERM: far below kubelet's 30 s default grace period (measured:
 *  well under a second per round on tcg, see the log line of each test). */
const EXIT_BOUND_MS = 15_000;
/** Traps SIGTERM once the shell has started: a handler installed a little after the exec. */
const TRAP_TERM = ['sh', '-c', 'trap "exit 42" TERM; while :; do sleep 0.1; done'];
/** critest's DefaultLinuxContainerCommand is `top` from a busybox image whose applets are
 *  hard links: `busybox top` runs the same applet (the test image links fewer applets). */
const CRITEST_TOP = ['busybox', 'top'];

interface RoundTimes {
  readonly createMs: number;
  readonly exitMs: number;
}

function summary(label: string, rounds: readonly RoundTimes[], totalMs: number): string {
  const exits = rounds.map((r) => r.exitMs).sort((a, b) => a - b);
  const creates = rounds.map((r) => r.createMs).sort((a, b) => a - b);
  const median = (xs: number[]): number => xs[Math.floor(xs.length / 2)] ?? 0;
  return `${label}: ${rounds.length} rounds in ${(totalMs / 1000).toFixed(1)} s; kill→exit median ${median(exits)} ms, ` +
    `max ${exits[exits.length - 1] ?? 0} ms; create median ${median(creates)} ms`;
}

/** ROUNDS times: a container running `command`, its task Created, Started and sent SIGTERM at
 *  once; it must exit `expected` in time. One container per round: kubelet never reuses an id
 *  either (a Create for the id of a task just deleted can meet containerd still cleaning up
 *  the previous shim). */
async function stopInitRightAfterStart(env: ConformanceEnv, label: string, command: readonly string[], expected: number): Promise<void> {
  const { containerd } = env;
  const tasks = new TasksClient(containerd);
  const rounds: RoundTimes[] = [];
  const began = Date.now();
  try {
    for (let round = 1; round <= ROUNDS; round++) {
      const id = env.newId(label);
      const made = await containerd.ctr(['containers', 'create', '--runtime', env.runtime, '--', env.image.ref, id, ...command], { timeoutMs: 60_000 });
      assert.equal(made.exitCode, 0, describeResult(made));
      const createdAt = Date.now();
      await tasks.create(id);
      const startAt = Date.now();
      await tasks.start(id);
      const startedAt = Date.now();
      await tasks.kill(id, SIGTERM);
      const killedAt = Date.now();
      const exit = await tasks.wait(id, '', EXIT_BOUND_MS).catch((err: Error) => {
        throw new Error(`round ${round}: the SIGTERM sent as soon as Start answered (Start took ${startedAt - startAt} ms, ` +
          `Kill ${killedAt - startedAt} ms) did not end the task within ${EXIT_BOUND_MS} ms: ${err.message}`);
      });
      rounds.push({ createMs: startAt - createdAt, exitMs: Date.now() - killedAt });
      assert.equal(exit.exitStatus, expected, `round ${round}: exit status ${exit.exitStatus}, want ${expected} (the SIGTERM's own outcome; 137 would be a SIGKILL)`);
      await tasks.delete(id);
      await containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 60_000 });
    }
  } finally {
    tasks.close();
  }
  console.log(`      ${summary(`${label} [${command.join(' ')}]`, rounds, Date.now() - began)}`);
}

describeConformance('a signal right after start', (test) => {
  test(`init that traps SIGTERM after its exec: SIGTERM right after Start ends it with the trap's status, ${ROUNDS} times`, 900_000, async (env, ctx) => {
    if (!env.vm) skipBecause(ctx, { notHere: 'runc drops a SIGTERM that beats the handler (see the top of the file)' });
    await stopInitRightAfterStart(env, 'trap', TRAP_TERM, 42);
  });

  test(`critest's \`top\`: SIGTERM right after Start ends it (143), ${ROUNDS} times`, 900_000, async (env, ctx) => {
    if (!env.vm) skipBecause(ctx, { notHere: 'runc drops a SIGTERM that beats the handler (see the top of the file)' });
    await stopInitRightAfterStart(env, 'top', CRITEST_TOP, 128 + SIGTERM);
  });

  // Before Start, runc's init waits for its start in a Go process that a SIGTERM ends: a task
  // killed while created stops and is never started. Calibrated against runc, whose Go init,
  // unable to die of the signal as its namespace's PID 1, exits 2; smolvm reports 128 + 15.
  test('SIGTERM to a created task that was never started ends it, as under runc', 120_000, async (env) => {
    const { containerd } = env;
    const id = env.newId('created');
    const made = await containerd.ctr(['containers', 'create', '--runtime', env.runtime, '--', env.image.ref, id, 'sleep', '600'], { timeoutMs: 60_000 });
    assert.equal(made.exitCode, 0, describeResult(made));
    const tasks = new TasksClient(containerd);
    try {
      await tasks.create(id);
      await tasks.kill(id, SIGTERM);
      const exit = await tasks.wait(id, '', EXIT_BOUND_MS);
      const expected = env.vm ? 128 + SIGTERM : 2;
      assert.equal(exit.exitStatus, expected, `exit status ${exit.exitStatus}, want ${expected} (ended by the SIGTERM, not killed)`);
      await tasks.delete(id);
    } finally {
      tasks.close();
    }
    await containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 60_000 });
  });

  test(`exec that traps SIGTERM: SIGTERM right after its Start ends it (42 or 143), ${ROUNDS} times`, 600_000, async (env) => {
    const { containerd } = env;
    const id = env.newId('exec');
    const started = await env.run(id, ['sleep', '600'], { keep: true, ctrFlags: ['-d'], timeoutMs: 60_000 });
    assert.equal(started.exitCode, 0, describeResult(started));
    assert.equal(await waitForStatus(containerd, id, 'RUNNING', 30_000), 'RUNNING');
    const tasks = new TasksClient(containerd);
    const rounds: RoundTimes[] = [];
    const began = Date.now();
    let trapped = 0;
    try {
      for (let round = 1; round <= ROUNDS; round++) {
        const execId = `term-${round}`;
        const createdAt = Date.now();
        await tasks.exec(id, execId, TRAP_TERM);
        const startAt = Date.now();
        await tasks.start(id, execId);
        const startedAt = Date.now();
        await tasks.kill(id, SIGTERM, execId);
        const killedAt = Date.now();
        const exit = await tasks.wait(id, execId, EXIT_BOUND_MS).catch((err: Error) => {
          throw new Error(`round ${round}: the SIGTERM sent as soon as the exec's Start answered (Start took ` +
            `${startedAt - startAt} ms, Kill ${killedAt - startedAt} ms) did not end it within ${EXIT_BOUND_MS} ms: ${err.message}`);
        });
        rounds.push({ createMs: startAt - createdAt, exitMs: Date.now() - killedAt });
        // 42: the trap ran; 143: the SIGTERM came before the trap, and the default action (an
        // exec is no namespace init) ended it. Either way the signal arrived.
        assert.ok(exit.exitStatus === 42 || exit.exitStatus === 128 + SIGTERM, `round ${round}: exit status ${exit.exitStatus}, want 42 or 143`);
        if (exit.exitStatus === 42) trapped++;
        await tasks.deleteProcess(id, execId);
      }
      console.log(`      ${summary(`exec [${TRAP_TERM.join(' ')}]`, rounds, Date.now() - began)}; ${trapped} trapped (42), ${ROUNDS - trapped} ended by the default action (143)`);
      await tasks.kill(id, SIGKILL);
      await tasks.wait(id, '', 30_000);
    } finally {
      tasks.close();
    }
    await containerd.ctrChecked(['tasks', 'rm', id], { timeoutMs: 30_000 });
    await containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });
  });
});
