/**
 * The node addon (native-vmm/src/addon) through its typed wrapper (shim/src/vm/vmm): it
 * spawns smolvm-vmm with exactly fds 0-3, passes host files as descriptors (SCM_RIGHTS), speaks
 * the control protocol on its own thread, and reports events and the process's exit (pidfd).
 * The guests are the tiny freestanding ones of test/guests, on this machine's /dev/kvm.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { VmmClient } from '../../shim/src/vm/vmm/client';
import { vmmBuildStatus } from '../../shim/src/vm/vmm/locate';
import { probeKvm } from '../../shim/src/vm/vmm/probe';
import type { VmmEvent } from '../../shim/src/vm/vmm/protocol';
import { processStartTime } from '../../shim/src/util/proc';
import { buildGuest, ensureVmmBuilt, kvmUsable, REPO_ROOT, VMM_BINARY } from '../guests/vmm-harness';
import { skipBecause } from '../helpers/skip';

/** Builds the addon when it is missing (npm install normally has). */
export function ensureAddonBuilt(): void {
  if (!vmmBuildStatus().addonBuilt) {
    execFileSync('bash', [path.join(REPO_ROOT, 'native-vmm', 'src', 'addon', 'build.sh')], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
}

function openFds(pid: number | 'self'): Map<string, string> {
  const fds = new Map<string, string>();
  for (const fd of fs.readdirSync(`/proc/${pid}/fd`)) {
    try {
      fds.set(fd, fs.readlinkSync(`/proc/${pid}/fd/${fd}`));
    } catch {
      // closed between readdir and readlink (e.g. the readdir's own fd)
    }
  }
  return fds;
}

function waitUntil(what: string, predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (predicate()) return resolve();
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(check, 20);
    };
    check();
  });
}

describe('VMM addon: smolvm-vmm driven through node-addon-api', function () {
  this.timeout(30_000);
  let workDir = '';
  let longGuest = '';
  let pvhGuest = '';
  let initramfs = '';
  const clients: VmmClient[] = [];

  async function spawnClient(logFile?: string): Promise<{ client: VmmClient; events: VmmEvent[] }> {
    const client = await VmmClient.spawn({ vmDir: workDir, binary: VMM_BINARY, logFile });
    clients.push(client);
    const events: VmmEvent[] = [];
    client.onEvent((event) => events.push(event));
    return { client, events };
  }

  before(function () {
    this.timeout(600_000);  // first builds of the VMM and the addon on 2 shared cores
    ensureVmmBuilt();
    ensureAddonBuilt();
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-addon-test-'));
    longGuest = buildGuest('long64', workDir);
    pvhGuest = buildGuest('pvh', workDir);
    initramfs = path.join(workDir, 'initramfs.txt');
    fs.writeFileSync(initramfs, 'initramfs-ok\0');
  });

  afterEach(async () => {
    for (const client of clients.splice(0)) {
      if (!client.exited) client.signal('SIGKILL');
      await client.terminated;
    }
  });

  after(() => {
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  it('probes the host KVM off the event loop', async function () {
    if (!fs.existsSync('/dev/kvm')) skipBecause(this, { lacks: 'kvm', detail: 'no /dev/kvm' });
    const probe = await probeKvm();
    assert.equal(probe.devKvm, true);
    if (kvmUsable()) assert.equal(probe.apiVersion, 12, 'KVM_API_VERSION is 12 on every Linux');
    assert.equal(probe.pvm, fs.existsSync('/sys/module/kvm_pvm'));
    assert.match(probe.vendor, /^(GenuineIntel|AuthenticAMD|HygonGenuine|.+)$/);
    // The variable-length ioctls use the C layouts (kvm_abi.h): every KVM, PVM included, answers.
    if (kvmUsable()) {
      assert.equal(probe.cpuidError, null);
      assert.ok((probe.supportedCpuidEntries ?? 0) > 0, 'KVM_GET_SUPPORTED_CPUID returns entries');
      assert.equal(probe.msrIndexError, null);
      assert.ok((probe.msrIndexCount ?? 0) > 0, 'KVM_GET_MSR_INDEX_LIST returns indices');
    }
    if (kvmUsable()) assert.equal(probe.capabilities.irqchip, 1);
  });

  it('spawns smolvm-vmm with exactly stdin=/dev/null, the log on 1+2 and the control socket on 3', async () => {
    const log = path.join(workDir, 'fds.log');
    const { client } = await spawnClient(log);
    assert.ok(processStartTime(client.pid) !== null);
    const fds = openFds(client.pid);
    assert.equal(fds.get('0'), '/dev/null');
    assert.equal(fds.get('1'), log);
    assert.equal(fds.get('2'), log);
    assert.match(fds.get('3') ?? '', /^socket:/);
    const ours = new Set(openFds('self').values());
    for (const [fd, target] of fds) {
      if (Number(fd) <= 3) continue;
      // The VMM's own eventfd/signalfd/epoll (and /dev/kvm later): nothing of ours.
      assert.match(target, /^anon_inode:/, `fd ${fd} of the VMM is ${target}`);
      assert.ok(!target.startsWith('/') || !ours.has(target), `fd ${fd} (${target}) leaked from the shim`);
    }
    const sid = fs.readFileSync(`/proc/${client.pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[3];
    assert.equal(Number(sid), client.pid, 'the VMM runs in its own session');
    client.closeControl();
    const end = await client.terminated;
    assert.equal(end.code, 0, 'closing the control socket before configure ends the VMM cleanly');
    assert.equal(end.signal, null);
  });

  describe('tiny guests on /dev/kvm', function () {
    before(function () {
      if (!kvmUsable()) skipBecause(this, { lacks: 'kvm', detail: 'no usable /dev/kvm' });
    });

    it('boots a guest: serial through a passed descriptor, started/exited events, pidfd exit', async () => {
      const serialLog = path.join(workDir, 'serial-fd.log');
      const serialFd = fs.openSync(serialLog, 'w');
      const exitRecord = path.join(workDir, 'exit.json');
      const { client, events } = await spawnClient();
      try {
        const configured = await client.configure({
          memoryMiB: 32, kernel: pvhGuest, initramfs, cmdline: 'pvh-cmdline', serial: { fd: serialFd }, exitRecordPath: exitRecord,
        });
        assert.match(configured.boot, /^PVH 32-bit entry/);
        assert.match(configured.cmdline, /^pvh-cmdline virtio_mmio\.device=/);
      } finally {
        fs.closeSync(serialFd);  // the VMM holds its own copy
      }
      await client.start();
      const end = await client.terminated;
      assert.equal(end.reason, 'guest_reset');
      assert.match(end.detail, /i8042/);
      assert.equal(end.code, 0);
      assert.deepEqual(events.map((e) => e.kind), ['started', 'exited', 'process-exit']);
      const serial = fs.readFileSync(serialLog, 'latin1');
      assert.match(serial, /hello from pvh\ncmdline: pvh-cmdline/);
      assert.match(serial, /initramfs-ok/);
      assert.match(serial, /pvh guest done/);
      assert.equal(JSON.parse(fs.readFileSync(exitRecord, 'utf8')).pid, client.pid);
      assert.ok(!fs.existsSync(`/proc/${client.pid}`), 'reaped by the addon (no zombie left)');
    });

    it('pauses, resumes and stops a running guest', async () => {
      const serialLog = path.join(workDir, 'spin.log');
      const { client, events } = await spawnClient();
      await client.configure({ memoryMiB: 32, kernel: longGuest, initramfs, cmdline: 's', serial: serialLog });
      assert.equal(await client.status(), 'configured');
      await client.start();
      assert.equal(await client.status(), 'running');
      await waitUntil('the guest to print dots', () => fs.readFileSync(serialLog, 'latin1').includes('...'));
      await client.pause();
      assert.equal(await client.status(), 'paused');
      const paused = fs.statSync(serialLog).size;
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(fs.statSync(serialLog).size, paused, 'no output while paused');
      await client.resume();
      await waitUntil('output after resume', () => fs.statSync(serialLog).size > paused + 2);
      await client.stop();
      const end = await client.terminated;
      assert.equal(end.reason, 'stopped');
      assert.equal(end.code, 0);
      assert.deepEqual(events.map((e) => e.kind), ['started', 'paused', 'resumed', 'exited', 'process-exit']);
    });

    it('notices through the pidfd a VMM killed from outside, and fails what was pending', async () => {
      const { client } = await spawnClient();
      await client.configure({ memoryMiB: 32, kernel: longGuest, initramfs, cmdline: 's' });
      await client.start();
      process.kill(client.pid, 'SIGKILL');
      const end = await client.terminated;
      assert.deepEqual(end, { reason: null, detail: '', code: null, signal: 'SIGKILL' });
      await assert.rejects(client.status(), /smolvm-vmm \(pid \d+\) has exited/);
      assert.equal(client.signal('SIGTERM'), false, 'no signal to a dead VMM');
    });
  });

  describe('bad input: clear errors, nothing left behind', () => {
    let fdsBefore = 0;
    beforeEach(() => { fdsBefore = openFds('self').size; });

    it('a missing binary', async () => {
      await assert.rejects(VmmClient.spawn({ vmDir: workDir, binary: path.join(workDir, 'no-such-vmm') }),
        /smolvm-vmm binary .*no-such-vmm: No such file or directory \(build it with `npm run build:vmm`\)/);
      await assert.rejects(VmmClient.spawn({ vmDir: workDir, binary: 'relative/vmm' }), /must be an absolute path/);
      assert.equal(openFds('self').size, fdsBefore, 'no descriptor leaked');
    });

    it('a binary that exits before its hello', async () => {
      await assert.rejects(VmmClient.spawn({ vmDir: workDir, binary: '/bin/false' }), /exited with code 1 before its hello/);
      await waitUntil('the addon to close the control socket, pidfd and eventfd', () => openFds('self').size <= fdsBefore);
    });

    it('a peer that breaks the framing is killed, with the reason', async () => {
      const liar = path.join(workDir, 'liar.sh');
      // A 4 GiB frame header on the control socket, then silence.
      fs.writeFileSync(liar, '#!/bin/sh\nprintf \'\\377\\377\\377\\377\' >&3\nexec sleep 30\n', { mode: 0o755 });
      await assert.rejects(VmmClient.spawn({ vmDir: workDir, binary: liar }), /was killed by SIGKILL \(smolvm-vmm sent a frame of 4294967295 bytes, over the 1048576-byte limit\) before its hello/);
      await waitUntil('the addon to close its descriptors', () => openFds('self').size <= fdsBefore);
    });

    it('bad configurations name the field; the VMM keeps serving; closed fds are refused', async function () {
      if (!kvmUsable()) skipBecause(this, { lacks: 'kvm', detail: 'no usable /dev/kvm' });
      const { client } = await spawnClient();
      await assert.rejects(client.configure({ memoryMiB: 2, kernel: longGuest }), /^Error: configure: memory_mib: must be an integer from 4/);
      await assert.rejects(client.configure({ memoryMiB: 32, kernel: '/nonexistent/vmlinux' }), /configure: kernel: cannot open \/nonexistent\/vmlinux: ENOENT/);
      await assert.rejects(client.configure({ memoryMiB: 32, kernel: longGuest, disks: [{ file: '/nonexistent', readOnly: true, serial: 'slot0' }] }),
        /configure: disks\[0\] \(slot0\): cannot open \/nonexistent: ENOENT/);
      const closed = fs.openSync(longGuest, 'r');
      fs.closeSync(closed);
      await assert.rejects(client.configure({ memoryMiB: 32, kernel: { fd: closed } }), /configure: fds\[0\] \(\d+\) is not an open file descriptor/);
      await assert.rejects(client.configure({ memoryMiB: 32, kernel: initramfs }), /configure: kernel: neither an ELF vmlinux nor a bzImage/);
      await assert.rejects(client.start(), /start: .*not allowed in state awaiting_configure/);
      assert.equal(openFds('self').size, fdsBefore + 3, 'only the control socket, pidfd and eventfd of this VMM stay open');
      await client.configure({ memoryMiB: 32, kernel: longGuest, initramfs, cmdline: 'r' });
      await client.start();
      assert.equal((await client.terminated).reason, 'guest_reset');
      await waitUntil('the addon to close its descriptors', () => openFds('self').size <= fdsBefore);
    });
  });
});
