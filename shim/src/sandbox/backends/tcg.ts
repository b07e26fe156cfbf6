// The tcg backend: Debian's qemu-system-x86_64, `-M microvm` under TCG. Portable (no KVM
// needed) and slow; the same kernel, initramfs and disk images as the kvm backend. The agent
// channel is a raw virtserialport (not virtconsole: its tty layer rewrites bytes) wired to a
// unix socket that QEMU listens on.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import type { Duplex } from 'node:stream';
import type { Logger } from '../../log';
import { killIdentified, processStartTime, waitGone, type ProcessIdentity } from '../../util/proc';
import { tailFile, type DirShare, type Backend, type VmConfig, type VmExit, type VmInstance } from '../backend';
import { QmpChannel } from './qmp';

export const QEMU_BINARY = 'qemu-system-x86_64';
/** The virtserialport name the agent looks for under /sys/class/virtio-ports/. */
export const AGENT_PORT_NAME = 'smolvm.agent';
/** QEMU's monitor (QMP) socket in the VM's directory: pause (`stop`) and resume (`cont`). */
export const QMP_SOCKET_NAME = 'qmp.sock';

/** virtio-mmio transports of `-M microvm,acpi=off` (measured on QEMU 7.2: a 9th device fails). */
export const MICROVM_VIRTIO_TRANSPORTS = 8;
/** virtio-rng and virtio-serial (the agent channel). */
const FIXED_VIRTIO_DEVICES = 2;

/** A host directory exported to the guest by a virtio-9p-device with this mount tag. */
export type NinePShare = DirShare;

/** QEMU option values escape a comma by doubling it. */
function qemuOptionValue(value: string): string {
  return value.replace(/,/g, ',,');
}

/** -fsdev/-device pairs: passthrough keeps the host's owners and modes (QEMU runs as root),
 *  multidevs=remap keeps inode numbers unique when the directory spans several filesystems. */
export function ninePArgs(shares: readonly NinePShare[]): string[] {
  return shares.flatMap((share, i) => {
    if (!/^[A-Za-z0-9._-]{1,31}$/.test(share.tag)) throw new Error(`9p share ${JSON.stringify(share.tag)}: invalid mount tag`);
    const id = `share${i}`;
    return [
      '-fsdev', `local,id=${id},path=${qemuOptionValue(share.hostPath)},security_model=passthrough,multidevs=remap${share.readOnly ? ',readonly=on' : ''}`,
      '-device', `virtio-9p-device,fsdev=${id},mount_tag=${share.tag}`,
    ];
  });
}

export function qemuArgs(config: VmConfig, agentSocket: string, consoleLog: string): string[] {
  const args = [
    '-name', `smolvm-${config.vmId}`,
    // acpi=off: QEMU then appends virtio_mmio.device=… for every device to the command line,
    // which is how a kernel without ACPI finds them.
    '-M', 'microvm,acpi=off,x-option-roms=off,rtc=off',
    '-accel', 'tcg',
    '-cpu', 'max',
    '-m', `${config.memoryMiB}M`,
    '-smp', String(config.vcpus),
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-kernel', config.kernel,
    '-initrd', config.initramfs,
    '-append', config.cmdline,
    '-chardev', `file,id=console,path=${consoleLog}`,
    '-serial', 'chardev:console',
  ];
  config.slots.forEach((slot, i) => {
    const drive = `slot${i}`;
    args.push(
      '-drive', `id=${drive},file=${slot.path},format=raw,if=none,cache=unsafe,${slot.readOnly ? 'readonly=on' : 'readonly=off'}`,
      '-device', `virtio-blk-device,drive=${drive},serial=${slot.serial}`,
    );
  });
  // microvm (acpi=off) has 8 virtio-mmio transports: disks, shares, rng and serial share them.
  const shares = config.shares ?? [];
  const devices = config.slots.length + shares.length + FIXED_VIRTIO_DEVICES;
  if (shares.length > 0 && devices > MICROVM_VIRTIO_TRANSPORTS) {
    throw new Error(`tcg: ${shares.length} host directories to share need ${devices} virtio devices, but QEMU's microvm has ${MICROVM_VIRTIO_TRANSPORTS}: at most ${Math.max(0, MICROVM_VIRTIO_TRANSPORTS - FIXED_VIRTIO_DEVICES - config.slots.length)} per VM`);
  }
  args.push(...ninePArgs(shares));
  args.push(
    '-device', 'virtio-rng-device',
    '-device', 'virtio-serial-device,max_ports=2',
    '-chardev', `socket,id=agent,path=${agentSocket},server=on,wait=off`,
    '-device', `virtserialport,chardev=agent,name=${AGENT_PORT_NAME}`,
    '-qmp', `unix:${path.join(config.dir, QMP_SOCKET_NAME)},server=on,wait=off`,
  );
  return args;
}

class TcgVm implements VmInstance {
  readonly backend = 'tcg' as const;
  private killed = false;
  private readonly qmp: QmpChannel;

  constructor(
    readonly identity: ProcessIdentity,
    readonly sockets: Record<string, string>,
    readonly consoleLog: string,
    readonly exited: Promise<VmExit>,
    private readonly qemuLog: string,
  ) {
    this.qmp = new QmpChannel(sockets.qmp!);
  }

  async pause(): Promise<void> {
    await this.qmp.stop();
  }

  async resume(): Promise<void> {
    await this.qmp.cont();
  }

  async connectAgent(timeoutMs: number): Promise<Duplex> {
    const deadline = Date.now() + timeoutMs;
    let gone = false;
    void this.exited.then(() => { gone = true; });
    // QEMU creates the listening socket during its start-up, before the guest runs.
    for (;;) {
      if (gone) throw new Error(`qemu exited before the agent channel opened: ${this.diagnostics()}`);
      try {
        return await connectUnix(this.sockets.agent!);
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`agent channel ${this.sockets.agent} did not open within ${timeoutMs} ms: ${String(err)}`);
        await new Promise((r) => setTimeout(r, 5));
      }
    }
  }

  /** What went wrong, from QEMU's own output and the guest console. */
  diagnostics(): string {
    const qemu = tailFile(this.qemuLog, 10);
    const console = tailFile(this.consoleLog, 15);
    return [qemu && `qemu: ${qemu}`, console && `guest console:\n${console}`].filter(Boolean).join('\n') || 'no output';
  }

  async kill(): Promise<void> {
    if (!this.killed) {
      this.killed = true;
      killIdentified(this.identity, 'SIGKILL');
    }
    await Promise.race([this.exited, waitGone(this.identity, 5000)]);
  }
}

function connectUnix(socket: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const conn = net.connect(socket);
    conn.once('connect', () => {
      conn.removeAllListeners('error');
      resolve(conn);
    });
    conn.once('error', (err) => {
      conn.destroy();
      reject(err);
    });
  });
}

export class TcgBackend implements Backend {
  readonly name = 'tcg' as const;
  /** Under TCG the LAPIC timer check always fails after 100-250 ms of trying: skip it. */
  readonly kernelArgs = 'no_timer_check noapictimer';
  readonly supportsDirShares = true;

  constructor(private readonly qemuBinary = QEMU_BINARY) {}

  async boot(config: VmConfig, log: Logger): Promise<VmInstance> {
    const agentSocket = path.join(config.dir, 'agent.sock');
    const consoleLog = path.join(config.dir, 'console.log');
    const qemuLog = path.join(config.dir, 'qemu.log');
    for (const slot of config.slots) {
      if (!fs.existsSync(slot.path)) throw new Error(`disk slot ${slot.serial}: ${slot.path} does not exist`);
    }
    for (const share of config.shares ?? []) {
      if (!fs.statSync(share.hostPath, { throwIfNoEntry: false })?.isDirectory()) {
        throw new Error(`9p share ${share.tag}: ${share.hostPath} is not a directory`);
      }
    }
    const out = fs.openSync(qemuLog, 'a', 0o600);
    const args = qemuArgs(config, agentSocket, consoleLog);
    log.debug('booting tcg vm', { vm: config.vmId, qemu: this.qemuBinary });
    const child = spawn(this.qemuBinary, args, { stdio: ['ignore', out, out], detached: false });
    fs.closeSync(out);
    const spawned = await new Promise<number>((resolve, reject) => {
      child.once('spawn', () => resolve(child.pid!));
      child.once('error', (err) => reject(new Error(
        (err as NodeJS.ErrnoException).code === 'ENOENT'
          ? `${this.qemuBinary} not found: install Debian package qemu-system-x86`
          : `cannot start ${this.qemuBinary}: ${err.message}`)));
    });
    const exited = new Promise<VmExit>((resolve) => {
      child.once('exit', (code, signal) => resolve({ code, signal }));
    });
    const startTime = processStartTime(spawned);
    if (startTime === null) {
      const exit = await exited;
      throw new Error(`qemu exited at once (code ${exit.code}, signal ${exit.signal}): ${tailFile(qemuLog, 10)}`);
    }
    const sockets = { agent: agentSocket, qmp: path.join(config.dir, QMP_SOCKET_NAME) };
    return new TcgVm({ pid: spawned, startTime }, sockets, consoleLog, exited, qemuLog);
  }
}
