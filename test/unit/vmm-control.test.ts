/**
 * smolvm-vmm on this machine's real /dev/kvm: tiny freestanding guests (test/guests) drive the
 * real run loop through the control protocol: serial output, unclaimed PIO/MMIO, the i8042
 * reset, triple fault, pause/resume/stop, the exit record, and bad input of every kind.
 */
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  buildGuest,
  encodeFrame,
  ensureVmmBuilt,
  kvmUsable,
  VMM_BINARY,
  VmmProcess,
} from '../guests/vmm-harness';
import { skipBecause } from '../helpers/skip';

describe('smolvm-vmm control protocol on /dev/kvm', function () {
  this.timeout(30_000);
  let workDir = '';
  let pvhGuest = '';
  let longGuest = '';
  let initramfs = '';
  const running: VmmProcess[] = [];

  function vmm(): VmmProcess {
    const process = new VmmProcess();
    running.push(process);
    return process;
  }

  function config(kernel: string, cmdline: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
    return {
      config: {
        memory_mib: 32,
        vcpus: 1,
        kernel: { path: kernel },
        initramfs: { path: initramfs },
        cmdline,
        serial: { inherited_fd: 4 },
        ...extra,
      },
    };
  }

  before(function () {
    this.timeout(600_000);  // the first build of the VMM compiles ~30 files on 2 cores
    ensureVmmBuilt();
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-vmm-test-'));
    pvhGuest = buildGuest('pvh', workDir);
    longGuest = buildGuest('long64', workDir);
    initramfs = path.join(workDir, 'initramfs.txt');
    fs.writeFileSync(initramfs, 'initramfs-ok\0');
  });

  afterEach(() => {
    for (const process of running.splice(0)) process.kill();
  });

  after(() => {
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  it('--probe reports the host KVM as JSON', function () {
    if (!kvmUsable()) skipBecause(this, { lacks: 'kvm', detail: 'no usable /dev/kvm' });
    const report: unknown = JSON.parse(execFileSync(VMM_BINARY, ['--probe']).toString('utf8'));
    assert.equal((report as { kvm: unknown }).kvm, true);
  });

  it('says hello with the protocol version first', async () => {
    const process = vmm();
    const hello = await process.waitFor('hello', () => process.messages.find((m) => m.type === 'hello'));
    assert.equal(hello.protocol, 1);
    assert.equal(hello.pid, process.child.pid);
    process.closeControl();
    assert.equal(await process.exited(), 0, 'closing the control socket before configure ends the VMM');
  });

  describe('guests', function () {
    before(function () {
      if (!kvmUsable()) skipBecause(this, { lacks: 'kvm', detail: 'no usable /dev/kvm' });
    });

    it('boots a PVH guest: serial output, start info, cmdline, initramfs, unclaimed PIO/MMIO, i8042 reset', async () => {
      const exitRecord = path.join(workDir, 'pvh-exit.json');
      const process = vmm();
      const configured = await process.request('configure', config(pvhGuest, 'pvh-cmdline', { exit_record_path: exitRecord }));
      assert.equal(configured.ok, true, configured.error);
      assert.match(String(configured.boot), /^PVH 32-bit entry at 0x100000/);
      assert.match(String(configured.cmdline), /^pvh-cmdline virtio_mmio\.device=4K@0xd0000000:5$/);
      assert.equal((await process.request('start')).ok, true);
      await process.event('started');
      const exited = await process.event('exited');
      assert.equal(exited.reason, 'guest_reset');
      assert.match(String(exited.detail), /i8042/);
      assert.equal(await process.exited(), 0);
      await process.serialContains('pvh guest done');
      assert.match(process.serialText, /hello from pvh\ncmdline: pvh-cmdline virtio_mmio/);
      assert.match(process.serialText, /initramfs-ok/);
      const record = JSON.parse(fs.readFileSync(exitRecord, 'utf8')) as Record<string, unknown>;
      assert.equal(record.reason, 'guest_reset');
      assert.equal(record.exit_code, 0);
      assert.equal(record.pid, process.child.pid);
      assert.ok(!fs.existsSync(exitRecord + '.tmp'));
    });

    it('boots a 64-bit ELF guest through the Linux 64-bit entry (boot_params in RSI)', async () => {
      const process = vmm();
      const configured = await process.request('configure', config(longGuest, 'r', { rng: false }));
      assert.equal(configured.ok, true, configured.error);
      assert.match(String(configured.boot), /^ELF 64-bit entry at 0x100000/);
      assert.equal(configured.cmdline, 'r', 'no virtio device: nothing appended');
      await process.request('start');
      assert.equal((await process.event('exited')).reason, 'guest_reset');
      await process.serialContains('long mode guest done');
      assert.match(process.serialText, /hello from long mode\ncmdline: r\ninitramfs-ok/);
      assert.equal(await process.exited(), 0);
    });

    it('reports a triple fault as a reset with the vCPU state', async () => {
      const process = vmm();
      await process.request('configure', config(longGuest, 't'));
      await process.request('start');
      const exited = await process.event('exited');
      assert.equal(exited.reason, 'guest_reset');
      assert.match(String(exited.detail), /triple fault.*rip=0x/);
    });

    it('pauses, resumes and stops a spinning guest', async () => {
      const exitRecord = path.join(workDir, 'spin-exit.json');
      const process = vmm();
      await process.request('configure', config(longGuest, 's', { exit_record_path: exitRecord }));
      await process.request('start');
      await process.serialContains('long mode guest done');
      await process.serialContains('...');
      assert.equal((await process.request('pause')).ok, true);
      await process.event('paused');
      const whilePaused = process.serialText.length;
      await new Promise((resolve) => setTimeout(resolve, 400));
      assert.equal(process.serialText.length, whilePaused, 'no output while paused');
      assert.equal((await process.request('status')).state, 'paused');
      assert.equal((await process.request('resume')).ok, true);
      await process.event('resumed');
      await process.waitFor('more output after resume', () => (process.serialText.length > whilePaused + 2 ? true : undefined));
      assert.equal((await process.request('stop')).ok, true);
      const exited = await process.event('exited');
      assert.equal(exited.reason, 'stopped');
      assert.equal(await process.exited(), 0);
      assert.equal((JSON.parse(fs.readFileSync(exitRecord, 'utf8')) as Record<string, unknown>).reason, 'stopped');
    });

    it('stops a guest halted with interrupts off (never a hang), also when paused', async () => {
      const process = vmm();
      await process.request('configure', config(longGuest, 'h'));
      await process.request('start');
      await process.serialContains('long mode guest done');
      await process.request('pause');
      await process.request('stop');
      assert.equal((await process.event('exited')).reason, 'stopped');
      assert.equal(await process.exited(), 0);
    });

    it('stops the VM when the controller goes away, and on SIGTERM', async () => {
      const first = vmm();
      await first.request('configure', config(longGuest, 's'));
      await first.request('start');
      await first.serialContains('.');
      first.closeControl();
      assert.equal(await first.exited(), 0);

      const second = vmm();
      await second.request('configure', config(longGuest, 's'));
      await second.request('start');
      await second.serialContains('.');
      second.child.kill('SIGTERM');
      const exited = await second.event('exited');
      assert.equal(exited.reason, 'stopped');
      assert.match(String(exited.detail), /signal/i);
      assert.equal(await second.exited(), 0);
    });

    it('wires disk slots, vsock and rng as virtio-mmio devices declared on the command line', async () => {
      const disk = path.join(workDir, 'disk.img');
      fs.writeFileSync(disk, Buffer.alloc(1 << 20));
      const vsockPath = path.join(workDir, 'vsock.sock');
      const process = vmm();
      const configured = await process.request('configure', config(longGuest, 's', {
        disks: [
          { file: { path: disk }, read_only: true, serial: 'image' },
          { file: { path: disk }, serial: 'scratch' },
        ],
        vsock: { guest_cid: 3, uds_path: vsockPath },
      }));
      assert.equal(configured.ok, true, configured.error);
      assert.equal(configured.cmdline, 's virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 ' +
        'virtio_mmio.device=4K@0xd0002000:7 virtio_mmio.device=4K@0xd0003000:8');
      assert.ok(fs.statSync(vsockPath).isSocket(), 'the vsock host socket listens');
      await process.request('start');
      await process.request('stop');
      assert.equal(await process.exited(), 0);
      assert.ok(!fs.existsSync(vsockPath), 'the vsock socket path is removed at exit');
    });

    it('runs two vCPUs (the APs wait for INIT/SIPI) and boots', async () => {
      const process = vmm();
      const configured = await process.request('configure', { config: { ...(config(longGuest, 'r').config as object), vcpus: 2 } });
      assert.equal(configured.ok, true, configured.error);
      await process.request('start');
      assert.equal((await process.event('exited')).reason, 'guest_reset');
    });
  });

  describe('bad input: a clear error, the VMM keeps serving', function () {
    before(function () {
      if (!kvmUsable()) skipBecause(this, { lacks: 'kvm', detail: 'no usable /dev/kvm' });
    });

    it('rejects bad configure requests naming the field, then accepts a good one', async () => {
      const process = vmm();
      const cases: Array<[Record<string, unknown>, RegExp]> = [
        [{}, /missing "config"/],
        [{ config: { kernel: { path: longGuest } } }, /memory_mib: missing/],
        [{ config: { memory_mib: 2, kernel: { path: longGuest } } }, /memory_mib: must be an integer from 4/],
        [{ config: { memory_mib: 32, kernel: { path: '/nonexistent/vmlinux' } } }, /kernel: open \/nonexistent\/vmlinux: No such file/],
        [{ config: { memory_mib: 32, kernel: { path: initramfs } } }, /kernel: neither an ELF vmlinux nor a bzImage/],
        [{ config: { memory_mib: 32, kernel: { fd: 0 } } }, /kernel: fd index 0 but the message carried 0 descriptors/],
        [{ config: { memory_mib: 32, kernel: { inherited_fd: 3 } } }, /inherited_fd is the control socket/],
        [{ config: { memory_mib: 32, kernel: { path: longGuest }, vcpus: 99 } }, /vcpus: must be an integer from 1 to 32/],
        [{ config: { memory_mib: 32, kernel: { path: longGuest }, bogus: 1 } }, /bogus: unknown field/],
        [{ config: { memory_mib: 32, kernel: { path: pvhGuest }, boot_protocol: 'pvh', cmdline: 'x'.repeat(5000) } }, /kernel command line is \d+ bytes; this kernel accepts at most 4095/],
        [{ config: { memory_mib: 32, kernel: { path: longGuest }, boot_protocol: 'pvh' } }, /no XEN_ELFNOTE_PHYS32_ENTRY/],
        [{ config: { memory_mib: 32, kernel: { path: longGuest }, disks: [{ file: { path: '/nonexistent' } }] } }, /disks\[0\]\.file: open/],
      ];
      for (const [fields, expected] of cases) {
        const reply = await process.request('configure', fields);
        assert.equal(reply.ok, false, `accepted ${JSON.stringify(fields)}`);
        assert.match(String(reply.error), expected);
      }
      assert.match(String((await process.request('start')).error), /not allowed in state awaiting_configure/);
      assert.match(String((await process.request('frobnicate')).error), /unknown request type "frobnicate"/);
      assert.match(String((await process.request('status', {}, 2)).error), /unsupported protocol version/);
      const good = await process.request('configure', config(longGuest, 'r'));
      assert.equal(good.ok, true, good.error);
      assert.match(String((await process.request('configure', config(longGuest, 'r'))).error), /not allowed in state configured/);
      await process.request('start');
      assert.equal((await process.event('exited')).reason, 'guest_reset');
    });

    it('rejects a truncated ELF kernel', async () => {
      const truncated = path.join(workDir, 'truncated.elf');
      fs.writeFileSync(truncated, fs.readFileSync(longGuest).subarray(0, 100));
      const process = vmm();
      const reply = await process.request('configure', config(truncated, 'r'));
      assert.equal(reply.ok, false);
      assert.match(String(reply.error), /kernel: truncated/);
    });

    it('answers malformed JSON and an oversized frame with an error event, then exits', async () => {
      const process = vmm();
      await process.waitFor('hello', () => process.messages.find((m) => m.type === 'hello'));
      const garbage = Buffer.from('{"v":1,');
      const header = Buffer.alloc(4);
      header.writeUInt32LE(garbage.length, 0);
      process.sendRaw(Buffer.concat([header, garbage]));
      const error = await process.waitFor('error', () => process.messages.find((m) => m.type === 'error'));
      assert.match(String(error.error), /malformed JSON at byte/);
      assert.equal(await process.exited(), 0);

      const second = vmm();
      const huge = Buffer.alloc(4);
      huge.writeUInt32LE(64 * 1024 * 1024, 0);
      second.sendRaw(huge);
      const oversized = await second.waitFor('error', () => second.messages.find((m) => m.type === 'error'));
      assert.match(String(oversized.error), /exceeds the 1048576-byte limit/);
      assert.equal(await second.exited(), 0);
    });

    it('rejects a non-object message and keeps the frame boundaries of several in one write', async () => {
      const process = vmm();
      process.sendRaw(Buffer.concat([encodeFrame({ v: 1, id: 1, type: 'status' }), encodeFrame({ v: 1, id: 2, type: 'status' })]));
      await process.waitFor('two replies', () => (process.messages.filter((m) => m.type === 'reply').length === 2 ? true : undefined));
      process.sendRaw(encodeFrame([1, 2, 3]));
      const error = await process.waitFor('error', () => process.messages.find((m) => m.type === 'error'));
      assert.match(String(error.error), /must be a JSON object/);
    });
  });
});
