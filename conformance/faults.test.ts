// Bad input and faults through real containerd + ctr: a malformed config.json (`ctr run
// --config`), an unknown mount type, a missing rootfs and an oversized ttrpc frame each get a
// clear error naming what is wrong, fast; a guest kernel panic and a VMM killed from outside end
// the task (and its execs) with TaskExit 137 and a log line that says why; the shim daemon
// killed -9 under binary:// loggers leaves neither VM nor logger behind. `ctr task ps` names the
// exec each process belongs to. Every test ends with the suite's leak check (no task, shim,
// VMM, mount, FIFO or state file left).
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CTR_BINARY, type PrivateContainerd, RUN_MARKER_ENV, lines } from './harness/containerd';
import { EventWatcher, type ObservedEvent } from './harness/events';
import { type RunResult, describeResult, runCommand, sleep } from './harness/exec';
import { findMarkedProcesses, pidAlive, waitPidGone } from './harness/host';
import { describeConformance } from './harness/suite';
import { waitForStatus } from './harness/tasks';
import { makeBusyboxRootfs } from '../test/helpers/rootfs';
import { skipBecause } from '../test/helpers/skip';

/** Bad input is refused before any VM boots: this fast. */
const BAD_INPUT_BOUND_MS = 10_000;
/** From a VMM's death to the TaskExit events of every process in it. */
const LOSS_REPORT_BOUND_MS = 10_000;
/** containerd's ttrpc limit (and ours): a message above it is refused. */
const MAX_TTRPC_MESSAGE = 4 << 20;
/** Linux's limit on one argv string (MAX_ARG_STRLEN): big payloads go in many arguments. */
const ARG_CHUNK = 100_000;


async function waitForFile(file: string, boundMs: number): Promise<string> {
  const deadline = Date.now() + boundMs;
  for (;;) {
    try {
      const text = fs.readFileSync(file, 'utf8');
      if (text.trim().length > 0) return text;
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`${file} did not appear within ${boundMs} ms`);
    await sleep(50);
  }
}

/** The task's pid as `ctr task ls` shows it (for smolvm: the VMM's). */
async function taskPid(containerd: PrivateContainerd, id: string): Promise<number> {
  const listing = await containerd.ctrChecked(['tasks', 'ls'], { timeoutMs: 15_000 });
  for (const row of lines(listing.stdout).slice(1)) {
    const [taskId, pid] = row.split(/\s+/);
    if (taskId === id) return Number(pid);
  }
  throw new Error(`task ${id} not listed:\n${listing.stdout.toString()}`);
}

async function waitTaskGone(containerd: PrivateContainerd, id: string, boundMs: number): Promise<boolean> {
  const deadline = Date.now() + boundMs;
  while (Date.now() < deadline) {
    const listing = await containerd.ctrChecked(['tasks', 'ls', '-q'], { timeoutMs: 15_000 });
    if (!lines(listing.stdout).includes(id)) return true;
    await sleep(200);
  }
  return false;
}

/** The shim daemon serving `id` (smolvm's or runc's): a process of this containerd named after it. */
function shimDaemonPid(containerd: PrivateContainerd, id: string): number {
  const daemons = findMarkedProcesses(RUN_MARKER_ENV, containerd.marker).filter((p) =>
    /containerd-shim-/.test(p.cmdline) && ` ${p.cmdline} `.includes(` -id ${id} `) && !/ (start|delete)$/.test(p.cmdline));
  if (daemons.length !== 1) throw new Error(`expected one shim daemon for ${id}, found: ${JSON.stringify(daemons)}`);
  return daemons[0]!.pid;
}

/** TaskExit events of one container, by process id (the container id for its init). */
function exitsOf(watcher: EventWatcher, id: string): Map<string, ObservedEvent> {
  const exits = new Map<string, ObservedEvent>();
  for (const e of watcher.taskEventsFor(id)) if (e.topic === '/tasks/exit') exits.set(String(e.payload?.id ?? ''), e);
  return exits;
}

function assertRefused(result: RunResult, pattern: RegExp, what: string): void {
  assert.ok(!result.timedOut, `${what}: no answer\n${describeResult(result)}`);
  assert.notEqual(result.exitCode, 0, `${what} must fail\n${describeResult(result)}`);
  assert.ok(result.durationMs <= BAD_INPUT_BOUND_MS, `${what}: took ${result.durationMs} ms (bound ${BAD_INPUT_BOUND_MS} ms)\n${describeResult(result)}`);
  assert.match(result.stderr.toString(), pattern, `${what}: the error must say what is wrong\n${describeResult(result)}`);
}

/**
 * A logging binary that closes fd 5 (ready), copies fd 3/4 into files, records its pid and then
 * stays, even after EOF, until it is signalled: only whoever spawned it can end it.
 */
function writeStubbornLogger(dir: string): string {
  const file = path.join(dir, 'stubborn-logger.sh');
  fs.writeFileSync(file, [
    '#!/bin/sh',
    'out="$(dirname "$0")/$CONTAINER_ID"',
    'mkdir -p "$out"',
    'exec 5>&-',
    'cat <&3 > "$out/stdout" &',
    'cat <&4 > "$out/stderr" &',
    'exec 3<&- 4<&-',
    'echo $$ > "$out/pid"',
    'exec sleep 600',
    '',
  ].join('\n'), { mode: 0o755 });
  return file;
}

describeConformance('bad input and faults', (test) => {
  let dir = '';
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-faults-')); });
  afterEach(() => { fs.rmSync(dir, { recursive: true, force: true }); });

  test('a malformed config.json (ctr run --config) is refused, naming the field', 90_000, async (env) => {
    const { containerd } = env;
    const rootfs = makeBusyboxRootfs(dir);
    const base = JSON.parse((await containerd.ctrChecked(['oci', 'spec'], { timeoutMs: 15_000 })).stdout.toString()) as {
      process: Record<string, unknown>; root: { path: string };
    };
    base.root.path = rootfs;
    base.process.args = ['true'];
    const variant = (name: string, edit: (spec: typeof base) => void): string => {
      const spec = JSON.parse(JSON.stringify(base)) as typeof base;
      edit(spec);
      const file = path.join(dir, `${name}.json`);
      fs.writeFileSync(file, JSON.stringify(spec));
      return file;
    };
    const cases: Array<{ what: string; file: string; error: RegExp }> = [
      { what: 'a relative process.cwd', file: variant('cwd', (s) => { s.process.cwd = 'relative/dir'; }), error: env.vm ? /process\.cwd must be an absolute path/ : /cwd/i },
      { what: 'an empty process.args', file: variant('args', (s) => { s.process.args = []; }), error: env.vm ? /process\.args must name the program/ : /args/i },
      { what: 'no process', file: variant('noproc', (s) => { delete (s as { process?: unknown }).process; }), error: /process/i },
    ];
    // containerd writes config.json itself, from the spec ctr sends: JSON that does not parse
    // never reaches a runtime (ctr refuses it); the shim's own parse error is covered by
    // test/integration/shim.test.ts.
    const broken = path.join(dir, 'broken.json');
    fs.writeFileSync(broken, '{"ociVersion": "1.0.2", "process": {"args": [');
    const syntax = await containerd.ctr(['run', '--rm', '--runtime', env.runtime, '--config', broken, env.newId('badjson')], { timeoutMs: 30_000 });
    assertRefused(syntax, /JSON/, 'config JSON that does not parse');

    for (const c of cases) {
      const id = env.newId('badspec');
      const result = await containerd.ctr(['run', '--rm', '--runtime', env.runtime, '--config', c.file, id], { timeoutMs: 30_000 });
      assertRefused(result, c.error, c.what);
      if (env.vm) assert.match(result.stderr.toString(), new RegExp(`container ${id}\\b`), `the error names the container\n${describeResult(result)}`);
    }
    // ctr run --rm does not remove a container whose task never got created.
    await containerd.removeAllContainers();
  });

  test('an unknown mount type is refused, naming the mount and the type', 60_000, async (env) => {
    const id = env.newId('nfs');
    const result = await env.run(id, ['true'], { ctrFlags: ['--mount', 'type=nfs,src=fileserver:/export,dst=/mnt/remote,options=ro'], timeoutMs: 30_000 });
    assertRefused(result, env.vm ? /mount \/mnt\/remote .*type "nfs" cannot be served/ : /nfs|mnt\/remote/, 'an nfs mount');
    await env.containerd.removeAllContainers();
  });

  test('a missing rootfs (ctr run --rootfs) is refused, naming root.path', 60_000, async (env) => {
    const missing = path.join(dir, 'no-such-rootfs');
    const result = await env.containerd.ctr(['run', '--rm', '--runtime', env.runtime, '--rootfs', missing, env.newId('norootfs'), 'true'], { timeoutMs: 30_000 });
    assertRefused(result, env.vm ? new RegExp(`root\\.path .*${missing}.* is not a directory`) : /no-such-rootfs|rootfs/, 'a missing rootfs');
    await env.containerd.removeAllContainers();
  });

  test('an oversized frame (a > 4 MiB exec spec) is refused; the task keeps working', 120_000, async (env) => {
    const { containerd } = env;
    const id = env.newId('bigframe');
    const started = await env.run(id, ['sleep', '600'], { keep: true, ctrFlags: ['-d'] });
    assert.equal(started.exitCode, 0, describeResult(started));
    assert.equal(await waitForStatus(containerd, id, 'RUNNING', 30_000), 'RUNNING');

    // ~4.8 MB of arguments: a shell with a big stack limit passes them to ctr (each one below
    // MAX_ARG_STRLEN), ctr to containerd (gRPC takes 16 MiB), containerd to the shim (ttrpc: 4 MiB).
    const chunks = Math.ceil((MAX_TTRPC_MESSAGE + 600_000) / ARG_CHUNK);
    const argsFile = path.join(dir, 'args');
    fs.writeFileSync(argsFile, Array.from({ length: chunks }, () => 'x'.repeat(ARG_CHUNK)).join(' '));
    const ctrArgs = ['--address', containerd.address, '-n', containerd.namespace, 'tasks', 'exec', '--exec-id', 'huge', id, 'true'];
    const huge = await runCommand('sh', ['-c', `ulimit -s 262144 && exec ${CTR_BINARY} ${ctrArgs.join(' ')} $(cat "${argsFile}")`], { timeoutMs: 60_000 });
    assertRefused(huge, /message length \d+ exceed maximum message size of 4194304/, 'a 4.8 MB exec spec');

    const after = await containerd.ctr(['tasks', 'exec', '--exec-id', 'after', id, 'echo', 'still-here'], { timeoutMs: 60_000 });
    assert.equal(after.exitCode, 0, describeResult(after));
    assert.equal(after.stdout.toString(), 'still-here\n', describeResult(after));
    await containerd.ctrChecked(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 30_000 });
    assert.equal(await waitForStatus(containerd, id, 'STOPPED', 30_000), 'STOPPED');
    await containerd.ctr(['tasks', 'rm', id], { timeoutMs: 30_000 });
    await containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });
  });

  test('a guest kernel panic ends the task with 137 and the panic line in the log', 120_000, async (env, ctx) => {
    if (!env.vm) skipBecause(ctx, { notHere: "runc's containers share the host kernel" });
    // The guest kernel has no magic SysRq; a system-wide OOM with vm.panic_on_oom=1 panics it
    // as surely: a privileged container (writable /proc/sys, mount) fills a tmpfs larger than
    // any VM's memory.
    const watcher = await EventWatcher.start(env.containerd);
    try {
      const offset = env.containerd.logOffset();
      const id = env.newId('panic');
      const result = await env.run(id, ['sh', '-c',
        'echo 1 > /proc/sys/vm/panic_on_oom && mkdir -p /mnt/fill && mount -t tmpfs -o size=64g fill /mnt/fill && ' +
        'echo filling && dd if=/dev/zero of=/mnt/fill/zero bs=1M 2>/dev/null; echo survived'], {
        ctrFlags: ['--privileged'], timeoutMs: 90_000,
      });
      assert.equal(result.exitCode, 137, describeResult(result));
      assert.equal(result.stdout.toString(), 'filling\n', `the guest died before the shell went on\n${describeResult(result)}`);
      assert.ok(await watcher.waitFor((e) => e.topic === '/tasks/delete' && e.payload?.container_id === id, 30_000), 'no /tasks/delete');
      const exit = exitsOf(watcher, id).get(id);
      assert.equal(exit?.payload?.exit_status, 137, `TaskExit: ${exit?.raw}`);
      const log = env.containerd.logSince(offset);
      const line = log.split('\n').find((l) => l.includes(`container ${id}: the VM is gone`));
      assert.ok(line, `no log line about the lost VM of ${id}:\n${log.split('\n').filter((l) => l.includes(id)).slice(-20).join('\n')}`);
      assert.match(line, /the guest kernel panicked: \\"Kernel panic - not syncing: Out of memory/, line);
      assert.match(line, /reporting exit status 137/, line);
    } finally {
      watcher.stop();
    }
  });

  test('the VMM killed with SIGKILL from outside: TaskExit 137 for the task and its execs at once', 180_000, async (env, ctx) => {
    if (!env.vm) skipBecause(ctx, { notHere: 'runc has no VMM' });
    const { containerd } = env;
    const watcher = await EventWatcher.start(containerd);
    try {
      const id = env.newId('vmmkill');
      const started = await env.run(id, ['sleep', '600'], { keep: true, ctrFlags: ['-d'] });
      assert.equal(started.exitCode, 0, describeResult(started));
      assert.equal(await waitForStatus(containerd, id, 'RUNNING', 30_000), 'RUNNING');
      const detached = await containerd.ctr(['tasks', 'exec', '-d', '--exec-id', 'bg', id, 'sleep', '600'], { timeoutMs: 60_000 });
      assert.equal(detached.exitCode, 0, describeResult(detached));
      const attached = containerd.ctr(['tasks', 'exec', '--exec-id', 'fg', id, 'sleep', '600'], { timeoutMs: 120_000 });
      assert.ok(await watcher.waitFor((e) => e.topic === '/tasks/exec-started' && e.payload?.exec_id === 'fg', 30_000), 'exec fg did not start');

      // ctr task ps: every exec's process carries ProcessDetails{exec_id}, as with runc's shim.
      const ps = await containerd.ctrChecked(['tasks', 'ps', id], { timeoutMs: 15_000 });
      const rows = lines(ps.stdout).slice(1);
      assert.equal(rows.length, 3, `init + bg + fg\n${ps.stdout.toString()}`);
      for (const execId of ['bg', 'fg']) {
        assert.equal(rows.filter((r) => r.includes(`ProcessDetails{ExecID:${execId},`)).length, 1, `exec ${execId} in ctr task ps:\n${ps.stdout.toString()}`);
      }
      assert.equal(rows.filter((r) => /^\d+\s+-$/.test(r)).length, 1, `the init process has no info:\n${ps.stdout.toString()}`);

      const vmm = await taskPid(containerd, id);
      const offset = containerd.logOffset();
      const killedAt = Date.now();
      process.kill(vmm, 'SIGKILL');
      const all = await watcher.waitFor(() => exitsOf(watcher, id).size === 3, LOSS_REPORT_BOUND_MS);
      const exits = exitsOf(watcher, id);
      assert.ok(all, `TaskExit events within ${LOSS_REPORT_BOUND_MS} ms: ${[...exits.values()].map((e) => e.raw).join('\n')}`);
      for (const processId of [id, 'bg', 'fg']) {
        assert.equal(exits.get(processId)?.payload?.exit_status, 137, `TaskExit of ${processId}: ${exits.get(processId)?.raw}`);
      }
      const fg = await attached;
      assert.equal(fg.exitCode, 137, describeResult(fg));
      assert.ok(Date.now() - killedAt < LOSS_REPORT_BOUND_MS + 5_000, `ctr task exec returned ${Date.now() - killedAt} ms after the kill`);

      const log = containerd.logSince(offset);
      for (const who of [`container ${id}`, `container ${id} exec bg`, `container ${id} exec fg`]) {
        const line = log.split('\n').find((l) => l.includes(`msg="${who}: the VM is gone`));
        assert.ok(line, `no log line for ${who}:\n${log.split('\n').filter((l) => l.includes(id)).slice(-20).join('\n')}`);
        assert.match(line, new RegExp(`the VMM \\((?:qemu-system-x86_64|smolvm-vmm), pid ${vmm}\\) was killed by SIGKILL`), line);
      }

      assert.equal(await waitForStatus(containerd, id, 'STOPPED', 30_000), 'STOPPED');
      const removed = await containerd.ctr(['tasks', 'rm', id], { timeoutMs: 30_000 });
      assert.equal(removed.exitCode, 0, describeResult(removed));
      assert.match(removed.stderr.toString(), /non-zero exit code 137\b/, describeResult(removed));
      await containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });
    } finally {
      watcher.stop();
    }
  });

  test('the shim daemon killed -9 under binary:// loggers: containerd reports 137, nothing stays', 180_000, async (env) => {
    const { containerd } = env;
    const logger = writeStubbornLogger(dir);
    const watcher = await EventWatcher.start(containerd);
    const loggerPids: number[] = [];
    try {
      const id = env.newId('shimkill');
      const started = await env.run(id, ['sh', '-c', 'echo from-init; sleep 600'], {
        keep: true, ctrFlags: ['-d', '--log-uri', `binary://${logger}`],
      });
      assert.equal(started.exitCode, 0, describeResult(started));
      assert.equal(await waitForStatus(containerd, id, 'RUNNING', 30_000), 'RUNNING');
      const exec = await containerd.ctr(['tasks', 'exec', '-d', '--exec-id', 'logged', '--log-uri', `binary://${logger}`, id, 'sh', '-c', 'echo from-exec; sleep 600'], { timeoutMs: 60_000 });
      assert.equal(exec.exitCode, 0, describeResult(exec));
      // CONTAINER_ID is the container id for the init's logger, the exec id for the exec's.
      for (const name of [id, 'logged']) loggerPids.push(Number(await waitForFile(path.join(dir, name, 'pid'), 30_000)));
      await waitForFile(path.join(dir, 'logged', 'stdout'), 30_000);
      const taskPidBefore = await taskPid(containerd, id);

      process.kill(shimDaemonPid(containerd, id), 'SIGKILL');
      // containerd sees the connection drop, runs `shim delete`, and publishes the exit itself.
      assert.ok(await watcher.waitFor((e) => e.topic === '/tasks/exit' && e.payload?.container_id === id, 30_000),
        `no /tasks/exit for ${id}: ${watcher.taskEventsFor(id).map((e) => e.raw).join('\n')}`);
      const exit = exitsOf(watcher, id).get(id);
      assert.equal(exit?.payload?.exit_status, 137, `TaskExit: ${exit?.raw}`);
      assert.ok(await waitTaskGone(containerd, id, 30_000), `task ${id} still listed after its shim died`);
      if (env.vm) {
        // The VMM (the task's pid) is gone, and so is every logger the dead daemon spawned.
        assert.ok(await waitPidGone(taskPidBefore, 10_000), `VMM ${taskPidBefore} still runs`);
        for (const pid of loggerPids) assert.ok(await waitPidGone(pid, 10_000), `logger ${pid} still runs after delete`);
      }
      assert.equal(fs.readFileSync(path.join(dir, id, 'stdout'), 'utf8'), 'from-init\n');
      assert.equal(fs.readFileSync(path.join(dir, 'logged', 'stdout'), 'utf8'), 'from-exec\n');
      await containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });
    } finally {
      watcher.stop();
      // runc's shim does not stop its loggers on delete: do not leave them to the next test.
      for (const pid of loggerPids) if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
    }
  });
});
