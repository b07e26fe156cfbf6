/**
 * `smolvm run --backend kvm` on this host. On a PVM host (these build machines) a stock guest
 * kernel cannot boot: the run must fail fast and clearly and leave nothing behind, and when
 * forced (SMOLVM_KVM_ON_PVM=1) the VMM's report of the guest's death must reach the user.
 * On a host with hardware virtualization it runs the container (the KVM lab checks that path).
 */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { probeHost } from '../../shim/src/vm/host';
import { vmmBuildStatus } from '../../shim/src/vm/vmm/locate';
import { makeBusyboxRootfs } from '../helpers/rootfs';
import { removeWorkDir } from '../helpers/work-dir';
import { skipBecause } from '../helpers/skip';

const repo = path.resolve(__dirname, '..', '..', '..');
const smolvm = path.join(repo, 'bin', 'smolvm');

/** smolvm-vmm processes holding anything under `dir` (a VM of this test left running). */
function vmmsUsing(dir: string): number[] {
  const found: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (fs.readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== 'smolvm-vmm') continue;
      const fds = fs.readdirSync(`/proc/${entry}/fd`).map((fd) => { try { return fs.readlinkSync(`/proc/${entry}/fd/${fd}`); } catch { return ''; } });
      if (fds.some((target) => target.startsWith(dir))) found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

describe('smolvm run --backend kvm', function () {
  this.timeout(180_000);
  let work = '';
  let rootfs = '';
  let env: NodeJS.ProcessEnv = {};
  const host = probeHost(true);

  before(function () {
    if (!fs.existsSync('/dev/kvm')) skipBecause(this, { lacks: 'kvm', detail: 'no /dev/kvm' });
    if (vmmBuildStatus().problem) skipBecause(this, { lacks: 'setup', detail: `smolvm-vmm: ${vmmBuildStatus().problem}` });
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-kvm-run-'));
    rootfs = makeBusyboxRootfs(work);
    env = { ...process.env, SMOLVM_ROOT: path.join(work, 'smolvm') };
  });
  after(() => removeWorkDir(work));

  const run = (args: string[], extraEnv: NodeJS.ProcessEnv = {}) =>
    spawnSync(smolvm, ['run', '--backend', 'kvm', '--rootfs', rootfs, '--', ...args], { env: { ...env, ...extraEnv }, timeout: 150_000 });

  const assertNothingLeft = (): void => {
    for (const vms of [path.join(work, 'smolvm', 'run', 'vms'), path.join(work, 'smolvm', 'lib', 'vms')]) {
      assert.deepEqual(fs.existsSync(vms) ? fs.readdirSync(vms) : [], [], `no VM directory left in ${vms}`);
    }
    assert.deepEqual(vmmsUsing(work), [], 'no smolvm-vmm left running');
  };

  it('on a PVM host: refuses at once, says why and what to use instead', function () {
    if (host.kind !== 'pvm') skipBecause(this, { notHere: `a case for PVM hosts; this host's KVM is ${host.kind}` });
    const started = Date.now();
    const r = run(['uname', '-r']);
    const stderr = r.stderr.toString();
    assert.equal(r.status, 125, stderr);
    assert.ok(Date.now() - started < 20_000, `took ${Date.now() - started} ms`);
    assert.match(stderr, /backend kvm: this host's \/dev\/kvm is provided by kvm_pvm/);
    assert.match(stderr, /Use --backend tcg, or auto/);
    assertNothingLeft();
  });

  it('on a PVM host, forced: the VMM boots the stock kernel, reports its death, and nothing is left', function () {
    if (host.kind !== 'pvm') skipBecause(this, { notHere: `a case for PVM hosts; this host's KVM is ${host.kind}` });
    const r = run(['uname', '-r'], { SMOLVM_KVM_ON_PVM: '1' });
    const stderr = r.stderr.toString();
    assert.equal(r.status, 125, stderr);
    assert.match(stderr, /the VM exited before its agent answered on vsock port 1024/);
    assert.match(stderr, /smolvm-vmm: (internal_error|guest_reset|entry_failed|guest_crash|guest_halt|vmm_fault)/);
    assert.match(stderr, /kvm_pvm, which runs only PVM-patched guest kernels/);
    assertNothingLeft();
  });

  it('on hardware virtualization: runs the command and returns its exit code', function () {
    if (host.kind !== 'hardware') skipBecause(this, { notHere: `needs hardware virtualization, this host's KVM is ${host.kind} (a stock guest cannot boot on it): the KVM lab runs the kvm backend instead` });
    const ok = run(['uname', '-r']);
    assert.equal(ok.status, 0, ok.stderr.toString());
    assert.match(ok.stdout.toString().trim(), /-smolvm$/);
    const failing = run(['sh', '-c', 'exit 7']);
    assert.equal(failing.status, 7, failing.stderr.toString());
    assertNothingLeft();
  });
});
