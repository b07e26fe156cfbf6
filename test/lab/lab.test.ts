// The KVM lab (issue 3, test 2): a QEMU-TCG VM with an emulated AMD SVM CPU, so a real
// /dev/kvm inside, on a host that has none. Each `it` boots the L1 VM once (a few seconds);
// the whole file stays within a few minutes. Timings are printed: they are the lab's numbers,
// not speed claims (everything is emulated).
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { LabStallError, type LabRunResult, type PreparedLab, prepareLab, runInLab } from '../../lab/lab';
import { runL2QemuBoot } from '../../lab/l2';
import { ensureKvmProbe, findGuestKernel } from '../../lab/tools';
import { repoRoot, smolvmPaths } from '../../shim/src/config/paths';
import { makeBusyboxRootfs } from '../helpers/rootfs';
import { skipBecause } from '../helpers/skip';

const BOOT_TIMEOUT_MS = 120_000;
/** The probe boots L1 in ~3 s and runs in ms; it gives up on a stuck KVM_RUN itself after 30 s. */
const PROBE_TIMEOUT_MS = 75_000;
const SMOLVM = path.join(repoRoot(), 'bin', 'smolvm');
const cacheDir = smolvmPaths().cacheDir;

/** What `smolvm doctor --json` prints (the parts these tests read). */
interface DoctorReport {
  host: { kind: string; devKvm: boolean; cpuVirtFlags: string[]; kvmModules: string[] };
  backends: { kvm: { available: boolean; note: string } };
  auto: { backend: string; reason: string };
  kernel: { path: string; release: string } | null;
}

/** Environment the smolvm CLI inside the lab needs to find the same state/caches as the host. */
function smolvmEnv(): Record<string, string> {
  return process.env.SMOLVM_ROOT ? { SMOLVM_ROOT: process.env.SMOLVM_ROOT } : {};
}

function note(line: string): void {
  process.stdout.write(`      [lab] ${line}\n`);
}

function describeFailure(result: LabRunResult): string {
  return `exit ${result.exitCode}\n--- stdout ---\n${result.stdout}\n--- stderr ---\n${result.stderr}` +
    `\n--- L1 console (end) ---\n${result.consoleLog.slice(-3000)}`;
}

function labTempDirs(): string[] {
  return fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith('smolvm-lab-') && !n.startsWith('smolvm-lab-parts-')).sort();
}

/** Our QEMU children that are still around (running or unreaped). */
function ourLabQemus(): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === process.pid && fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('smolvm-lab')) pids.push(Number(entry));
    } catch {
      // the process went away while we looked
    }
  }
  return pids;
}

/** The L1 `smolvm doctor --json`, run once and shared by the tests that need it. */
let doctorMemo: Promise<DoctorReport> | undefined;
function labDoctor(): Promise<DoctorReport> {
  doctorMemo ??= runInLab([SMOLVM, 'doctor', '--json'], { timeoutMs: BOOT_TIMEOUT_MS, env: smolvmEnv() }).then((result) => {
    if (result.exitCode !== 0) throw new Error(`smolvm doctor --json in the lab failed: ${describeFailure(result)}`);
    note(`smolvm doctor --json: L1 boot ${result.bootMs} ms, command ${result.commandMs} ms`);
    return JSON.parse(result.stdout) as DoctorReport;
  });
  return doctorMemo;
}

describe('KVM lab (QEMU-TCG L1 with nested SVM)', function () {
  this.timeout(BOOT_TIMEOUT_MS + 30_000);
  let lab: PreparedLab;

  before(async function () {
    this.timeout(600_000); // the first run downloads the L1 kernel (~70 MB) and unpacks it
    lab = await prepareLab({ log: note });
    note(`L1 kernel ${lab.kernel.package} ${lab.kernel.debianVersion}, booting ${path.basename(lab.kernel.bootImage)}, ` +
      `modules: ${lab.kernel.modules.map((m) => path.basename(m, '.ko')).join(' ')}`);
  });

  it('caches the current linux-image-amd64 dependency with its modules, booted through PVH', () => {
    assert.ok(lab.kernel.dir.startsWith(path.join(cacheDir, 'lab') + path.sep), lab.kernel.dir);
    assert.ok(lab.kernel.package.startsWith('linux-image-') && lab.kernel.package.endsWith('-amd64'), lab.kernel.package);
    assert.ok(!lab.kernel.package.includes('cloud'), 'the -cloud flavour has no 9p');
    const loaded = lab.kernel.modules.map((m) => path.basename(m, '.ko'));
    for (const needed of ['9p', '9pnet_virtio', 'overlay', 'kvm', 'kvm_amd']) {
      assert.ok(loaded.includes(needed) || lab.kernel.builtin.includes(needed), `module ${needed}`);
    }
    assert.ok(loaded.indexOf('kvm') < loaded.indexOf('kvm_amd'), 'kvm loads before kvm_amd');
    assert.equal(path.basename(lab.kernel.bootImage), 'vmlinux');
  });

  it('runs a command with its env and cwd, returns stdout, stderr and the exit code, leaves nothing behind', async () => {
    const tempsBefore = labTempDirs();
    const result = await runInLab(
      ['sh', '-c', 'echo "$GREETING from $(pwd)"; echo to-stderr >&2; test -c /dev/kvm && echo dev-kvm-present; ' +
        'test -x /work/main/bin/smolvm && echo repo-visible; touch /var/lib/smolvm/lab-write-test && echo overlay-writable; exit 7'],
      { timeoutMs: BOOT_TIMEOUT_MS, env: { GREETING: "hello 'lab'" }, cwd: repoRoot() },
    );
    note(`L1 boot ${result.bootMs} ms, command ${result.commandMs} ms, total ${result.totalMs} ms`);
    assert.equal(result.exitCode, 7, describeFailure(result));
    assert.equal(result.stdout, `hello 'lab' from ${repoRoot()}\ndev-kvm-present\nrepo-visible\noverlay-writable\n`);
    assert.equal(result.stderr, 'to-stderr\n');
    assert.equal(result.kernelRelease, lab.kernel.release);
    assert.ok(result.bootMs > 0 && result.bootMs <= result.totalMs);
    // The write went to the lab's tmpfs overlay, not to the host.
    assert.ok(!fs.existsSync('/var/lib/smolvm/lab-write-test'), 'a write inside the lab reached the host');
    assert.deepEqual(labTempDirs(), tempsBefore, 'runInLab left a temp dir behind');
    assert.deepEqual(ourLabQemus(), [], 'runInLab left a QEMU behind');
  });

  it('kills QEMU at the timeout with a clear error and leaves nothing behind', async () => {
    const tempsBefore = labTempDirs();
    const started = Date.now();
    await assert.rejects(runInLab(['sleep', '600'], { timeoutMs: 3000 }), /lab: timed out after 3000 ms running \["sleep","600"\]; QEMU killed/);
    assert.ok(Date.now() - started < 10_000, `took ${Date.now() - started} ms to give up`);
    assert.deepEqual(labTempDirs(), tempsBefore, 'runInLab left a temp dir behind');
    assert.deepEqual(ourLabQemus(), [], 'runInLab left a QEMU behind');
  });

  it('kills a command that stops making output (stallMs) with a LabStallError, apart from the timeout', async () => {
    const tempsBefore = labTempDirs();
    const started = Date.now();
    await assert.rejects(runInLab(['sh', '-c', 'echo started; sleep 600'], { timeoutMs: BOOT_TIMEOUT_MS, stallMs: 4000 }), (err: unknown) => {
      assert.ok(err instanceof LabStallError, String(err));
      assert.match(err.message, /lab: stalled: no output and no console line for \d+ ms running .*QEMU killed/s);
      assert.match(err.message, /--- command stdout so far ---\nstarted/);
      return true;
    });
    assert.ok(Date.now() - started < BOOT_TIMEOUT_MS / 2, `took ${Date.now() - started} ms to give up`);
    assert.deepEqual(labTempDirs(), tempsBefore, 'runInLab left a temp dir behind');
    assert.deepEqual(ourLabQemus(), [], 'runInLab left a QEMU behind');
  });

  it('has a working /dev/kvm: a real-mode guest does port I/O, MMIO and hlt through KVM', async function () {
    this.timeout(2 * PROBE_TIMEOUT_MS + 30_000);
    const probe = await ensureKvmProbe(cacheDir);
    // Nested SVM emulated by TCG has hung once in CI with nothing on the console: a hang gets
    // one more try, reported, and a second hang fails with everything that was seen.
    let result: LabRunResult;
    try {
      result = await runInLab([probe], { timeoutMs: PROBE_TIMEOUT_MS });
      if (/did not return within/.test(result.stderr)) throw new Error(result.stderr.trim());
    } catch (err) {
      if (!/timed out|did not return within/.test((err as Error).message)) throw err;
      note(`kvm-probe hung once in the lab, trying again: ${(err as Error).message.split('\n')[0]}`);
      result = await runInLab([probe], { timeoutMs: PROBE_TIMEOUT_MS });
    }
    assert.equal(result.exitCode, 0, describeFailure(result));
    assert.match(result.stdout, /exit io out port 0x10 value 0x4b\n.*0x56\n.*0x4d\n.*0x2a\n/);
    assert.match(result.stdout, /exit mmio write addr 0x5000 len 1 value 0x2a\nkvm-probe: exit hlt\nkvm-probe: OK\n/);
  });

  it('the native VMM (smolvm-vmm --probe) finds a usable, non-PVM KVM inside', async function () {
    const vmm = path.join(repoRoot(), 'native-vmm', 'build', 'smolvm-vmm');
    if (!fs.existsSync(vmm)) skipBecause(this, { lacks: 'setup', detail: `${vmm} is not built (native-vmm/build.sh)` });
    const result = await runInLab([vmm, '--probe'], { timeoutMs: BOOT_TIMEOUT_MS });
    assert.equal(result.exitCode, 0, describeFailure(result));
    const report = JSON.parse(result.stdout) as {
      kvm?: boolean; kvm_pvm_module?: boolean; intel_vmx_setup?: boolean;
      cpuid_entries?: number; cpuid_error?: string; msr_index_list?: number; msr_list_error?: string;
    };
    note(`smolvm-vmm --probe in the lab: ${result.stdout.trim()}`);
    assert.equal(report.kvm, true);
    assert.equal(report.kvm_pvm_module, false);
    assert.equal(report.intel_vmx_setup, false, 'the lab emulates AMD SVM');
    // Real KVM answers both (a plain C caller gets ~30 CPUID entries and ~97 MSRs here). EINVAL
    // means the ioctl number is wrong: in C++, bookworm's __DECLARE_FLEX_ARRAY makes
    // sizeof(kvm_cpuid2) 12 and sizeof(kvm_msr_list) 8 (see lab/README.md).
    const hint = ' (C++ flex-array ioctl size pitfall? see lab/README.md)';
    assert.equal(report.cpuid_error, undefined, `KVM_GET_SUPPORTED_CPUID failed on real KVM${hint}`);
    assert.ok((report.cpuid_entries ?? 0) > 0, 'no supported CPUID entries');
    assert.equal(report.msr_list_error, undefined, `KVM_GET_MSR_INDEX_LIST failed on real KVM${hint}`);
    assert.ok((report.msr_index_list ?? 0) > 0, 'empty MSR index list');
  });

  it('smolvm doctor --json inside reports host kind "hardware" (svm)', async () => {
    const report = await labDoctor();
    assert.equal(report.host.kind, 'hardware', JSON.stringify(report.host));
    assert.deepEqual(report.host.cpuVirtFlags, ['svm']);
    assert.ok(report.host.devKvm);
    assert.ok(report.host.kvmModules.includes('kvm_amd'), JSON.stringify(report.host.kvmModules));
    assert.ok(!report.host.kvmModules.includes('kvm_pvm'));
    note(`kvm backend in the lab: ${report.backends.kvm.available ? 'available' : `unavailable (${report.backends.kvm.note})`}; ` +
      `auto picks ${report.auto.backend}: ${report.auto.reason}`);
  });

  it('boots our guest kernel as an L2 guest under qemu -enable-kvm -M microvm,acpi=off (bench baseline)', async function () {
    if (!findGuestKernel(cacheDir)) skipBecause(this, { lacks: 'setup', detail: `no guest kernel under ${cacheDir}/kernels (run \`smolvm kernel build\`)` });
    // Nested KVM under TCG is slow and, on a loaded machine, very slow: allow for it. Two boots
    // (cold, then warm) prove the path; the bench (npm run bench:lab-boot) does the timing.
    this.timeout(420_000);
    const l2 = await runL2QemuBoot({ runs: 2, cacheDir, timeoutMs: 400_000 });
    assert.equal(l2.initMs.length, 2);
    assert.ok(l2.guestRelease.length > 0 && l2.guestRelease !== lab.kernel.release, l2.guestRelease);
    note(`L2 ${l2.guestRelease} under QEMU -enable-kvm -M microvm in the lab, boot to init: ` +
      l2.initMs.map((ms, i) => `${ms} ms${i === 0 ? ' (cold)' : ''}`).join(', ') + `; QEMU exit after ${l2.qemuExitMs.join(', ')} ms`);
  });

  describe('kvm backend: smolvm run --backend kvm inside the lab', () => {
    let rootfs: string | undefined;
    let guestRelease: string;

    before(async function () {
      const report = await labDoctor();
      // The lab exists to run the kvm backend: an unusable one there is a machine that lacks KVM.
      if (!report.backends.kvm.available) {
        skipBecause(this, { lacks: 'kvm', detail: `smolvm doctor --json in the lab says the kvm backend is unavailable (${report.backends.kvm.note || report.auto.reason})` });
      }
      if (!report.kernel) skipBecause(this, { lacks: 'setup', detail: 'no guest kernel (run `smolvm kernel build`)' });
      guestRelease = report.kernel.release;
      rootfs = makeBusyboxRootfs(); // in the host's tmpdir: the lab sees the host's `/`
    });

    after(() => {
      if (rootfs) fs.rmSync(rootfs, { recursive: true, force: true });
    });

    it('`-- uname -r` prints the guest kernel release and exits 0', async () => {
      const result = await runInLab([SMOLVM, 'run', '--backend', 'kvm', '--rootfs', rootfs!, '--', 'uname', '-r'],
        { timeoutMs: BOOT_TIMEOUT_MS, env: smolvmEnv() });
      note(`smolvm run --backend kvm uname -r: L1 boot ${result.bootMs} ms, smolvm run ${result.commandMs} ms`);
      assert.equal(result.exitCode, 0, describeFailure(result));
      assert.equal(result.stdout.trim(), guestRelease);
      assert.notEqual(result.stdout.trim(), lab.kernel.release, 'that is the L1 kernel, not our guest');
    });

    it('a failing command\'s exit code comes back', async () => {
      const result = await runInLab([SMOLVM, 'run', '--backend', 'kvm', '--rootfs', rootfs!, '--', 'sh', '-c', 'echo bye >&2; exit 42'],
        { timeoutMs: BOOT_TIMEOUT_MS, env: smolvmEnv() });
      assert.equal(result.exitCode, 42, describeFailure(result));
      assert.match(result.stderr, /bye/);
    });
  });
});
