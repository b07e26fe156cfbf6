// The tcg backend: Debian's qemu-system-x86_64, `-M microvm` under TCG. Portable (no KVM
// needed) and slow; the same kernel, initramfs and disk images as the kvm backend. The agent
// channel is a raw virtserialport (not virtconsole: its tty layer rewrites bytes) wired to a
// unix socket that QEMU listens on. The guest console and QEMU's own output reach the host
// through socketpairs that this process reads into capped logs in the VM's data dir
// (capped-log.ts): a guest cannot fill the host's disk with its console.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Readable, type Duplex } from 'node:stream';
import type { Logger } from '../../log';
import { killIdentified, processStartTime, waitGone, type ProcessIdentity } from '../../util/proc';
import { tailFile, type DiskSlot, type Backend, type TemplateIdentity, type VmConfig, type VmExit, type Vmm } from '../backend';
import { CappedLog, DEFAULT_LOG_MAX_BYTES, logsDrained } from '../capped-log';
import { sharesDirOf } from '../host-mounts';
import { SHARE_MOUNT_TAG, type VmShape } from '../shape';
import { findOnPath, programVersion, sha256Hex } from '../../util/file-identity';
import { trackVmm, vmmExecPrefix } from '../vmm-exec';
import { QmpChannel, QmpError } from './qmp';

export const QEMU_BINARY = 'qemu-system-x86_64';
/** The virtserialport name the agent looks for under /sys/class/virtio-ports/. */
export const AGENT_PORT_NAME = 'smolvm.agent';
/** QEMU's monitor (QMP) socket in the VM's directory: pause (`stop`) and resume (`cont`). */
export const QMP_SOCKET_NAME = 'qmp.sock';

/** virtio-mmio transports of `-M microvm,acpi=off` (measured on QEMU 7.2: a 9th device fails). */
export const MICROVM_VIRTIO_TRANSPORTS = 8;
/** virtio-rng and virtio-serial (the agent channel); the 9p share is counted from the shape. */
const FIXED_VIRTIO_DEVICES = 2;

/** The virtio-scsi controller of a pod VM (VmShape.diskHotplug): its bus is `scsi0.0`. */
export const SCSI_CONTROLLER_ID = 'scsi0';
/** virtio-scsi's highest target id (QEMU's VIRTIO_SCSI_MAX_TARGET): one disk per target, LUN 0. */
const SCSI_MAX_TARGET = 255;
/** How long a hot-removed disk may take to leave the guest (device_del → DEVICE_DELETED). */
const DEVICE_DELETED_TIMEOUT_MS = 5_000;
/** A hot-added disk's serial: reaches the guest in VPD page 0x80 (QEMU keeps 36 bytes) and,
 *  for virtio-blk, /sys/block/vdX/serial (20 bytes): short and plain. */
const HOTPLUG_SERIAL = /^[A-Za-z0-9_-]{1,20}$/;

/** The fd on which a restoring QEMU reads VmConfig.incomingState. */
const INCOMING_STATE_FD = 3;
/** QEMU's end of the guest console's socketpair (a `-chardev socket,fd=`): the shim reads the
 *  other end. A socket chardev never blocks QEMU itself: when the reader lags, the emulated
 *  UART holds its byte until the socket takes it (the guest's console output slows to the
 *  reader's pace; measured: a reader that never reads stalls the guest's printk); when the
 *  reader is gone (the shim died), output is dropped and the guest runs on. */
export const CONSOLE_FD = 4;

/** Disk slots one VM can have: the transports left besides rng, the agent's serial and 9p. */
export const TCG_MAX_DISK_SLOTS = MICROVM_VIRTIO_TRANSPORTS - FIXED_VIRTIO_DEVICES - 1;

/**
 * The two block nodes behind disk slot `index` (QEMU -blockdev / blockdev-reopen options): the
 * host file and the raw format over it. Named (slotN-file, slotN) so that a slot can be resized
 * over QMP; no host cache bypass and no flushes (cache=unsafe: a disk lives only as long as
 * its VM). blockdev-reopen resets every option it is not given, so boot and reopen share this.
 */
export function slotNodes(slot: DiskSlot, index: number, readOnly: boolean): { file: BlockNodeOptions; format: BlockNodeOptions } {
  const cache = { direct: false, 'no-flush': true };
  return {
    file: { driver: 'file', 'node-name': `slot${index}-file`, filename: slot.path, 'read-only': readOnly, cache },
    format: { driver: 'raw', 'node-name': `slot${index}`, file: `slot${index}-file`, 'read-only': readOnly, cache },
  };
}

export type BlockNodeOptions = Record<string, unknown> & { 'node-name': string };

/** QEMU option values escape a comma by doubling it. */
function qemuOptionValue(value: string): string {
  return value.replace(/,/g, ',,');
}

/**
 * The VM's one virtio-9p share: `<vmDir>/shares`, which the VM builder exported before boot as a
 * read-only, nosuid, nodev mount holding only mount points (host-mounts.ts); the shim mounts
 * host directories into it later, nosuid,nodev (ro when asked), and QEMU, which holds the
 * root open, sees them. The agent mounts the share on first use (a mounted 9p share would
 * block saving the VM as a template). passthrough keeps the host's owners and modes (QEMU
 * runs as root): what keeps a guest root from acting as root on the host is those host-side
 * mount flags, not the guest's. QEMU resolves every path beneath the export itself (each
 * component opened O_NOFOLLOW from the root's fd, `..` at the root is the root), so neither
 * `..` nor a symlink leads out. multidevs=remap keeps inode numbers unique across the bind
 * mounts, which are other filesystems. (A template VM boots with a plain directory there: it
 * never runs a container.)
 */
export function ninePShareArgs(sharesDir: string): string[] {
  return [
    '-fsdev', `local,id=share,path=${qemuOptionValue(sharesDir)},security_model=passthrough,multidevs=remap`,
    '-device', `virtio-9p-device,fsdev=share,mount_tag=${SHARE_MOUNT_TAG}`,
  ];
}

export function qemuArgs(config: VmConfig, agentSocket: string): string[] {
  const { shape, guest } = config;
  const args = [
    '-name', `smolvm-${config.vmId}`,
    // acpi=off: QEMU then appends virtio_mmio.device=… for every device to the command line,
    // which is how a kernel without ACPI finds them.
    '-M', 'microvm,acpi=off,x-option-roms=off,rtc=off',
    '-accel', 'tcg',
    '-cpu', 'max',
    '-m', `${shape.memoryMiB}M`,
    '-smp', String(shape.vcpus),
    '-nodefaults', '-no-user-config', '-nographic', '-no-reboot',
    '-kernel', guest.kernel,
    '-initrd', guest.initramfs,
    '-append', guest.cmdline,
    // Not `-chardev file`: a file cannot be capped (see CONSOLE_FD).
    '-chardev', `socket,id=console,fd=${CONSOLE_FD},server=off`,
    '-serial', 'chardev:console',
  ];
  if (config.slots.length !== shape.disks.length) {
    throw new Error(`tcg: ${config.slots.length} files for the ${shape.disks.length} disk slots of the VM's shape`);
  }
  config.slots.forEach((slot, i) => {
    const nodes = slotNodes(slot, i, slot.readOnly);
    args.push(
      '-blockdev', JSON.stringify(nodes.file),
      '-blockdev', JSON.stringify(nodes.format),
      '-device', `virtio-blk-device,drive=${nodes.format['node-name']},serial=${slot.serial}`,
    );
  });
  // A pod VM's disks come and go on one virtio-scsi controller (QMP device_add scsi-hd).
  if (shape.diskHotplug) args.push('-device', `virtio-scsi-device,id=${SCSI_CONTROLLER_ID}`);
  if (shape.nics.length > 0) throw new Error('tcg: network interfaces are not supported yet');
  if (shape.shares.some((share) => share.tag !== SHARE_MOUNT_TAG) || shape.shares.length > 1) {
    throw new Error(`tcg: a VM has at most one shared directory, tagged ${SHARE_MOUNT_TAG}`);
  }
  // microvm (acpi=off) has 8 virtio-mmio transports: disks, the scsi controller, the 9p
  // share, rng and serial.
  const fixed = FIXED_VIRTIO_DEVICES + (shape.diskHotplug ? 1 : 0) + shape.shares.length;
  const devices = config.slots.length + fixed;
  if (devices > MICROVM_VIRTIO_TRANSPORTS) {
    throw new Error(`tcg: ${config.slots.length} disk slots need ${devices} virtio devices, but QEMU's microvm has ${MICROVM_VIRTIO_TRANSPORTS}: at most ${MICROVM_VIRTIO_TRANSPORTS - fixed} disk slots per VM`);
  }
  if (shape.shares.length > 0) args.push(...ninePShareArgs(sharesDirOf(config.dir)));
  args.push(
    '-device', 'virtio-rng-device',
    '-device', 'virtio-serial-device,max_ports=2',
    '-chardev', `socket,id=agent,path=${agentSocket},server=on,wait=off`,
    '-device', `virtserialport,chardev=agent,name=${AGENT_PORT_NAME}`,
    '-qmp', `unix:${path.join(config.dir, QMP_SOCKET_NAME)},server=on,wait=off`,
    // A saved state (template) then carries no run state: a VM loading it starts running by
    // itself as soon as the load completes, with no QMP `cont` round trip.
    '-global', 'migration.store-global-state=off',
  );
  // The template's saved state, read by QEMU from an inherited fd (no `sh -c cat` to spawn).
  if (config.incomingState) args.push('-incoming', `fd:${INCOMING_STATE_FD}`);
  return args;
}

/**
 * The QEMU machine of a VM of this shape, paths abstracted: any change to the devices or
 * options qemuArgs passes changes the template key.
 */
export function tcgMachine(shape: VmShape): string {
  const config: VmConfig = {
    vmId: 'template', dir: '/T', dataDir: '/D', shape, guest: { kernel: '/K', initramfs: '/I', cmdline: '' },
    slots: shape.disks.map((d, i) => ({ serial: d.serial, readOnly: d.readOnly, path: `/T/slot${i}` })),
  };
  return sha256Hex(JSON.stringify(qemuArgs(config, '/T/agent'))).slice(0, 24);
}

/** Longest a migration to a file may take (it is ~0.2 s for 256 MiB here). */
const SAVE_TIMEOUT_MS = 120_000;
const SAVE_POLL_MS = 10;

/** exec: runs through /bin/sh: the path goes in single quotes, so it must hold none. */
function shellQuoted(file: string): string {
  if (file.includes("'")) throw new Error(`template state file ${JSON.stringify(file)}: a quote in the path`);
  return `'${file}'`;
}

/**
 * Stops the VM and writes its whole state (devices, CPU, RAM) to `file` with QEMU's migration
 * (`stop`, `migrate "exec:cat > FILE"`); the VM stays stopped. Rejects naming QEMU's error.
 */
async function saveTcgState(vmm: Vmm, file: string): Promise<void> {
  const socket = vmm.sockets.qmp;
  if (!socket) throw new Error('tcg VM has no QMP socket');
  const qmp = new QmpChannel(socket);
  await qmp.stop();
  await qmp.execute('migrate', { uri: `exec:cat > ${shellQuoted(file)}` });
  const deadline = Date.now() + SAVE_TIMEOUT_MS;
  for (;;) {
    const info = (await qmp.execute('query-migrate')) as { status?: unknown; 'error-desc'?: unknown } | null;
    const status = typeof info?.status === 'string' ? info.status : '';
    if (status === 'completed') return;
    if (status === 'failed' || status === 'cancelled') {
      const desc = typeof info?.['error-desc'] === 'string' ? `: ${info['error-desc']}` : '';
      throw new QmpError(`saving the VM state to ${file} ${status}${desc}`);
    }
    if (Date.now() > deadline) throw new QmpError(`saving the VM state to ${file}: not done after ${SAVE_TIMEOUT_MS} ms (status ${status || 'unknown'})`);
    await new Promise((resolve) => setTimeout(resolve, SAVE_POLL_MS));
  }
}

/** A disk hot-added to a pod VM: its QEMU device and block nodes. */
interface HotplugDisk {
  serial: string;
  deviceId: string;
  fileNode: string;
  formatNode: string;
  scsiId: number;
}

class TcgVm implements Vmm {
  readonly backend = 'tcg' as const;
  private killed = false;
  private readonly qmp: QmpChannel;
  /** Hot-added disks by serial (attached or being attached). */
  private readonly hotplugged = new Map<string, HotplugDisk>();
  private hotplugSeq = 0;
  /** Where the search for a free scsi target starts: targets are reused as late as possible. */
  private nextScsiId = 0;

  constructor(
    readonly identity: ProcessIdentity,
    readonly sockets: Record<string, string>,
    private readonly console: CappedLog,
    readonly exited: Promise<VmExit>,
    private readonly qemuOutput: CappedLog,
    private readonly slots: readonly DiskSlot[] = [],
    private readonly diskHotplug = false,
  ) {
    this.qmp = new QmpChannel(sockets.qmp!);
  }

  get consoleLog(): string {
    return this.console.file;
  }

  consoleSays(text: string, timeoutMs: number): Promise<boolean> {
    return this.console.waitFor(text, timeoutMs);
  }

  /**
   * blockdev-add (file node, raw node over it; read-only for an image) and device_add of a
   * scsi-hd on the VM's virtio-scsi bus. The guest's virtio-scsi driver scans the new target
   * and the agent finds the disk by the serial (VPD page 0x80). Undone on any failure.
   */
  async attachDisk(disk: DiskSlot): Promise<void> {
    const what = `tcg: hot-adding disk ${JSON.stringify(disk.serial)}`;
    if (!this.diskHotplug) throw new Error(`${what}: this VM was booted without a disk hotplug controller`);
    if (!HOTPLUG_SERIAL.test(disk.serial)) throw new Error(`${what}: a serial must be 1-20 of [A-Za-z0-9_-]`);
    if (this.hotplugged.has(disk.serial) || this.slots.some((s) => s.serial === disk.serial)) {
      throw new Error(`${what}: the VM already has a disk with this serial`);
    }
    const st = await fs.promises.stat(disk.path).catch((err: NodeJS.ErrnoException) => {
      throw new Error(`${what}: ${disk.path}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
    });
    if (!st.isFile()) throw new Error(`${what}: ${disk.path} is not a regular file`);
    if (st.size === 0 || st.size % 512 !== 0) throw new Error(`${what}: ${disk.path} is ${st.size} bytes, not a whole, non-zero number of 512-byte sectors`);
    const scsiId = this.freeScsiId();
    if (scsiId === null) throw new Error(`${what}: all ${SCSI_MAX_TARGET + 1} scsi targets of the VM are in use`);
    const n = this.hotplugSeq++;
    const entry: HotplugDisk = { serial: disk.serial, deviceId: `hd${n}`, fileNode: `hd${n}-file`, formatNode: `hd${n}`, scsiId };
    // Reserved before the first await: concurrent attaches never share a serial or a target.
    this.hotplugged.set(disk.serial, entry);
    const cache = { direct: false, 'no-flush': true };
    const added: string[] = [];
    try {
      await this.qmp.execute('blockdev-add', {
        driver: 'file', 'node-name': entry.fileNode, filename: disk.path, 'read-only': disk.readOnly, cache,
      });
      added.push(entry.fileNode);
      await this.qmp.execute('blockdev-add', {
        driver: 'raw', 'node-name': entry.formatNode, file: entry.fileNode, 'read-only': disk.readOnly, cache,
      });
      added.push(entry.formatNode);
      await this.qmp.execute('device_add', {
        driver: 'scsi-hd', id: entry.deviceId, bus: `${SCSI_CONTROLLER_ID}.0`, 'scsi-id': scsiId, lun: 0,
        drive: entry.formatNode, serial: disk.serial,
      });
    } catch (err) {
      for (const node of added.reverse()) {
        await this.qmp.execute('blockdev-del', { 'node-name': node }).catch(() => undefined);
      }
      this.hotplugged.delete(disk.serial);
      throw new Error(`${what} (${disk.path}): ${err instanceof Error ? err.message : String(err)}`);
    }
  }

  /**
   * device_del, then the DEVICE_DELETED event (bounded; a virtio-scsi disk is unplugged at once
   * and the guest told), then blockdev-del of both nodes: QEMU no longer holds the file.
   */
  async detachDisk(serial: string): Promise<void> {
    const entry = this.hotplugged.get(serial);
    if (!entry) return;
    const what = `tcg: hot-removing disk ${JSON.stringify(serial)}`;
    let gone: boolean;
    try {
      gone = await this.qmp.executeAwaitingEvent('device_del', { id: entry.deviceId },
        (e) => e.event === 'DEVICE_DELETED' && e.data.device === entry.deviceId, DEVICE_DELETED_TIMEOUT_MS);
    } catch (err) {
      // Already gone (an earlier detach that failed later on): go on with its nodes.
      if (!(err instanceof QmpError && err.errorClass === 'DeviceNotFound')) {
        throw new Error(`${what}: ${err instanceof Error ? err.message : String(err)}`);
      }
      gone = true;
    }
    if (!gone && await this.deviceExists(entry.deviceId)) {
      throw new Error(`${what}: the device did not go away within ${DEVICE_DELETED_TIMEOUT_MS} ms of device_del`);
    }
    for (const node of [entry.formatNode, entry.fileNode]) {
      try {
        await this.qmp.execute('blockdev-del', { 'node-name': node });
      } catch (err) {
        // Deleted by an earlier, interrupted detach: nothing left to free.
        if (err instanceof QmpError && /failed to find node|not found/i.test(err.message)) continue;
        throw new Error(`${what}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    this.hotplugged.delete(serial);
  }

  /** Whether a device with this id still exists (user-created devices live in /machine/peripheral). */
  private async deviceExists(id: string): Promise<boolean> {
    const children = await this.qmp.execute('qom-list', { path: '/machine/peripheral' });
    return Array.isArray(children) && children.some((c: unknown) =>
      typeof c === 'object' && c !== null && (c as { name?: unknown }).name === id);
  }

  /** The first scsi target from the cursor on that no attached disk uses, or null. */
  private freeScsiId(): number | null {
    const used = new Set([...this.hotplugged.values()].map((d) => d.scsiId));
    for (let i = 0; i <= SCSI_MAX_TARGET; i++) {
      const id = (this.nextScsiId + i) % (SCSI_MAX_TARGET + 1);
      if (!used.has(id)) {
        this.nextScsiId = (id + 1) % (SCSI_MAX_TARGET + 1);
        return id;
      }
    }
    return null;
  }

  /**
   * block_resize to the file's new size: QEMU re-reads it and virtio-blk raises its
   * config-change interrupt. QEMU refuses to resize a read-only node, so a read-only slot is
   * reopened writable for the resize only; its device stays read-only for the guest (it took
   * no write permission at realize, and VIRTIO_BLK_F_RO was negotiated at boot).
   */
  async refreshSlot(serial: string): Promise<void> {
    const index = this.slots.findIndex((s) => s.serial === serial);
    const slot = this.slots[index];
    if (!slot) throw new Error(`tcg: no disk slot with serial ${JSON.stringify(serial)}`);
    const size = (await fs.promises.stat(slot.path)).size;
    if (size % 512 !== 0) throw new Error(`tcg: disk slot ${serial}: ${slot.path} is ${size} bytes, not a whole number of 512-byte sectors`);
    const nodeName = `slot${index}`;
    if (!slot.readOnly) {
      await this.qmp.execute('block_resize', { 'node-name': nodeName, size });
      return;
    }
    const reopen = (readOnly: boolean): Promise<unknown> => {
      const nodes = slotNodes(slot, index, readOnly);
      return this.qmp.execute('blockdev-reopen', { options: [nodes.format, nodes.file] });
    };
    await reopen(false);
    try {
      await this.qmp.execute('block_resize', { 'node-name': nodeName, size });
    } finally {
      await reopen(true);
    }
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
    const qemu = tailFile(this.qemuOutput.file, 10);
    const console = tailFile(this.consoleLog, 15);
    return [qemu && `qemu: ${qemu}`, console && `guest console:\n${console}`].filter(Boolean).join('\n') || 'no output';
  }

  async kill(): Promise<void> {
    if (!this.killed) {
      this.killed = true;
      killIdentified(this.identity, 'SIGKILL');
    }
    await Promise.race([this.exited, waitGone(this.identity, 5000)]);
    // Gone (or not killable): nothing written to its files from now on.
    this.console.close();
    this.qemuOutput.close();
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
  readonly maxDiskSlots = TCG_MAX_DISK_SLOTS;
  readonly restoresState = true;
  /** Pod VMs boot with a virtio-scsi controller and take their disks by hotplug. */
  readonly hotplugDisks = true;

  constructor(private readonly qemuBinary = QEMU_BINARY) {}

  /** QEMU's version and the machine it is told; TCG emulates its CPU: no host dependency. */
  async templateIdentity(shape: VmShape, memoDir: string): Promise<TemplateIdentity> {
    return { vmm: await programVersion(this.qemuBinary, memoDir), machine: tcgMachine(shape), host: 'tcg-any' };
  }

  saveState(vmm: Vmm, stateFile: string): Promise<void> {
    return saveTcgState(vmm, stateFile);
  }

  async boot(config: VmConfig, log: Logger): Promise<Vmm> {
    const agentSocket = path.join(config.dir, 'agent.sock');
    const consoleLog = path.join(config.dataDir, 'console.log');
    const qemuLog = path.join(config.dataDir, 'qemu.log');
    for (const slot of config.slots) {
      if (!fs.existsSync(slot.path)) throw new Error(`disk slot ${slot.serial}: ${slot.path} does not exist`);
    }
    // The 9p share's directory: empty at boot (templates are built with it too).
    if (config.shape.shares.length > 0) fs.mkdirSync(sharesDirOf(config.dir), { recursive: true, mode: 0o700 });
    // Opened before QEMU exists, so a missing state file is a clear error, not a QEMU exit.
    const state = config.incomingState ? fs.openSync(config.incomingState, 'r') : null;
    const args = qemuArgs(config, agentSocket);
    log.debug('booting tcg vm', { vm: config.vmId, qemu: this.qemuBinary });
    // QEMU's stdout/stderr and the console: socketpairs read into capped logs (the caps also
    // bound what QEMU itself prints about a misbehaving guest).
    const stdio: ('ignore' | 'pipe' | number)[] = ['ignore', 'pipe', 'pipe', 'ignore', 'pipe'];
    if (state !== null) stdio[INCOMING_STATE_FD] = state;
    const qemuOutput = new CappedLog(qemuLog, config.logMaxBytes ?? DEFAULT_LOG_MAX_BYTES);
    const guestConsole = new CappedLog(consoleLog, config.logMaxBytes ?? DEFAULT_LOG_MAX_BYTES);
    const closeLogs = (): void => {
      qemuOutput.close();
      guestConsole.close();
    };
    let child: ChildProcess;
    let wrapper = '';
    const tracked = trackVmm(config.dir);
    try {
      // Found here, not by the wrapper's exec: a missing QEMU is a clear error, not an exit code.
      const qemu = findOnPath(this.qemuBinary);
      if (qemu === null) throw new Error(`${this.qemuBinary} not found: install Debian package qemu-system-x86`);
      // Through the exec wrapper (vmm-exec.ts): recorded and tied to this process before it
      // runs; it keeps every inherited fd (the logs' and console's socketpairs, the state).
      const [execWrapper, ...execArgs] = vmmExecPrefix(config.dir);
      wrapper = execWrapper!;
      child = spawn(wrapper, [...execArgs, qemu, ...args], { stdio, detached: false });
    } catch (err) {
      tracked.exited();
      closeLogs();
      throw err;
    } finally {
      if (state !== null) fs.closeSync(state);
    }
    // Known at once (fork happened): a process leaving before the 'spawn' event still kills it.
    if (child.pid !== undefined) tracked.spawnedAs(child.pid);
    for (const stream of [child.stdout, child.stderr]) if (stream) qemuOutput.attach(stream);
    const consoleStream = child.stdio[CONSOLE_FD];
    if (consoleStream instanceof Readable) guestConsole.attach(consoleStream);
    // Exited, and its last words logged: the logs reach EOF as QEMU exits (bounded wait).
    const exited = new Promise<VmExit>((resolve) => {
      child.once('exit', (code, signal) => {
        tracked.exited();
        resolve({ code, signal });
      });
    }).then(async (exit) => {
      await logsDrained([qemuOutput, guestConsole]);
      return exit;
    });
    const spawned = await new Promise<number>((resolve, reject) => {
      child.once('spawn', () => resolve(child.pid!));
      child.once('error', (err) => {
        tracked.exited();
        reject(new Error(`cannot start ${this.qemuBinary} through ${wrapper}: ${err.message}`));
      });
    }).catch((err: unknown) => {
      closeLogs();
      throw err;
    });
    const startTime = processStartTime(spawned);
    if (startTime === null) {
      const exit = await exited;
      throw new Error(`qemu exited at once (code ${exit.code}, signal ${exit.signal}): ${tailFile(qemuLog, 10)}`);
    }
    const sockets = { agent: agentSocket, qmp: path.join(config.dir, QMP_SOCKET_NAME) };
    return new TcgVm({ pid: spawned, startTime }, sockets, guestConsole, exited, qemuOutput, config.slots, config.shape.diskHotplug);
  }
}
