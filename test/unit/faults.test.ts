// Fault reporting without a VM: how a lost VM is described (guest kernel panic, VMM killed or
// exited), and `delete` stopping the binary:// loggers a dead daemon recorded (SIGTERM, then
// SIGKILL; never a process whose start time differs).
import * as assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { deleteShim } from '../../shim/src/bootstrap/delete';
import { DeleteResponse } from '../../shim/src/gen/containerd/task/v2/shim';
import { describeVmLoss, describeVmmEnd, kernelPanicLine, type VmExit, type Vmm } from '../../shim/src/vm/backend';
import { StateStore } from '../../shim/src/state/store';
import { isSameProcessAlive, processStartTime } from '../../shim/src/util/proc';

const PANIC_CONSOLE = [
  '[    1.049619] Unable to read current time from RTC',
  'smolvm-init: info: container p2: init process 31 created',
  '[    3.371888] Kernel panic - not syncing: Out of memory: system-wide panic_on_oom is enabled',
  '[    3.372650] Kernel Offset: disabled',
  '',
].join('\r\n');

function fakeVm(consoleLog: string, exited: Promise<VmExit>): Vmm {
  const unused = (): never => { throw new Error('not used'); };
  return {
    backend: 'tcg', identity: { pid: 4242, startTime: '1' }, sockets: {}, consoleLog, exited,
    connectAgent: unused, diagnostics: () => '', kill: unused, pause: unused, resume: unused, refreshSlot: unused,
    consoleSays: unused,
  } as Vmm;
}

describe('lost VM diagnostics', () => {
  let dir: string;
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-faults-')); });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('finds the kernel panic line in console output, without the timestamp', () => {
    assert.equal(kernelPanicLine(PANIC_CONSOLE), 'Kernel panic - not syncing: Out of memory: system-wide panic_on_oom is enabled');
    assert.equal(kernelPanicLine('[ 0.1] booting\r\nsmolvm-init: info: handshake done\r\n'), null);
  });

  it('says how the VMM ended: signal, exit code, or still running', () => {
    assert.equal(describeVmmEnd('tcg', 7, { code: null, signal: 'SIGKILL' }), 'the VMM (qemu-system-x86_64, pid 7) was killed by SIGKILL');
    assert.equal(describeVmmEnd('kvm', 8, { code: 1, signal: null }), 'the VMM (smolvm-vmm, pid 8) exited with code 1');
    assert.match(describeVmmEnd('tcg', 9, null), /pid 9\) still runs, but the guest agent's channel closed/);
  });

  it('names a guest kernel panic with its panic line and the VMM exit', async () => {
    const consoleLog = path.join(dir, 'console.log');
    fs.writeFileSync(consoleLog, 'x'.repeat(200_000) + PANIC_CONSOLE);
    const reason = await describeVmLoss(fakeVm(consoleLog, Promise.resolve({ code: 0, signal: null })));
    assert.equal(reason, 'the guest kernel panicked: "Kernel panic - not syncing: Out of memory: system-wide panic_on_oom is enabled"; ' +
      'the VMM (qemu-system-x86_64, pid 4242) exited with code 0');
  });

  it('does not wait past its bound for a VMM that does not exit', async () => {
    const started = Date.now();
    const reason = await describeVmLoss(fakeVm(path.join(dir, 'missing.log'), new Promise<VmExit>(() => undefined)), 50);
    assert.match(reason, /still runs/);
    assert.ok(Date.now() - started < 1_000);
  });
});

describe('delete stops the loggers of a dead daemon', () => {
  let dir: string;
  let savedRoot: string | undefined;
  const children: ChildProcess[] = [];

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-faults-'));
    savedRoot = process.env.SMOLVM_ROOT;
    process.env.SMOLVM_ROOT = path.join(dir, 'root');
  });
  afterEach(() => {
    for (const child of children.splice(0)) child.kill('SIGKILL');
    if (savedRoot === undefined) delete process.env.SMOLVM_ROOT;
    else process.env.SMOLVM_ROOT = savedRoot;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function startProcess(script: string): Promise<{ pid: number; startTime: string }> {
    const child = spawn('sh', ['-c', script], { stdio: 'ignore' });
    children.push(child);
    await new Promise((resolve) => child.once('spawn', resolve));
    await new Promise((resolve) => setTimeout(resolve, 50)); // let `trap` run before it is signalled
    return { pid: child.pid!, startTime: processStartTime(child.pid!)! };
  }

  it('SIGTERMs a recorded logger, SIGKILLs one that ignores it, spares a reused pid', async function () {
    this.timeout(10_000);
    const polite = await startProcess('exec sleep 30');
    const stubborn = await startProcess('trap "" TERM; exec sleep 30'); // an ignored signal stays ignored across exec
    const bystander = await startProcess('exec sleep 30');
    const store = new StateStore(path.join(dir, 'root', 'run'));
    store.write({
      version: 1, id: 'c1', namespace: 'ns', bundle: dir, status: 'running', shimPid: 1, vm: null,
      loggers: [
        { execId: '', ...polite },
        { execId: 'e1', ...stubborn },
        // The bystander's pid with another start time: a recycled pid, never signalled.
        { execId: 'e2', pid: bystander.pid, startTime: String(Number(bystander.startTime) + 1) },
      ],
    });
    const started = Date.now();
    const response = DeleteResponse.decode(await deleteShim({
      namespace: 'ns', address: '', publishBinary: '', id: 'c1', bundle: dir, debug: false, version: false, action: 'delete',
    }));
    assert.equal(response.exitStatus, 137);
    assert.equal(isSameProcessAlive(polite), false, 'the logger that honours SIGTERM is gone');
    assert.equal(isSameProcessAlive(stubborn), false, 'the logger that ignores SIGTERM is gone');
    assert.equal(isSameProcessAlive(bystander), true, 'a process with another start time is left alone');
    assert.ok(Date.now() - started < 4_000, `delete took ${Date.now() - started} ms (containerd allows ~5 s)`);
    assert.equal(store.read('ns', 'c1'), null);
  });
});
