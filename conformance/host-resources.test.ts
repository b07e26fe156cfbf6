// Host resources a guest can use up, through real containerd 1.6 + ctr (issue 9):
// - what a container writes lands on disk in its VM's data dir (<SMOLVM_ROOT>/lib/vms/<vm>),
//   never in the state dir: the state dir here is a small tmpfs of its own (as /run is on real
//   hosts), and it must not grow with the writes;
// - the writable disk's size is the write limit: a full disk is ENOSPC in the guest, the
//   container and its shim stay healthy; the io.smolvm.writable-disk-mib annotation sizes it;
// - a guest flooding its console leaves at most console_log_max_kib on the host;
// - the shim daemon killed -9, containerd's `delete` still removes the VM's data dir.
// Every test ends with a leak check (the suite's, plus nothing left under either vms/ dir).
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PrivateContainerd, RUN_MARKER_ENV } from './harness/containerd';
import { describeResult, sleep } from './harness/exec';
import { findMarkedProcesses, mountsUnder } from './harness/host';
import { busyboxImage, importImage, type OciImage } from './harness/image';
import { waitForNoLeaks } from './harness/leaks';
import { repoRoot, selectedRuntime, SMOLVM_RUNTIME } from './harness/suite';
import { waitForStatus } from './harness/tasks';
import { stateFileOf, stateOf } from './harness/state';

const MiB = 1024 * 1024;
/** The state dir's own tmpfs: what a 600 MiB write must not touch. */
const STATE_TMPFS_MIB = 64;
const CONSOLE_CAP_KIB = 64;
const WRITABLE_DISK_ANNOTATION = 'io.smolvm.writable-disk-mib';

interface Fixture {
  containerd: PrivateContainerd;
  image: OciImage;
  root: string;
  stateDir: string;
  dataRoot: string;
}

/** Bytes in use on the filesystem holding `dir`. */
function usedBytes(dir: string): number {
  const st = fs.statfsSync(dir);
  return (st.blocks - st.bfree) * st.bsize;
}

interface VmPlaces {
  /** Its state dir, <stateDir>/vms/<vm>, as the container's state file names it. */
  dir: string;
  /** Where the README says its disks and logs are: <SMOLVM_ROOT>/lib/vms/<vm>. */
  dataDir: string;
  /** What the state file records as its data dir (undefined: none). */
  recordedDataDir: string | undefined;
}

/** The container's VM, from its state file (<stateDir>/tasks/<ns>/<id>.json). */
function vmPlaces(fx: Fixture, id: string): VmPlaces {
  const state = stateOf(fx.containerd, id);
  assert.ok(state.vm, `no VM recorded in ${stateFileOf(fx.containerd, id)}`);
  return { dir: state.vm.stateDir, dataDir: path.join(fx.dataRoot, path.basename(state.vm.stateDir)), recordedDataDir: state.vm.dataDir ?? undefined };
}

/** The VM's files named like `pattern`, wherever they are (its state dir or its data dir). */
function vmFiles(vm: VmPlaces, pattern: RegExp): string[] {
  return [vm.dir, vm.dataDir].flatMap((dir) => (fs.existsSync(dir) ? fs.readdirSync(dir) : [])
    .filter((name) => pattern.test(name)).map((name) => path.join(dir, name)));
}

/** The container's writable disk (its VM's own, or the pod-shaped early VM's it took). */
function writableDisk(vm: VmPlaces): string {
  const disks = vmFiles(vm, /\.ext4$/);
  assert.equal(disks.length, 1, `writable disks of the VM: ${disks.join(', ')}`);
  return disks[0]!;
}

async function sh(fx: Fixture, id: string, execId: string, line: string, timeoutMs = 120_000): Promise<ReturnType<PrivateContainerd['ctr']>> {
  return fx.containerd.ctr(['tasks', 'exec', '--exec-id', execId, id, 'sh', '-c', line], { timeoutMs });
}

async function removeContainer(fx: Fixture, id: string): Promise<void> {
  await fx.containerd.ctr(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 30_000 });
  assert.equal(await waitForStatus(fx.containerd, id, 'STOPPED', 30_000), 'STOPPED');
  await fx.containerd.ctrChecked(['tasks', 'rm', id], { timeoutMs: 30_000 });
  await fx.containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });
}

/** Nothing of `ids` left (the suite's check, our own tmpfs aside), and no VM dir either. */
async function assertNothingLeft(fx: Fixture, ids: string[]): Promise<void> {
  const deadline = Date.now() + 15_000;
  let left: string[] = [];
  for (;;) {
    left = (await waitForNoLeaks({ containerd: fx.containerd, containerIds: ids }, 0)).filter((l) => l !== `mount: ${fx.stateDir}`);
    for (const dir of [path.join(fx.stateDir, 'vms'), fx.dataRoot]) {
      for (const name of fs.existsSync(dir) ? fs.readdirSync(dir) : []) left.push(`vm dir: ${path.join(dir, name)}`);
    }
    if (left.length === 0 || Date.now() > deadline) break;
    await sleep(250);
  }
  assert.deepEqual(left, [], `left behind:\n  ${left.join('\n  ')}`);
}

describe(`host resources a guest can use up [${selectedRuntime()}]`, function () {
  let fx: Fixture | undefined;
  let root = '';
  let mounted = false;

  before(async function () {
    this.timeout(240_000);
    if (selectedRuntime() !== SMOLVM_RUNTIME) this.skip();
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-hostres-'));
    const stateDir = path.join(root, 'smolvm', 'run');
    fs.mkdirSync(stateDir, { recursive: true });
    // The state dir on a small tmpfs of its own, as /run/smolvm is on real hosts (host RAM).
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${STATE_TMPFS_MIB}m,mode=0755`, 'smolvm-test-state', stateDir]);
    mounted = true;
    const config = path.join(root, 'config.toml');
    fs.writeFileSync(config, `console_log_max_kib = ${CONSOLE_CAP_KIB}\n`);
    const image = busyboxImage();
    const containerd = await PrivateContainerd.start({ repoRoot: repoRoot(), smolvmRoot: path.join(root, 'smolvm'), env: { SMOLVM_CONFIG: config } });
    fx = { containerd, image, root, stateDir, dataRoot: path.join(root, 'smolvm', 'lib', 'vms') };
    try {
      await importImage(containerd, image);
    } catch (err) {
      await containerd.stop();
      fx = undefined;
      throw err;
    }
  });

  afterEach(async function () {
    this.timeout(120_000);
    if (!fx) return;
    if (this.currentTest?.state === 'failed') {
      console.error(`\n=== containerd log tail for "${this.currentTest.fullTitle()}" ===\n${fx.containerd.logTail(80)}\n=== end ===`);
    }
    await fx.containerd.removeAllContainers();
  });

  after(async function () {
    this.timeout(120_000);
    // The shims' logs (in containerd's): an exception the daemon survived is still a failure.
    const survived = fx ? fx.containerd.logSince(0, 64 * MiB).split('\n').filter((l) => /uncaught exception|unhandled rejection/.test(l)) : [];
    try {
      await fx?.containerd.stop();
    } finally {
      // containerd's stop() unmounts what is under its SMOLVM_ROOT, this tmpfs included.
      if (mounted && mountsUnder(path.join(root, 'smolvm', 'run')).length > 0) execFileSync('umount', ['-l', path.join(root, 'smolvm', 'run')]);
      if (root) fs.rmSync(root, { recursive: true, force: true });
    }
    assert.deepEqual(survived, [], 'the shim daemons logged exceptions they survived');
  });

  const id = (label: string): string => `hostres-${label}-${process.pid}`;

  it('600 MiB written by a container go to its disk under the data dir, not the state dir; gone after ctr rm', async function () {
    this.timeout(300_000);
    const f = fx!;
    const c = id('write');
    const started = await f.containerd.ctr(['run', '-d', '--runtime', SMOLVM_RUNTIME, f.image.ref, c, 'sleep', '600'], { timeoutMs: 120_000 });
    assert.equal(started.exitCode, 0, describeResult(started));
    assert.equal(await waitForStatus(f.containerd, c, 'RUNNING', 60_000), 'RUNNING');
    const vm = vmPlaces(f, c);
    const disk = writableDisk(vm);
    const stateUsedBefore = usedBytes(f.stateDir);

    // ~10 s here; a disk on the state dir's 64 MiB tmpfs would fill it (QEMU then stops the VM).
    const wrote = await sh(f, c, 'dd', 'dd if=/dev/zero of=/big bs=1M count=600 conv=fsync && echo wrote', 180_000);
    const grown = usedBytes(f.stateDir) - stateUsedBefore;
    assert.ok(grown < 10 * MiB, `the state dir's filesystem grew by ${(grown / MiB).toFixed(1)} MiB`);
    assert.equal(wrote.exitCode, 0, describeResult(wrote));
    assert.match(wrote.stdout.toString(), /wrote/);
    assert.equal(disk, path.join(vm.dataDir, path.basename(disk)), 'the writable disk lies in <SMOLVM_ROOT>/lib/vms/<vm>');
    assert.equal(vm.recordedDataDir, vm.dataDir, 'the state file names the VM\'s data dir');
    const allocated = fs.statSync(disk).blocks * 512;
    assert.ok(allocated >= 600 * MiB, `${disk} holds ${(allocated / MiB).toFixed(1)} MiB`);

    await removeContainer(f, c);
    assert.equal(fs.existsSync(vm.dataDir), false, `${vm.dataDir} left after ctr rm`);
    await assertNothingLeft(f, [c]);
  });

  it('writing past the writable disk is ENOSPC in the guest; the container and shim stay healthy; the annotation sizes the disk', async function () {
    this.timeout(300_000);
    const f = fx!;
    const c = id('full');
    const started = await f.containerd.ctr(['run', '-d', '--runtime', SMOLVM_RUNTIME, '--annotation', `${WRITABLE_DISK_ANNOTATION}=64`, f.image.ref, c, 'sleep', '600'], { timeoutMs: 120_000 });
    assert.equal(started.exitCode, 0, describeResult(started));
    assert.equal(await waitForStatus(f.containerd, c, 'RUNNING', 60_000), 'RUNNING');
    const disk = writableDisk(vmPlaces(f, c));
    assert.equal(fs.statSync(disk).size, 64 * MiB, 'the annotation sized the writable disk');

    const full = await sh(f, c, 'fill', 'dd if=/dev/zero of=/fill bs=1M count=200 conv=fsync');
    assert.notEqual(full.exitCode, 0, describeResult(full));
    assert.match(full.stderr.toString(), /No space left on device/, describeResult(full));
    // Still healthy: the container answers, frees space and writes again; the task runs on.
    const after = await sh(f, c, 'after', 'rm /fill && echo freed && echo again > /again && cat /again');
    assert.equal(after.exitCode, 0, describeResult(after));
    assert.equal(after.stdout.toString(), 'freed\nagain\n');
    assert.equal(await waitForStatus(f.containerd, c, 'RUNNING', 10_000), 'RUNNING');
    assert.ok(fs.statSync(disk).blocks * 512 <= 65 * MiB, 'the host file never grew past the disk');
    await removeContainer(f, c);

    // A bad annotation: refused at once, naming it, nothing left.
    const bad = id('bad');
    const refused = await f.containerd.ctr(['run', '--rm', '--runtime', SMOLVM_RUNTIME, '--annotation', `${WRITABLE_DISK_ANNOTATION}=lots`, f.image.ref, bad, 'true'], { timeoutMs: 60_000 });
    assert.notEqual(refused.exitCode, 0, describeResult(refused));
    assert.match(refused.stderr.toString(), new RegExp(`annotation ${WRITABLE_DISK_ANNOTATION.replace(/\./g, '\\.')}="lots": must be a whole number of MiB`), describeResult(refused));
    await f.containerd.ctr(['containers', 'rm', bad], { timeoutMs: 30_000 });
    await assertNothingLeft(f, [c, bad]);
  });

  it(`a guest flooding its console leaves at most console_log_max_kib (${CONSOLE_CAP_KIB} KiB) on the host`, async function () {
    this.timeout(300_000);
    const f = fx!;
    const c = id('flood');
    // ~300 KB of kernel messages (rate limit off), then a marker: printk goes to the console.
    const flood = 'mknod /kmsg c 1 11 && echo on > /proc/sys/kernel/printk_devkmsg && i=0; ' +
      'while [ $i -lt 3000 ]; do echo "<3>flood $i abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz" > /kmsg; i=$((i+1)); done; ' +
      'echo "<3>flood-done" > /kmsg; sleep 600';
    const started = await f.containerd.ctr(['run', '-d', '--privileged', '--runtime', SMOLVM_RUNTIME, f.image.ref, c, 'sh', '-c', flood], { timeoutMs: 120_000 });
    assert.equal(started.exitCode, 0, describeResult(started));
    const vm = vmPlaces(f, c);
    const consoleFiles = (): string[] => vmFiles(vm, /^console\.log/).sort().reverse();  // .1 first
    const consoleText = (): string => consoleFiles().map((file) => {
      try {
        return fs.readFileSync(file, 'latin1');
      } catch {
        return '';
      }
    }).join('');
    const deadline = Date.now() + 180_000;
    while (!consoleText().includes('flood-done') && Date.now() < deadline) await sleep(200);
    assert.match(consoleText(), /flood-done/, 'the guest finished flooding');
    const bytes = consoleFiles().reduce((sum, file) => sum + fs.statSync(file).size, 0);
    assert.ok(bytes <= CONSOLE_CAP_KIB * 1024, `${bytes} bytes of console on the host (${consoleFiles().join(', ')}), cap ${CONSOLE_CAP_KIB} KiB`);
    assert.ok(consoleFiles().some((file) => file.endsWith('.1')), 'the console log rotated');
    // The newest output is what is kept: the last flood lines, whole.
    assert.match(consoleText(), /flood 2999 abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r?\n/);
    await removeContainer(f, c);
    await assertNothingLeft(f, [c]);
  });

  it('the shim daemon killed -9: containerd\'s delete removes the VM\'s data dir', async function () {
    this.timeout(300_000);
    const f = fx!;
    const c = id('shimkill');
    // --null-io: ctr's own FIFOs would outlive a task whose shim died (ctr's leftovers, not ours).
    const started = await f.containerd.ctr(['run', '-d', '--null-io', '--runtime', SMOLVM_RUNTIME, f.image.ref, c, 'sh', '-c', 'echo data > /file; sleep 600'], { timeoutMs: 120_000 });
    assert.equal(started.exitCode, 0, describeResult(started));
    assert.equal(await waitForStatus(f.containerd, c, 'RUNNING', 60_000), 'RUNNING');
    const vm = vmPlaces(f, c);
    const disk = writableDisk(vm);
    const daemons = findMarkedProcesses(RUN_MARKER_ENV, f.containerd.marker).filter((p) =>
      /containerd-shim-/.test(p.cmdline) && ` ${p.cmdline} `.includes(` -id ${c} `) && !/ (start|delete)$/.test(p.cmdline));
    assert.equal(daemons.length, 1, `shim daemons of ${c}: ${JSON.stringify(daemons)}`);
    process.kill(daemons[0]!.pid, 'SIGKILL');
    // containerd notices, runs `containerd-shim-smolvm-v1 delete` (from the state file alone).
    const deadline = Date.now() + 60_000;
    while ((fs.existsSync(disk) || fs.existsSync(vm.dataDir)) && Date.now() < deadline) await sleep(200);
    assert.equal(fs.existsSync(disk), false, `${disk} left after the delete of a killed shim`);
    assert.equal(fs.existsSync(vm.dataDir), false, `${vm.dataDir} left after the delete of a killed shim`);
    await f.containerd.ctr(['tasks', 'rm', '-f', c], { timeoutMs: 30_000 });
    await f.containerd.ctrChecked(['containers', 'rm', c], { timeoutMs: 30_000 });
    await assertNothingLeft(f, [c]);
  });
});
