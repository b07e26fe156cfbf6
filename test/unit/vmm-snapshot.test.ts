/**
 * Snapshot and restore in smolvm-vmm on this machine's real /dev/kvm: a tiny guest that keeps
 * counting (test/guests/counter.S: the count lives in a register, in memory and in an SSE
 * register) is paused and snapshotted while running, its VMM is killed, and the snapshot is
 * restored into new VMM processes (one, then two at once sharing the memory file MAP_PRIVATE):
 * the count continues where it was. Corrupt, truncated, wrong-version, wrong-build,
 * wrong-CPUID and mismatched snapshots are refused with a clear error, and the VMM keeps
 * serving.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildGuest, ensureVmmBuilt, kvmUsable, VmmProcess, type VmmMessage } from '../guests/vmm-harness';
import { skipBecause } from '../helpers/skip';

/** The counts printed as complete "count=N" lines, in order. */
function countsIn(serial: string): number[] {
  const counts: number[] = [];
  for (const match of serial.matchAll(/count=(\d+)\n/g)) counts.push(Number(match[1]));
  return counts;
}

function assertConsecutive(counts: number[], what: string): void {
  assert.ok(counts.length > 0, `${what}: no counts`);
  for (let i = 1; i < counts.length; i++) {
    assert.equal(counts[i], counts[i - 1] + 1, `${what}: count ${counts[i - 1]} is followed by ${counts[i]}`);
  }
}

/** Offsets of the header fields of a state file (native-vmm/src/snapshot/README.md). */
function headerLayout(state: Buffer): { buildOffset: number; buildLength: number; cpuidHashOffset: number } {
  const buildLength = state.readUInt32LE(16);
  const buildOffset = 20;
  const kindLength = state.readUInt32LE(buildOffset + buildLength);
  return { buildOffset, buildLength, cpuidHashOffset: buildOffset + buildLength + 4 + kindLength };
}

describe('smolvm-vmm snapshot and restore on /dev/kvm', function () {
  this.timeout(60_000);
  let workDir = '';
  let counterGuest = '';
  let diskA = '';
  let diskB = '';
  let statePath = '';
  let memoryPath = '';
  let countBeforeSnapshot = 0;
  let serialBeforeSnapshot = '';
  const running: VmmProcess[] = [];

  function vmm(): VmmProcess {
    const process = new VmmProcess();
    running.push(process);
    return process;
  }

  function restoreConfig(state: string, memory: string, vsockPath: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
    return {
      config: {
        restore: { state: { path: state }, memory: { path: memory } },
        serial: { inherited_fd: 4 },
        disks: [{ file: { path: diskB } }],
        vsock: { uds_path: vsockPath },
        ...extra,
      },
    };
  }

  async function countsAfter(process: VmmProcess, atLeast: number): Promise<number[]> {
    await process.waitFor(`${atLeast} counts on serial`, () => (countsIn(process.serialText).length >= atLeast ? true : undefined), 20_000);
    return countsIn(process.serialText);
  }

  before(function () {
    if (!kvmUsable()) skipBecause(this, { lacks: 'kvm', detail: 'no usable /dev/kvm' });
    this.timeout(600_000);  // the first build of the VMM compiles everything on 2 cores
    ensureVmmBuilt();
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-vmm-snapshot-'));
    counterGuest = buildGuest('counter', workDir);
    diskA = path.join(workDir, 'disk-a.img');
    diskB = path.join(workDir, 'disk-b.img');
    fs.writeFileSync(diskA, Buffer.alloc(1 << 20));
    fs.writeFileSync(diskB, Buffer.alloc(2 << 20));
    statePath = path.join(workDir, 'counter.state');
    memoryPath = path.join(workDir, 'counter.mem');
  });

  afterEach(() => {
    for (const process of running.splice(0)) process.kill();
  });

  after(() => {
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  it('snapshots a running counting guest (pause, snapshot) and refuses a snapshot while running', async () => {
    const process = vmm();
    const configured = await process.request('configure', {
      config: {
        memory_mib: 32,
        kernel: { path: counterGuest },
        cmdline: 'counter',
        serial: { inherited_fd: 4 },
        disks: [{ file: { path: diskA }, read_only: true, serial: 'image' }],
        vsock: { guest_cid: 7, uds_path: path.join(workDir, 'vsock-a.sock') },
      },
    });
    assert.equal(configured.ok, true, configured.error);
    assert.equal((await process.request('start')).ok, true);
    await countsAfter(process, 5);
    const whileRunning = await process.request('snapshot', { state: { path: statePath }, memory: { path: memoryPath } });
    assert.equal(whileRunning.ok, false);
    assert.match(String(whileRunning.error), /"snapshot" is not allowed in state running/);
    assert.ok(!fs.existsSync(statePath) && !fs.existsSync(memoryPath), 'a refused snapshot writes nothing');

    assert.equal((await process.request('pause')).ok, true);
    const taken = await process.request('snapshot', { state: { path: statePath }, memory: { path: memoryPath } });
    assert.equal(taken.ok, true, taken.error);
    assert.equal(taken.memory_bytes, (32 << 20) + 4096, 'guest RAM plus the one-page trailer');
    assert.ok(Number(taken.memory_data_bytes) > 0 && Number(taken.memory_data_bytes) < (32 << 20), 'written sparse');
    assert.equal(fs.statSync(statePath).size, taken.state_bytes);
    assert.match(String(taken.vmm_build), /^smolvm-vmm .* build-id [0-9a-f]+$/);
    assert.match(String(taken.cpuid_hash), /^[0-9a-f]{16}$/);
    const hello = process.messages.find((m) => m.type === 'hello');
    assert.equal(hello?.vmm_build, taken.vmm_build, 'hello names the build snapshots restore into');
    if (Array.isArray(taken.warnings) && taken.warnings.length > 0) {
      console.log(`      snapshot warnings on this host (${String(taken.host_kind)}): ${taken.warnings.join('; ')}`);
    }
    assert.equal(fs.readdirSync(workDir).filter((name) => name.includes('.tmp-')).length, 0, 'no temporary files left');

    // Kill the VMM outright: the snapshot on disk is all that is left of this VM.
    process.child.kill('SIGKILL');
    await process.exited();
    await process.serialClosed();
    serialBeforeSnapshot = process.serialText;
    const counts = countsIn(serialBeforeSnapshot);
    assertConsecutive(counts, 'before the snapshot');
    countBeforeSnapshot = counts[counts.length - 1];
    assert.ok(countBeforeSnapshot >= 5);
    assert.doesNotMatch(serialBeforeSnapshot, /MISMATCH/);
  });

  it('restores into a new VMM process: the count continues where it was paused', async function () {
    if (!countBeforeSnapshot) skipBecause(this, { notHere: 'needs the snapshot the first test takes, and that test failed (its failure fails the run)' });
    const process = vmm();
    const configured = await process.request('configure', restoreConfig(statePath, memoryPath, path.join(workDir, 'vsock-b.sock')));
    assert.equal(configured.ok, true, configured.error);
    assert.equal(configured.restored, true);
    assert.match(String(configured.boot), /^restored snapshot [0-9a-f]{32}$/);
    assert.match(String(configured.cmdline), /^counter virtio_mmio\.device=4K@0xd0000000:5 /);
    if (Array.isArray(configured.warnings) && configured.warnings.length > 0) {
      console.log(`      restore warnings on this host: ${configured.warnings.join('; ')}`);
    }
    assert.equal((await process.request('status')).state, 'configured');
    assert.ok(fs.statSync(path.join(workDir, 'vsock-b.sock')).isSocket(), 'the vsock device listens on its new socket');
    assert.equal((await process.request('start')).ok, true);
    const after = await countsAfter(process, 5);
    assert.doesNotMatch(process.serialText, /MISMATCH/);
    assert.ok(after[0] > countBeforeSnapshot - 1, `restored guest starts at ${after[0]}, not after ${countBeforeSnapshot}`);
    // Together the two VMMs printed one unbroken sequence: nothing replayed, nothing lost,
    // not even a character of the line that was being printed when the guest was paused.
    assertConsecutive(countsIn(serialBeforeSnapshot + process.serialText), 'across the restore');
    assert.equal(countsIn(serialBeforeSnapshot + process.serialText)[0], 1);
    assert.equal((await process.request('stop')).ok, true);
    assert.equal(await process.exited(), 0);
  });

  it('restores one snapshot into two VMMs at once, sharing the memory file MAP_PRIVATE', async function () {
    if (!countBeforeSnapshot) skipBecause(this, { notHere: 'needs the snapshot the first test takes, and that test failed (its failure fails the run)' });
    const first = vmm();
    const second = vmm();
    const [a, b] = await Promise.all([
      first.request('configure', restoreConfig(statePath, memoryPath, path.join(workDir, 'vsock-c.sock'))),
      second.request('configure', restoreConfig(statePath, memoryPath, path.join(workDir, 'vsock-d.sock'))),
    ]);
    assert.equal(a.ok, true, a.error);
    assert.equal(b.ok, true, b.error);
    await Promise.all([first.request('start'), second.request('start')]);
    const [countsA, countsB] = await Promise.all([countsAfter(first, 5), countsAfter(second, 5)]);
    for (const [process, counts] of [[first, countsA], [second, countsB]] as Array<[VmmProcess, number[]]>) {
      assertConsecutive(countsIn(serialBeforeSnapshot + process.serialText), `VMM ${process.child.pid}`);
      assert.ok(counts[0] >= countBeforeSnapshot);
      // The memory file is mapped privately (copy-on-write): the guest's writes stay its own.
      const maps = fs.readFileSync(`/proc/${process.child.pid}/maps`, 'utf8');
      const line = maps.split('\n').find((entry) => entry.endsWith(memoryPath));
      assert.ok(line, `${memoryPath} is mapped in VMM ${process.child.pid}`);
      assert.match(line, /^\S+ rw-p /, 'mapped private, not shared');
    }
    // Neither guest wrote into the file: a third restore would start from the same place.
    const memoryAfter = fs.statSync(memoryPath);
    assert.equal(memoryAfter.size, (32 << 20) + 4096);
    await Promise.all([first.request('stop'), second.request('stop')]);
    assert.equal(await first.exited(), 0);
    assert.equal(await second.exited(), 0);
  });

  it('snapshots a restored VM again (its private copies included) and restores that', async function () {
    if (!countBeforeSnapshot) skipBecause(this, { notHere: 'needs the snapshot the first test takes, and that test failed (its failure fails the run)' });
    const restored = vmm();
    assert.equal((await restored.request('configure', restoreConfig(statePath, memoryPath, path.join(workDir, 'vsock-e.sock')))).ok, true);
    await restored.request('start');
    await countsAfter(restored, 3);
    await restored.request('pause');
    await new Promise((resolve) => setTimeout(resolve, 100));  // the serial pipe drains
    const serialAtSnapshot = restored.serialText;
    const state2 = path.join(workDir, 'second.state');
    const memory2 = path.join(workDir, 'second.mem');
    const taken = await restored.request('snapshot', { state: { path: state2 }, memory: { path: memory2 } });
    assert.equal(taken.ok, true, taken.error);
    const sameFile = await restored.request('snapshot', { state: { path: path.join(workDir, 'x.state') }, memory: { path: memoryPath } });
    assert.equal(sameFile.ok, true, 'a path target is a new file renamed over the old: safe even for the mapped one');
    // The snapshotted VM itself resumes and counts on (its memory file was replaced under it).
    const beforeResume = countsIn(restored.serialText).length;
    assert.equal((await restored.request('resume')).ok, true);
    await countsAfter(restored, beforeResume + 3);
    assertConsecutive(countsIn(restored.serialText), 'resumed after two snapshots');
    await restored.request('pause');
    restored.child.kill('SIGKILL');
    await restored.exited();
    await restored.serialClosed();
    const lastOfRestored = countsIn(serialAtSnapshot).at(-1) ?? 0;

    const again = vmm();
    assert.equal((await again.request('configure', restoreConfig(state2, memory2, path.join(workDir, 'vsock-f.sock')))).ok, true);
    await again.request('start');
    await countsAfter(again, 3);
    assertConsecutive(countsIn(serialAtSnapshot + again.serialText), 'restore of a restored VM');
    assert.ok((countsIn(again.serialText)[0] ?? 0) >= lastOfRestored);

    // memoryPath was replaced by the third snapshot above: the OLD state file with it is a
    // mismatched pair, refused (the memory file's trailer names another snapshot).
    const mismatched = vmm();
    const reply = await mismatched.request('configure', restoreConfig(statePath, memoryPath, path.join(workDir, 'vsock-m.sock')));
    assert.equal(reply.ok, false);
    assert.match(String(reply.error), /restore\.memory: memory file: does not belong to this state file/);
  });

  it('snapshots and restores a machine with two vCPUs (the second still waiting for INIT/SIPI)', async function () {
    if (!countBeforeSnapshot) skipBecause(this, { notHere: 'needs the snapshot the first test takes, and that test failed (its failure fails the run)' });
    const state = path.join(workDir, 'smp.state');
    const memory = path.join(workDir, 'smp.mem');
    const original = vmm();
    const configured = await original.request('configure', {
      config: { memory_mib: 16, vcpus: 2, kernel: { path: counterGuest }, cmdline: 'smp', serial: { inherited_fd: 4 }, rng: false },
    });
    assert.equal(configured.ok, true, configured.error);
    await original.request('start');
    await countsAfter(original, 3);
    await original.request('pause');
    const taken = await original.request('snapshot', { state: { path: state }, memory: { path: memory } });
    assert.equal(taken.ok, true, taken.error);
    original.kill();
    await original.exited();
    await original.serialClosed();

    const restored = vmm();
    const reply = await restored.request('configure', {
      config: { restore: { state: { path: state }, memory: { path: memory } }, serial: { inherited_fd: 4 } },
    });
    assert.equal(reply.ok, true, reply.error);
    await restored.request('start');
    await countsAfter(restored, 3);
    assertConsecutive(countsIn(original.serialText + restored.serialText), 'two vCPUs across the restore');
    assert.equal((await restored.request('status')).state, 'running');
  });

  it('every restore continues exactly, also when the pause lands right after a port I/O exit', async () => {
    // The 'f' guest prints without pause, so most pauses hit a vCPU between an OUT exit and
    // KVM's completion of it (on hardware KVM the RIP moves past the OUT only on the next
    // KVM_RUN). The VMM completes it before parking; without that, a restored guest repeats the
    // OUT: seen in the KVM lab as "count=63" + "3\n" in 10 of 15 restores.
    const original = vmm();
    const configured = await original.request('configure', {
      config: { memory_mib: 16, kernel: { path: counterGuest }, cmdline: 'fast', serial: { inherited_fd: 4 }, rng: false },
    });
    assert.equal(configured.ok, true, configured.error);
    await original.request('start');
    for (let cycle = 0; cycle < 8; cycle++) {
      await countsAfter(original, countsIn(original.serialText).length + 20);
      assert.equal((await original.request('pause')).ok, true);
      const state = path.join(workDir, `cycle-${cycle}.state`);
      const memory = path.join(workDir, `cycle-${cycle}.mem`);
      const taken = await original.request('snapshot', { state: { path: state }, memory: { path: memory } });
      assert.equal(taken.ok, true, taken.error);
      await new Promise((resolve) => setTimeout(resolve, 100));  // the serial pipe drains
      const serialAtSnapshot = original.serialText;
      assert.equal((await original.request('resume')).ok, true);

      const restored = vmm();
      const reply = await restored.request('configure', {
        config: { restore: { state: { path: state }, memory: { path: memory } }, serial: { inherited_fd: 4 } },
      });
      assert.equal(reply.ok, true, reply.error);
      await restored.request('start');
      await countsAfter(restored, 3);
      restored.kill();
      assertConsecutive(countsIn(serialAtSnapshot + restored.serialText), `restore ${cycle}`);
      fs.rmSync(state);
      fs.rmSync(memory);
    }
    assertConsecutive(countsIn(original.serialText), 'the original across 8 snapshots');
  });

  describe('bad snapshots: a clear error, nothing left behind, the VMM keeps serving', () => {
    let goodState: Buffer;
    let goodMemory = '';

    before(async function () {
      if (!countBeforeSnapshot) skipBecause(this, { notHere: 'needs the snapshot the first test takes, and that test failed (its failure fails the run)' });
      // A fresh snapshot pair (the tests above replaced memoryPath).
      const process = vmm();
      await process.request('configure', {
        config: {
          memory_mib: 32, kernel: { path: counterGuest }, cmdline: 'counter', serial: { inherited_fd: 4 },
          disks: [{ file: { path: diskA }, read_only: true, serial: 'image' }],
          vsock: { guest_cid: 7, uds_path: path.join(workDir, 'vsock-g.sock') },
        },
      });
      await process.request('start');
      await countsAfter(process, 2);
      await process.request('pause');
      const taken = await process.request('snapshot', { state: { path: statePath }, memory: { path: memoryPath } });
      assert.equal(taken.ok, true, taken.error);
      process.kill();
      goodState = fs.readFileSync(statePath);
      goodMemory = memoryPath;
    });

    async function refused(process: VmmProcess, state: Buffer | string, expected: RegExp, memory = goodMemory,
      extra: Record<string, unknown> = {}): Promise<VmmMessage> {
      let statePathForCase = state as string;
      if (Buffer.isBuffer(state)) {
        statePathForCase = path.join(workDir, 'case.state');
        fs.writeFileSync(statePathForCase, state);
      }
      const vsockPath = path.join(workDir, 'vsock-case.sock');
      // A serial file by path: an inherited fd is consumed (closed) by a configure that fails
      // after resolving it, and the last, good restore below still needs fd 4.
      const reply = await process.request('configure', restoreConfig(statePathForCase, memory, vsockPath,
        { serial: { path: path.join(workDir, 'refused-serial.log') }, ...extra }));
      assert.equal(reply.ok, false, `accepted a bad snapshot (expected ${String(expected)})`);
      assert.match(String(reply.error), expected);
      assert.ok(!fs.existsSync(vsockPath), 'the vsock socket of a failed restore is removed');
      return reply;
    }

    it('refuses corrupt, truncated, foreign and mismatched snapshots, then restores a good one', async () => {
      const process = vmm();
      const layout = headerLayout(goodState);

      await refused(process, Buffer.alloc(0), /restore\.state: state file snapshot: not a smolvm snapshot state file \(bad magic\)/);
      await refused(process, goodState.subarray(0, 30), /restore\.state: .*truncated at byte/);
      await refused(process, goodState.subarray(0, Math.floor(goodState.length / 2)), /restore\.state: .*truncated: the body should be \d+ bytes/);
      await refused(process, Buffer.concat([goodState, Buffer.from([0])]), /1 unexpected bytes after the body/);

      const corrupt = Buffer.from(goodState);
      corrupt[corrupt.length - 100] ^= 0x5a;
      await refused(process, corrupt, /body checksum mismatch: the file is corrupt/);

      const newerFormat = Buffer.from(goodState);
      newerFormat.writeUInt32LE(2, 8);
      await refused(process, newerFormat, /format version 2, this VMM reads version 1/);

      const otherBuild = Buffer.from(goodState);
      const lastBuildChar = layout.buildOffset + layout.buildLength - 1;
      otherBuild[lastBuildChar] = otherBuild[lastBuildChar] === 0x30 ? 0x31 : 0x30;
      await refused(process, otherBuild, /restore refused: the snapshot was taken by VMM build "smolvm-vmm .*"; this is "smolvm-vmm /);

      const otherCpu = Buffer.from(goodState);
      otherCpu[layout.cpuidHashOffset] ^= 0xff;
      await refused(process, otherCpu, /restore refused: the snapshot was taken on a host with CPUID hash [0-9a-f]{16}; this host's is [0-9a-f]{16}/);

      const truncatedMemory = path.join(workDir, 'truncated.mem');
      fs.copyFileSync(goodMemory, truncatedMemory);
      fs.truncateSync(truncatedMemory, 16 << 20);
      await refused(process, goodState, /restore\.memory: memory file: 16777216 bytes, expected 33558528/, truncatedMemory);

      const foreignMemory = path.join(workDir, 'foreign.mem');
      fs.copyFileSync(goodMemory, foreignMemory);
      const fd = fs.openSync(foreignMemory, 'r+');
      fs.writeSync(fd, Buffer.alloc(16, 0xab), 0, 16, (32 << 20) + 24);  // the trailer's snapshot id
      fs.closeSync(fd);
      await refused(process, goodState, /restore\.memory: memory file: does not belong to this state file/, foreignMemory);

      await refused(process, goodState, /configure: disks: the snapshot has 1 disk slots; give a file for each \(0 given\)/, goodMemory, { disks: [] });
      await refused(process, goodState, /configure: disks\[0\]\.serial: differs from the snapshot's \("image"\)/, goodMemory,
        { disks: [{ file: { path: diskB }, serial: 'other' }] });
      await refused(process, goodState, /configure: memory_mib: differs from the snapshot's/, goodMemory, { memory_mib: 64 });
      await refused(process, goodState, /configure: kernel: not allowed with "restore"/, goodMemory, { kernel: { path: counterGuest } });
      await refused(process, goodState, /configure: vsock: the snapshot has a vsock device/, goodMemory, { vsock: undefined });
      await refused(process, path.join(workDir, 'nonexistent.state'), /configure: restore\.state: open .*nonexistent\.state: No such file/);
      assert.equal((await process.request('status')).state, 'awaiting_configure');

      // After all that, the same VMM restores the good snapshot and the guest counts on.
      const good = await process.request('configure', restoreConfig(statePath, goodMemory, path.join(workDir, 'vsock-h.sock')));
      assert.equal(good.ok, true, good.error);
      await process.request('start');
      await countsAfter(process, 3);
      assert.doesNotMatch(process.serialText, /MISMATCH/);
      assert.ok(countsIn(process.serialText)[0] > 1, 'continues, does not start over');
    });
  });
});
