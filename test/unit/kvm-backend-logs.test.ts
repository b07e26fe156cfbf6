// The kvm backend's console and VMM logs (backends/kvm.ts): the VMM gets pipes, this process
// reads them into capped logs in the VM's data dir. A guest flooding its serial port leaves at
// most the cap on the host, and a guest's last words are in the log once `exited` resolves.
// The guests are the tiny freestanding ones of test/guests, on this machine's /dev/kvm
// (PVM runs them).
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { stderrLogger } from '../../shim/src/log';
import type { VmConfig, Vmm } from '../../shim/src/vm/backend';
import { FORCE_ON_PVM_ENV, KvmBackend } from '../../shim/src/vm/backends/kvm';
import { logBytes, readLogTail, ROTATED_SUFFIX } from '../../shim/src/vm/capped-log';
import { vmmBuildStatus } from '../../shim/src/vm/vmm/locate';
import { buildGuest, ensureVmmBuilt, kvmUsable, REPO_ROOT, VMM_BINARY } from '../guests/vmm-harness';

describe('kvm backend: console and VMM logs through pipes, capped', function () {
  this.timeout(60_000);
  let workDir = '';
  let longGuest = '';
  let pvhGuest = '';
  let forceBefore: string | undefined;
  const vms: Vmm[] = [];
  const log = stderrLogger('error');

  before(function () {
    if (!kvmUsable()) this.skip();
    this.timeout(600_000);  // first builds of the VMM and the addon on 2 shared cores
    ensureVmmBuilt();
    if (!vmmBuildStatus().addonBuilt) {
      execFileSync('bash', [path.join(REPO_ROOT, 'native-vmm', 'src', 'addon', 'build.sh')], { stdio: ['ignore', 'ignore', 'inherit'] });
    }
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-kvm-logs-'));
    longGuest = buildGuest('long64', workDir);
    pvhGuest = buildGuest('pvh', workDir);
    fs.writeFileSync(path.join(workDir, 'initramfs.txt'), 'initramfs-ok\0');
    // A PVM host boots no stock kernel, but these guests run there.
    forceBefore = process.env[FORCE_ON_PVM_ENV];
    process.env[FORCE_ON_PVM_ENV] = '1';
  });

  afterEach(async () => {
    for (const vm of vms.splice(0)) await vm.kill();
  });

  after(() => {
    if (forceBefore === undefined) delete process.env[FORCE_ON_PVM_ENV];
    else process.env[FORCE_ON_PVM_ENV] = forceBefore;
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  function config(name: string, kernel: string, cmdline: string, logMaxBytes: number): VmConfig {
    const dir = path.join(workDir, name, 'state');
    const dataDir = path.join(workDir, name, 'data');
    fs.mkdirSync(dir, { recursive: true });
    fs.mkdirSync(dataDir, { recursive: true });
    return {
      vmId: name, dir, dataDir, logMaxBytes, slots: [], guest: { kernel, initramfs: path.join(workDir, 'initramfs.txt'), cmdline },
      shape: { memoryMiB: 32, vcpus: 1, disks: [], diskHotplug: false, nics: [], shares: [], jail: {} },
    };
  }

  it('a guest flooding its serial port leaves at most the cap on the host', async () => {
    // The guest prints its command line (3.5 KB here) and then a dot now and then, forever:
    // far more than this cap.
    const cap = 1024;
    const cfg = config('flood', longGuest, `s ${'A'.repeat(3500)} end-of-cmdline`, cap);
    const vm = await new KvmBackend(VMM_BINARY).boot(cfg, log);
    vms.push(vm);
    assert.equal(vm.consoleLog, path.join(cfg.dataDir, 'console.log'), 'the console log is in the data dir');
    assert.equal(await vm.consoleSays('end-of-cmdline', 10_000), true, vm.diagnostics());
    assert.equal(await vm.consoleSays('...', 10_000), true, vm.diagnostics());
    assert.ok(fs.existsSync(vm.consoleLog + ROTATED_SUFFIX), 'the console log rotated');
    assert.ok(logBytes(vm.consoleLog) <= cap, `${logBytes(vm.consoleLog)} bytes of console on the host, cap ${cap}`);
    await vm.kill();
    await vm.exited;
    assert.ok(logBytes(vm.consoleLog) <= cap, `${logBytes(vm.consoleLog)} bytes after the end, cap ${cap}`);
    // The newest output is what is kept.
    assert.match(readLogTail(vm.consoleLog), /end-of-cmdline[^]*\.\.\.$/);
    assert.deepEqual(fs.readdirSync(cfg.dataDir).sort(), ['console.log', 'console.log.1', 'vmm.log']);
  });

  it('a guest\'s last words are in the console log once the VM has exited', async () => {
    const cfg = config('reset', pvhGuest, 'pvh-cmdline', 1024 * 1024);
    const vm = await new KvmBackend(VMM_BINARY).boot(cfg, log);
    vms.push(vm);
    const exit = await vm.exited;
    assert.equal(exit.code, 0);
    const consoleText = readLogTail(vm.consoleLog);
    assert.match(consoleText, /hello from pvh\ncmdline: pvh-cmdline/);
    assert.match(consoleText, /pvh guest done/);
    assert.match(vm.diagnostics(), /guest console:[\s\S]*pvh guest done/);
  });
});
