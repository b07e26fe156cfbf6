// The orphaned-VMM sweep (shim/src/vm/vmm-sweep.ts) with stand-ins: `sleep` processes
// play VMMs, their records and environment markers name a parent that is alive (this test) or
// dead (a process it started and reaped). Orphans of this state root are found by record and
// by /proc, killed and their VM directories removed (mounts detached first); a VMM whose
// parent lives, another state root's, a directory whose owner lives or that names none stay.
import * as assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { markVmDirOwner, VM_DIR_ENV, VM_OWNER_FILE, VMM_PARENT_ENV, VMM_RECORD_FILE } from '../../shim/src/vm/vmm-exec';
import { findVmmProcesses, isVmDirOf, sweepOrphanedVmms } from '../../shim/src/vm/vmm-sweep';
import { mountPoints } from '../../shim/src/util/fsutil';
import { isSameProcessAlive, processStartTime, type ProcessIdentity } from '../../shim/src/util/proc';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('orphaned VMM sweep', function () {
  this.timeout(30_000);
  let work = '';
  let stateA = '';
  let stateB = '';
  let dead: ProcessIdentity;
  let me: ProcessIdentity;
  const children: ChildProcess[] = [];

  /** A stand-in VMM: marked (environment) and/or recorded (file) as the wrapper would. */
  const fakeVmm = async (vmDir: string, parent: ProcessIdentity, how: { record: boolean; marker: boolean }): Promise<ProcessIdentity> => {
    const env: NodeJS.ProcessEnv = { PATH: process.env.PATH };
    if (how.marker) {
      env[VM_DIR_ENV] = vmDir;
      env[VMM_PARENT_ENV] = `${parent.pid}:${parent.startTime}`;
    }
    const child = spawn('sleep', ['60'], { env, stdio: 'ignore' });
    children.push(child);
    await new Promise((resolve) => child.once('spawn', resolve));
    const identity = { pid: child.pid!, startTime: processStartTime(child.pid!)! };
    if (how.record) {
      fs.mkdirSync(vmDir, { recursive: true });
      fs.writeFileSync(path.join(vmDir, VMM_RECORD_FILE), JSON.stringify({ ...identity, parent, vmDir, program: 'sleep' }));
    }
    return identity;
  };
  const vmDir = (stateDir: string, name: string): string => path.join(stateDir, 'vms', name);

  before(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-sweep-'));
    stateA = path.join(work, 'a', 'run');
    stateB = path.join(work, 'b', 'run');
    const gone = spawn('sleep', ['0'], { stdio: 'ignore' });
    await new Promise((resolve) => gone.once('spawn', resolve));
    dead = { pid: gone.pid!, startTime: processStartTime(gone.pid!)! };
    await new Promise((resolve) => gone.once('exit', resolve));
    me = { pid: process.pid, startTime: processStartTime(process.pid)! };
  });

  after(async () => {
    for (const child of children) child.kill('SIGKILL');
    for (const point of [...mountPoints()].filter((p) => p.startsWith(`${work}/`))) spawnSync('umount', ['-l', point]);
    await sleep(50);
    fs.rmSync(work, { recursive: true, force: true });
  });

  it('attributes VM directories to one state root only', () => {
    assert.ok(isVmDirOf(stateA, path.join(stateA, 'vms', 'abc')));
    assert.ok(isVmDirOf(stateA, path.join(stateA, 'templates', 'tpl-1')));
    assert.ok(!isVmDirOf(stateA, path.join(stateA, 'pool', 'abc')), 'a pool entry is no VM directory');
    assert.ok(!isVmDirOf(stateA, path.join(stateA, 'vms')));
    assert.ok(!isVmDirOf(stateA, path.join(stateA, 'vms', 'abc', 'shares')));
    assert.ok(!isVmDirOf(stateA, path.join(`${stateA}2`, 'vms', 'abc')), 'a sibling root with a common prefix');
    assert.ok(!isVmDirOf(stateA, path.join(stateB, 'vms', 'abc')));
  });

  it('kills the orphans of its root (by record and by /proc), removes what dead owners left, and leaves everything else', async () => {
    // Orphans of root A: recorded only; marked only (its directory already gone); both.
    const byRecord = await fakeVmm(vmDir(stateA, 'byrecord'), dead, { record: true, marker: false });
    const byProc = await fakeVmm(vmDir(stateA, 'byproc'), dead, { record: false, marker: true });
    const byBoth = await fakeVmm(vmDir(stateA, 'byboth'), dead, { record: true, marker: true });
    // Its VM directory holds a host directory bind-mounted into its share.
    const hostDir = path.join(work, 'host-volume');
    fs.mkdirSync(hostDir);
    fs.writeFileSync(path.join(hostDir, 'keep'), 'host data');
    const mountPoint = path.join(vmDir(stateA, 'byboth'), 'shares', '0');
    fs.mkdirSync(mountPoint, { recursive: true });
    assert.equal(spawnSync('mount', ['--bind', hostDir, mountPoint]).status, 0);
    // Alive parent: left alone, directory and all.
    const parented = await fakeVmm(vmDir(stateA, 'parented'), me, { record: true, marker: true });
    // Another state root's orphan: not ours.
    const otherRoot = await fakeVmm(vmDir(stateB, 'other'), dead, { record: true, marker: true });
    // A marker naming something of root A that is no VM directory.
    const notVmDir = await fakeVmm(path.join(stateA, 'pool', 'x'), dead, { record: false, marker: true });
    // Directories: a dead VMM of a dead parent; made by a dead process before any VMM ran;
    // made by a live one (a boot under way); naming nobody (an older smolvm).
    const deadVmm = vmDir(stateA, 'deadvmm');
    fs.mkdirSync(deadVmm, { recursive: true });
    fs.writeFileSync(path.join(deadVmm, VMM_RECORD_FILE), JSON.stringify({ ...dead, parent: dead, vmDir: deadVmm, program: 'qemu' }));
    fs.writeFileSync(path.join(deadVmm, 'agent.sock'), '');
    const deadMaker = vmDir(stateA, 'deadmaker');
    fs.mkdirSync(deadMaker, { recursive: true });
    fs.writeFileSync(path.join(deadMaker, VM_OWNER_FILE), JSON.stringify(dead));
    const booting = vmDir(stateA, 'booting');
    fs.mkdirSync(booting, { recursive: true });
    markVmDirOwner(booting);
    const nameless = vmDir(stateA, 'nameless');
    fs.mkdirSync(nameless, { recursive: true });
    // Data directories (disks, logs) on the data root: of a VM swept now, of a VM booting, and
    // one whose VM directory is gone already (its shim died between the two removals).
    const cacheA = path.join(work, 'a', 'lib');
    const dataDir = (name: string): string => path.join(cacheA, 'vms', name);
    for (const name of ['deadvmm', 'booting', 'leftover']) {
      fs.mkdirSync(dataDir(name), { recursive: true });
      fs.writeFileSync(path.join(dataDir(name), 'writable.ext4'), 'disk');
    }

    const listed = findVmmProcesses(stateA);
    const byPid = new Map(listed.map((v) => [v.pid, v]));
    assert.deepEqual(byPid.get(byRecord.pid)?.foundBy, ['record']);
    assert.deepEqual(byPid.get(byProc.pid)?.foundBy, ['proc']);
    assert.deepEqual(byPid.get(byBoth.pid)?.foundBy.sort(), ['proc', 'record']);
    assert.equal(byPid.get(byBoth.pid)?.orphaned, true);
    assert.equal(byPid.get(parented.pid)?.orphaned, false);
    assert.deepEqual(byPid.get(parented.pid)?.parent, me);
    assert.match(byPid.get(byBoth.pid)?.cmdline ?? '', /^sleep 60$/);
    assert.deepEqual(listed.map((v) => v.pid).sort(), [byRecord.pid, byProc.pid, byBoth.pid, parented.pid].sort(), 'nothing of root B, nothing that is no VM directory');
    assert.deepEqual(findVmmProcesses(stateA, { orphanedOnly: true }).map((v) => v.pid).sort(), [byRecord.pid, byProc.pid, byBoth.pid].sort());
    assert.deepEqual(findVmmProcesses(stateB).map((v) => v.pid), [otherRoot.pid]);

    const swept = await sweepOrphanedVmms({ stateDir: stateA, cacheDir: cacheA });
    assert.deepEqual(swept.problems, []);
    assert.deepEqual(swept.killed.map((v) => v.pid).sort(), [byRecord.pid, byProc.pid, byBoth.pid].sort());
    for (const vmm of [byRecord, byProc, byBoth]) assert.ok(!isSameProcessAlive(vmm), `orphan ${vmm.pid} is dead`);
    for (const vmm of [parented, otherRoot, notVmDir]) assert.ok(isSameProcessAlive(vmm), `${vmm.pid} still runs`);
    assert.deepEqual(swept.removedDirs.sort(), [
      ...['byboth', 'byrecord', 'deadmaker', 'deadvmm'].map((n) => vmDir(stateA, n)),
      ...['deadvmm', 'leftover'].map(dataDir),
    ].sort());
    assert.deepEqual(fs.readdirSync(path.join(stateA, 'vms')).sort(), ['booting', 'nameless', 'parented']);
    assert.deepEqual(fs.readdirSync(path.join(cacheA, 'vms')), ['booting'], 'a booting VM keeps its data directory');
    assert.deepEqual(fs.readdirSync(path.join(stateB, 'vms')), ['other']);
    assert.ok(!mountPoints().has(mountPoint), 'the share\'s bind mount was detached first');
    assert.equal(fs.readFileSync(path.join(hostDir, 'keep'), 'utf8'), 'host data', 'and the host directory kept its files');

    assert.deepEqual(await sweepOrphanedVmms({ stateDir: stateA, cacheDir: cacheA }), { killed: [], removedDirs: [], problems: [] }, 'a second sweep finds nothing');
  });
});
