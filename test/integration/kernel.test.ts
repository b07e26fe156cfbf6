// Boots the smolvm guest kernel under QEMU (the tcg backend's machine: microvm, no ACPI) with the
// guest self-test as /init, and checks that every feature containers need is really there.
import { strict as assert } from 'node:assert';
import { spawn, execFile, ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { ensureKernel, KernelArtifact } from '../../rootfs-builder/kernel/build';
import { buildGuestSelftest } from '../../rootfs-builder/kernel/selftest/build';
import { writeCpio } from '../../rootfs-builder/initramfs/cpio';
import { smolvmPaths } from '../../shim/src/config/paths';

const execFileAsync = promisify(execFile);

/**
 * The kernel command line recommended for the tcg backend (QEMU microvm, no ACPI):
 * - reboot=t: microvm has no i8042, so reboot=k spins ~1.3 s in kb_wait before falling back;
 *   a triple fault resets at once and QEMU (-no-reboot) exits.
 * - panic=-1: a panic reboots immediately, so a broken guest ends QEMU instead of hanging.
 * - noapictimer: under TCG the local APIC timer always fails its calibration check, after
 *   ~100-250 ms of trying; skipping it leaves the PIT as the clock event, as it ends up anyway.
 * - no_timer_check: skips the IO-APIC timer IRQ check (a few jiffies of busy wait).
 * - quiet: printk to the 8250 serial costs an emulated I/O exit per byte; errors still print.
 */
const KERNEL_CMDLINE = 'console=ttyS0 reboot=t panic=-1 quiet no_timer_check noapictimer';
const BOOT_TIMEOUT_MS = 120_000;
const PORT_HELLO = 'SMOLVM-SELFTEST-HELLO\n';
const PORT_PING = 'HOST-PING\n';

/** Checks the self-test must report (a check silently dropped from it must fail this test). */
const REQUIRED_CHECKS = [
  'futex', 'pipe', 'epoll', 'eventfd', 'signalfd', 'timerfd', 'posix_timers', 'inotify', 'fhandle',
  'aio', 'sysvipc', 'mqueue', 'getrandom_nonblock', 'hwrng_virtio', 'unix_socket',
  'inet_tcp_loopback', 'inet6_tcp_loopback', 'vsock_socket', 'pty', 'ns_pid', 'ns_mnt', 'ns_uts',
  'ns_ipc', 'ns_net', 'ns_user', 'cgroup2', 'seccomp_filter', 'binfmt_script', 'tmpfs',
  'virtio_blk_serial', 'overlay_on_erofs', 'ext4', 'virtio_serial_port',
];

interface BootResult {
  serial: string;
  exitCode: number | null;
  exitSignal: NodeJS.Signals | null;
  /** Host wall time from spawning QEMU to the self-test's first line. */
  hostMsToInit: number | null;
  hostMsTotal: number;
  portReceived: string;
}

/** QEMU processes not yet reaped: killed in `after` whatever happened, so none outlives the test. */
const liveQemus = new Set<ChildProcess>();

/** Waits for QEMU to create its chardev socket, connects, and sends the ping. */
async function connectPort(
  socketPath: string,
  deadline: number,
  qemuGone: () => boolean,
  received: (text: string) => void,
): Promise<net.Socket> {
  for (;;) {
    if (qemuGone()) throw new Error('QEMU exited before the virtserialport socket accepted');
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const sock = net.createConnection(socketPath);
        sock.once('connect', () => {
          sock.off('error', reject);
          sock.on('error', () => undefined); // the guest rebooting closes it; that is expected
          sock.on('data', (chunk: Buffer) => received(chunk.toString('utf8')));
          sock.write(PORT_PING);
          resolve(sock);
        });
        sock.once('error', reject);
      });
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`virtserialport socket ${socketPath} never accepted: ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

function bootGuest(qemuArgs: string[], portSocket: string): Promise<BootResult> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const qemu: ChildProcess = spawn('qemu-system-x86_64', qemuArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
    liveQemus.add(qemu);
    let serial = '';
    let stderr = '';
    let portReceived = '';
    let hostMsToInit: number | null = null;
    let port: net.Socket | undefined;
    const timer = setTimeout(() => {
      qemu.kill('SIGKILL');
    }, BOOT_TIMEOUT_MS);
    qemu.stdout!.on('data', (chunk: Buffer) => {
      serial += chunk.toString('utf8');
      if (hostMsToInit === null && serial.includes('SELFTEST START')) hostMsToInit = Date.now() - started;
    });
    qemu.stderr!.on('data', (chunk: Buffer) => {
      stderr += chunk.toString('utf8');
    });
    const qemuGone = () => qemu.exitCode !== null || qemu.signalCode !== null;
    connectPort(portSocket, started + 10_000, qemuGone, (text) => {
      portReceived += text;
    }).then(
      (sock) => {
        port = sock;
        if (qemuGone()) sock.destroy();
      },
      (err: Error) => {
        serial += `\n[host] ${err.message}\n`;
      },
    );
    qemu.on('error', (err) => {
      clearTimeout(timer);
      liveQemus.delete(qemu);
      reject(new Error(`cannot start qemu-system-x86_64 (apt-get install qemu-system-x86): ${err.message}`));
    });
    qemu.on('close', (exitCode, exitSignal) => {
      clearTimeout(timer);
      liveQemus.delete(qemu);
      port?.destroy();
      if (exitSignal === 'SIGKILL' && Date.now() - started >= BOOT_TIMEOUT_MS) {
        reject(new Error(`guest did not finish within ${BOOT_TIMEOUT_MS} ms; serial console:\n${serial}\n${stderr}`));
        return;
      }
      serial = serial.replace(/\r\n/g, '\n'); // the serial console ends lines with CRLF
      if (stderr.trim()) serial += `\n[qemu stderr] ${stderr}`;
      resolve({ serial, exitCode, exitSignal, hostMsToInit, hostMsTotal: Date.now() - started, portReceived });
    });
  });
}

describe('guest kernel (integration)', function () {
  let kernel: KernelArtifact;
  let workDir: string;
  let result: BootResult;

  before(async function () {
    // A cold kernel build takes minutes on 2 cores; a cached one is instant.
    this.timeout(30 * 60_000);
    kernel = await ensureKernel({ cacheDir: smolvmPaths().cacheDir, onProgress: (line) => console.log(`    ${line}`) });
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-kernel-test-'));

    const init = fs.readFileSync(await buildGuestSelftest(workDir));
    const initramfs = path.join(workDir, 'initramfs.cpio');
    fs.writeFileSync(initramfs, writeCpio([
      { kind: 'dir', path: 'dev' },
      { kind: 'chardev', path: 'dev/console', major: 5, minor: 1, mode: 0o600 },
      { kind: 'dir', path: 'proc' },
      { kind: 'dir', path: 'sys' },
      { kind: 'dir', path: 'tmp', mode: 0o1777 },
      { kind: 'dir', path: 'mnt' },
      { kind: 'file', path: 'init', data: init, mode: 0o755 },
    ]));

    const lowerSrc = path.join(workDir, 'erofs-src');
    fs.mkdirSync(lowerSrc);
    fs.writeFileSync(path.join(lowerSrc, 'hello.txt'), 'hello from erofs\n');
    const erofsImage = path.join(workDir, 'lower.erofs');
    await execFileAsync('mkfs.erofs', ['--quiet', erofsImage, lowerSrc], { timeout: 30_000 });

    const ext4Image = path.join(workDir, 'writable.ext4');
    fs.closeSync(fs.openSync(ext4Image, 'w'));
    fs.truncateSync(ext4Image, 64 * 1024 * 1024); // sparse
    await execFileAsync('mkfs.ext4', ['-q', '-F', ext4Image], { timeout: 30_000 });

    const portSocket = path.join(workDir, 'port.sock');
    const args = [
      '-M', 'microvm,acpi=off', '-accel', 'tcg', '-cpu', 'max', '-m', '256',
      '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
      '-kernel', kernel.vmlinux, '-initrd', initramfs, '-append', KERNEL_CMDLINE,
      '-serial', 'stdio',
      '-drive', `id=d0,file=${erofsImage},format=raw,if=none,readonly=on`,
      '-device', 'virtio-blk-device,drive=d0,serial=slot0',
      '-drive', `id=d1,file=${ext4Image},format=raw,if=none`,
      '-device', 'virtio-blk-device,drive=d1,serial=slot1',
      '-device', 'virtio-rng-device',
      '-chardev', `socket,id=port0,path=${portSocket},server=on,wait=off`,
      '-device', 'virtio-serial-device',
      '-device', 'virtserialport,chardev=port0,name=smolvm.agent',
    ];
    this.timeout(BOOT_TIMEOUT_MS + 60_000);
    result = await bootGuest(args, portSocket);
    if (process.env.SMOLVM_TEST_SERIAL) console.log(result.serial);
    console.log(`    guest uname -r: ${/SELFTEST RELEASE (\S+)/.exec(result.serial)?.[1] ?? '?'} (host: ${os.release()})`);
    const guestMs = /boot_to_init_ms=(\d+)/.exec(result.serial)?.[1] ?? '?';
    console.log(`    boot to /init: ${guestMs} ms guest clock, ${result.hostMsToInit ?? '?'} ms host wall ` +
      `(QEMU start included); whole run ${result.hostMsTotal} ms`);
  });

  after(function () {
    for (const qemu of liveQemus) qemu.kill('SIGKILL');
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  it('boots, runs /init and exits QEMU through a reboot', function () {
    assert.match(result.serial, /SELFTEST START pid=1 /, `no self-test output; serial console:\n${result.serial}`);
    assert.match(result.serial, /SELFTEST SUMMARY /, `the self-test did not finish; serial console:\n${result.serial}`);
    assert.equal(result.exitCode, 0, `QEMU exit code ${result.exitCode} signal ${result.exitSignal}`);
  });

  it('passes every self-test check', function () {
    const failed = result.serial.split('\n').filter((l) => l.startsWith('FAIL '));
    assert.deepEqual(failed, [], `failed checks:\n${failed.join('\n')}\nserial console:\n${result.serial}`);
    const passed = new Set(result.serial.split('\n').filter((l) => l.startsWith('PASS ')).map((l) => l.slice(5).trim()));
    const missing = REQUIRED_CHECKS.filter((name) => !passed.has(name));
    assert.deepEqual(missing, [], `checks that did not report PASS: ${missing.join(', ')}\n${result.serial}`);
  });

  it('talks both ways over the virtserialport named smolvm.agent', function () {
    assert.ok(result.portReceived.includes(PORT_HELLO), `host got ${JSON.stringify(result.portReceived)} on the port socket`);
  });

  it('runs the smolvm kernel, not the host one', function () {
    const release = /SELFTEST RELEASE (\S+)/.exec(result.serial)?.[1];
    assert.ok(release, 'no release line');
    assert.notEqual(release, os.release());
    assert.equal(release, kernel.release);
  });
});
