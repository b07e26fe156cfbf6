// bin/smolvm-vmm-exec (launcher/vmm-exec), the exec wrapper every VMM is started through:
// arguments checked with a clear error and its own exit code; the record (pid, start time,
// parent) written atomically before the program runs; the environment marker; a parent
// already dead stops it; PR_SET_PDEATHSIG kills the program with its parent. Small programs
// (sh, sleep) stand in for the VMM. SMOLVM_VMM_EXEC: another build (the ASan/UBSan one, from
// `make -C launcher test`).
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { VmmClient } from '../../shim/src/vm/vmm/client';
import { vmmBuildStatus, vmmExecBinary } from '../../shim/src/vm/vmm/locate';
import {
  killTrackedVmmsSync, markVmDirOwner, readVmmRecord, trackedVmms, trackVmm, VM_DIR_ENV, VMM_EXEC_EXIT, VMM_PARENT_ENV, VMM_RECORD_FILE, vmmExecPrefix,
} from '../../shim/src/vm/vmm-exec';
import { mountPoints } from '../../shim/src/util/fsutil';
import { isSameProcessAlive, processStartTime, type ProcessIdentity } from '../../shim/src/util/proc';
import { skipBecause } from '../helpers/skip';

const wrapper = vmmExecBinary();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function killIfAlive(id: ProcessIdentity | null): void {
  if (id && isSameProcessAlive(id)) process.kill(id.pid, 'SIGKILL');
}

async function waitFor(what: string, predicate: () => boolean, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

describe('smolvm-vmm-exec: the VMM exec wrapper', function () {
  this.timeout(20_000);
  let dir = '';
  let record = '';

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-vmm-exec-'));
    record = path.join(dir, VMM_RECORD_FILE);
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const run = (args: string[]) => spawnSync(wrapper, args, { encoding: 'utf8', timeout: 10_000 });

  it('rejects bad arguments with a clear message and its own exit code, creating nothing', () => {
    const ok = ['--vm-dir', dir, '--record', record, '--parent', String(process.pid)];
    const cases: [string[], RegExp][] = [
      [[], /missing -- before the program to run/],
      [[...ok, '--'], /no program after --/],
      [[...ok, '--', ''], /no program after --/],
      [['--vm-dir', dir, '--record', record, '--', 'true'], /--parent is required/],
      [['--record', record, '--parent', '1', '--', 'true'], /--vm-dir is required/],
      [['--vm-dir', dir, '--parent', '1', '--', 'true'], /--record is required/],
      [[...ok, '--jail', 'x', '--', 'true'], /unknown option --jail/],
      [[...ok, '--parent'], /--parent needs a value/],
      [[...ok, '--vm-dir', dir, '--', 'true'], /--vm-dir given twice/],
      [[...ok, '--parent', '1', '--', 'true'], /--parent given twice/],
      [['--vm-dir', dir, '--record', record, '--parent', '0', '--', 'true'], /--parent 0 is not a process id/],
      [['--vm-dir', dir, '--record', record, '--parent', '-5', '--', 'true'], /--parent -5 is not a process id/],
      [['--vm-dir', dir, '--record', record, '--parent', ' 5', '--', 'true'], /--parent  5 is not a process id/],
      [['--vm-dir', dir, '--record', record, '--parent', '12x', '--', 'true'], /--parent 12x is not a process id/],
      [['--vm-dir', dir, '--record', record, '--parent', '99999999999', '--', 'true'], /is not a process id/],
      [['--vm-dir', 'rel/dir', '--record', record, '--parent', '1', '--', 'true'], /--vm-dir rel\/dir is not an absolute path/],
      [['--vm-dir', dir, '--record', 'vmm.json', '--parent', '1', '--', 'true'], /--record vmm.json is not an absolute path/],
      [['--vm-dir', path.join(dir, 'nope'), '--record', record, '--parent', '1', '--', 'true'], /is not a directory/],
      [['--vm-dir', dir, '--record', '/tmp/elsewhere.json', '--parent', '1', '--', 'true'], /is not a file directly inside --vm-dir/],
      [['--vm-dir', dir, '--record', path.join(dir, 'sub', 'r.json'), '--parent', '1', '--', 'true'], /is not a file directly inside --vm-dir/],
      [['--vm-dir', dir, '--record', `${dir}/`, '--parent', '1', '--', 'true'], /does not name a file/],
      [['--vm-dir', dir, '--record', `${dir}/..`, '--parent', '1', '--', 'true'], /does not name a file/],
    ];
    for (const [args, message] of cases) {
      const r = run(args);
      assert.equal(r.status, VMM_EXEC_EXIT.usage, `${JSON.stringify(args)}: ${r.stderr}`);
      assert.match(r.stderr, message, JSON.stringify(args));
      assert.match(r.stderr, /usage: smolvm-vmm-exec --vm-dir DIR --record FILE --parent PID -- PROG/);
      assert.deepEqual(fs.readdirSync(dir), [], `${JSON.stringify(args)} created nothing`);
    }
  });

  it('records pid, start time and parent atomically before the program runs, and marks its environment', () => {
    // The "VMM" reports what it sees of itself once it runs.
    const script = `cat "$1" > "$2/seen"; echo "$$ $(cut -d' ' -f22 /proc/$$/stat)" > "$2/self"; env > "$2/env"; exit 7`;
    const r = spawnSync(wrapper, ['--vm-dir', `${dir}/`, '--record', record, '--parent', String(process.pid), '--', 'sh', '-c', script, 'vmm', record, dir], { encoding: 'utf8' });
    assert.equal(r.status, 7, `the program's own exit code: ${r.stderr}`);
    const seen = JSON.parse(fs.readFileSync(path.join(dir, 'seen'), 'utf8')) as Record<string, unknown>;
    const [pid, startTime] = fs.readFileSync(path.join(dir, 'self'), 'utf8').trim().split(' ');
    assert.deepEqual(seen, {
      pid: Number(pid), startTime,
      parent: { pid: process.pid, startTime: processStartTime(process.pid) },
      vmDir: dir, program: 'sh',
    }, 'the record names the program\'s own process (the same pid and start time across the exec) and us');
    assert.equal(seen.pid, r.pid, 'the wrapper execs: its pid is the program\'s');
    assert.deepEqual(readVmmRecord(dir), { pid: Number(pid), startTime, parent: { pid: process.pid, startTime: processStartTime(process.pid) }, vmDir: dir, program: 'sh' });
    const env = fs.readFileSync(path.join(dir, 'env'), 'utf8').split('\n');
    assert.ok(env.includes(`${VM_DIR_ENV}=${dir}`), 'SMOLVM_VM_DIR names the VM directory (no trailing slash)');
    assert.ok(env.includes(`${VMM_PARENT_ENV}=${process.pid}:${processStartTime(process.pid)}`));
    assert.deepEqual(fs.readdirSync(dir).sort(), ['env', 'seen', 'self', VMM_RECORD_FILE].sort(), 'no temporary file is left');
  });

  it('keeps inherited descriptors (the control socket, the incoming state) and searches PATH', () => {
    const data = path.join(dir, 'data');
    fs.writeFileSync(data, 'fd three');
    const fd = fs.openSync(data, 'r');
    try {
      const r = spawnSync(wrapper, ['--vm-dir', dir, '--record', record, '--parent', String(process.pid), '--', 'cat', '/proc/self/fd/3'], { stdio: ['ignore', 'pipe', 'pipe', fd], encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, 'fd three');
    } finally {
      fs.closeSync(fd);
    }
  });

  it('a program that cannot be executed: its own exit code, and the record is removed', () => {
    const r = run(['--vm-dir', dir, '--record', record, '--parent', String(process.pid), '--', path.join(dir, 'no-such-vmm')]);
    assert.equal(r.status, VMM_EXEC_EXIT.exec);
    assert.match(r.stderr, /smolvm-vmm-exec: cannot execute .*no-such-vmm: No such file or directory/);
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it('does not start the program when the parent it was given is not its parent (any more)', () => {
    const r = run(['--vm-dir', dir, '--record', record, '--parent', '1', '--', 'touch', path.join(dir, 'ran')]);
    assert.equal(r.status, VMM_EXEC_EXIT.parentGone);
    assert.match(r.stderr, /parent 1 is gone \(our parent is now \d+\): not starting touch/);
    assert.deepEqual(fs.readdirSync(dir), [], 'no record, and the program never ran');
  });

  it('does not start the program when its parent died before it ran', async () => {
    // The parent P forks C and exits at once; C (its parent gone) then execs the wrapper.
    const inner = `sleep 0.3; exec "${wrapper}" --vm-dir "${dir}" --record "${record}" --parent $$ -- touch "${dir}/ran" 2> "${dir}/err"`;
    const p = spawnSync('sh', ['-c', `sh -c '${inner.replace(/'/g, `'\\''`)}' & exit 0`], { encoding: 'utf8' });
    assert.equal(p.status, 0, p.stderr);
    await waitFor('the wrapper to give up', () => fs.existsSync(path.join(dir, 'err')) && fs.readFileSync(path.join(dir, 'err'), 'utf8').length > 0);
    assert.match(fs.readFileSync(path.join(dir, 'err'), 'utf8'), /smolvm-vmm-exec: parent \d+ is gone \(our parent is now \d+\): not starting touch/);
    assert.deepEqual(fs.readdirSync(dir), ['err'], 'no record, and the program never ran');
  });

  it('PR_SET_PDEATHSIG: the program dies when the process that started it is killed', async () => {
    // P (sh) starts the wrapper in the background (its child) and waits; P is then killed -9.
    const p = spawn('sh', ['-c', `"${wrapper}" --vm-dir "${dir}" --record "${record}" --parent $$ -- sleep 60 & echo $!; wait`], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    await waitFor('the program to be recorded', () => readVmmRecord(dir) !== null && /\d+\n/.test(out));
    const vmm = readVmmRecord(dir)!;
    assert.equal(vmm.pid, Number(out.trim()));
    assert.equal(vmm.parent.pid, p.pid);
    assert.ok(isSameProcessAlive(vmm), 'it runs');
    assert.match(fs.readFileSync(`/proc/${vmm.pid}/cmdline`, 'utf8'), /^sleep\0/, 'as the program (exec done)');
    p.kill('SIGKILL');
    try {
      await waitFor('the program to die with its parent', () => !isSameProcessAlive(vmm), 3_000);
    } finally {
      killIfAlive(vmm); // a failed test leaves no program behind
    }
  });

  it('the shim builds its arguments: through it, or a clear error when it is not built', () => {
    const prefix = vmmExecPrefix(dir);
    assert.deepEqual(prefix, [wrapper, '--vm-dir', dir, '--record', record, '--parent', String(process.pid), '--']);
    assert.throws(() => vmmExecPrefix(dir, { SMOLVM_VMM_EXEC: path.join(dir, 'missing') }),
      /the VMM exec wrapper .*missing is not built: run `npm run build:launcher`/);
  });

  it('smolvm-vmm (the addon\'s posix_spawn) runs through it: recorded, marked, tracked until it exits', async function () {
    const status = vmmBuildStatus();
    if (!status.binaryBuilt || !status.addonBuilt) skipBecause(this, { lacks: 'setup', detail: 'smolvm-vmm or its addon is not built' });
    const client = await VmmClient.spawn({ vmDir: dir, binary: status.artifacts.binary });
    try {
      const vmm = readVmmRecord(dir);
      assert.equal(vmm?.pid, client.pid);
      assert.equal(vmm?.parent.pid, process.pid);
      assert.match(fs.readFileSync(`/proc/${client.pid}/cmdline`, 'utf8'), /smolvm-vmm\0--control-fd\x003\0$/);
      assert.ok(fs.readFileSync(`/proc/${client.pid}/environ`, 'utf8').split('\0').includes(`${VM_DIR_ENV}=${dir}`));
      assert.ok(trackedVmms().some((t) => t.vmDir === dir && t.identity?.pid === client.pid));
    } finally {
      await client.stop();
      await client.terminated;
    }
    assert.ok(!trackedVmms().some((t) => t.vmDir === dir), 'forgotten once it exited');
  });

  it('killTrackedVmmsSync: kills the VMMs this process started and removes their directories, mounts and all, before returning', async () => {
    // A VM directory as Sandbox.boot makes it, with a host directory bound into its share,
    // and a stand-in VMM started into it through the wrapper.
    const vmDir = path.join(dir, 'vm');
    fs.mkdirSync(vmDir);
    markVmDirOwner(vmDir);
    const hostDir = path.join(dir, 'host');
    fs.mkdirSync(hostDir);
    fs.writeFileSync(path.join(hostDir, 'keep'), 'data');
    const point = path.join(vmDir, 'shares', '0');
    fs.mkdirSync(point, { recursive: true });
    assert.equal(spawnSync('mount', ['--bind', hostDir, point]).status, 0);
    const notStarted = path.join(dir, 'vm-not-started');
    fs.mkdirSync(notStarted);
    markVmDirOwner(notStarted);
    const tracked = trackVmm(vmDir);
    const [wrapperPath, ...wrapperArgs] = vmmExecPrefix(vmDir);
    const child = spawn(wrapperPath!, [...wrapperArgs, 'sleep', '60'], { stdio: 'ignore' });
    tracked.spawnedAs(child.pid!);
    child.once('exit', () => tracked.exited());
    try {
      await waitFor('the stand-in to run', () => /^sleep\0/.test(fs.readFileSync(`/proc/${child.pid}/cmdline`, 'utf8')));
      const vmm = readVmmRecord(vmDir)!;
      assert.deepEqual(killTrackedVmmsSync(), [child.pid]);
      // Synchronously: nothing of the event loop ran in between.
      assert.ok(!isSameProcessAlive(vmm), 'the VMM is dead (a zombie until reaped)');
      assert.ok(!fs.existsSync(vmDir), 'its VM directory is gone');
      assert.ok(!fs.existsSync(notStarted), 'and the one made for a VMM not started yet');
      assert.ok(!mountPoints().has(point), 'the bind mount was detached');
      assert.equal(fs.readFileSync(path.join(hostDir, 'keep'), 'utf8'), 'data', 'the host directory kept its files');
      assert.deepEqual(trackedVmms(), []);
    } finally {
      child.kill('SIGKILL');
      spawnSync('umount', ['-l', point]);
    }
  });

  it('a VMM started by the addon dies with the node process that started it (the JS thread spawns)', async function () {
    const status = vmmBuildStatus();
    if (!status.addonBuilt) skipBecause(this, { lacks: 'setup', detail: 'the smolvm-vmm addon is not built' });
    // Not smolvm-vmm, which stops by itself when its control socket closes: a stand-in that
    // ignores it and never says hello, so that only PDEATHSIG can end it.
    const standIn = path.join(dir, 'stand-in-vmm');
    fs.writeFileSync(standIn, '#!/bin/sh\nexec sleep 60\n', { mode: 0o755 });
    const client = path.resolve(__dirname, '..', '..', 'shim', 'src', 'vm', 'vmm', 'client.js');
    const script = `require(${JSON.stringify(client)}).VmmClient.spawn({ vmDir: ${JSON.stringify(dir)}, binary: ${JSON.stringify(standIn)} });
      setInterval(() => undefined, 1000);`;
    const node = spawn(process.execPath, ['-e', script], { stdio: 'ignore' });
    try {
      await waitFor('the stand-in to be recorded and running', () => {
        const vmm = readVmmRecord(dir);
        return vmm !== null && /^sleep\0/.test(fs.readFileSync(`/proc/${vmm.pid}/cmdline`, 'utf8'));
      }, 10_000);
      const vmm = readVmmRecord(dir)!;
      assert.equal(vmm.parent.pid, node.pid);
      node.kill('SIGKILL');
      await waitFor('the stand-in to die with it', () => !isSameProcessAlive(vmm), 3_000);
    } finally {
      node.kill('SIGKILL');
      killIfAlive(readVmmRecord(dir)); // a failed test leaves no stand-in behind
    }
  });
});
