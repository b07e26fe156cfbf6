// VmmClient: one smolvm-vmm process driven through the addon, typed. It opens the host files
// a configuration names and hands them over as descriptors (the VMM opens nothing itself, as
// under a jailer), and turns the VMM's messages into events and one termination promise.
import * as fs from 'node:fs';
import * as os from 'node:os';
import { loadVmmAddon, type AddonVmmSession } from './addon';
import { readVmmRecord, trackVmm, vmmExecFailure, vmmExecPrefix, VMM_RECORD_FILE } from '../vmm-exec';
import { vmmArtifacts } from './locate';
import {
  parseConfigured,
  parseState,
  parseVmmEvent,
  type HostFile,
  parseSnapshotInfo,
  type VmmConfigured,
  type VmmDisk,
  type VmmEvent,
  type VmmMachineConfig,
  type VmmRestoreConfig,
  type VmmSnapshotInfo,
  type VmmState,
  type VmmTermination,
} from './protocol';

export interface VmmSpawnOptions {
  /** The VM's directory: the exec wrapper records the VMM there (vm/vmm-exec.ts). */
  vmDir: string;
  /** smolvm-vmm; default: the built one (locate.ts). */
  binary?: string;
  /** Where the VMM's own stderr goes (appended, 0600); /dev/null when absent. */
  logFile?: string;
  /** Or an already open descriptor for it. */
  logFd?: number;
}

type FileMode = 'read' | 'readWrite' | 'append';

const OPEN_FLAGS: Record<FileMode, number> = {
  read: fs.constants.O_RDONLY,
  readWrite: fs.constants.O_RDWR,
  append: fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT,
};

/** Collects the descriptors of one request: paths are opened (and closed again by us). */
class FdBundle {
  readonly fds: number[] = [];
  private readonly opened: fs.promises.FileHandle[] = [];

  async add(field: string, file: HostFile, mode: FileMode): Promise<{ fd: number }> {
    let fd: number;
    if (typeof file === 'string') {
      try {
        const handle = await fs.promises.open(file, OPEN_FLAGS[mode], 0o600);
        this.opened.push(handle);
        fd = handle.fd;
      } catch (err) {
        throw new Error(`configure: ${field}: cannot open ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
      }
    } else {
      if (!Number.isInteger(file.fd) || file.fd < 0) throw new Error(`configure: ${field}: ${String(file.fd)} is not a file descriptor`);
      fd = file.fd;
    }
    this.fds.push(fd);
    return { fd: this.fds.length - 1 };
  }

  async close(): Promise<void> {
    await Promise.all(this.opened.splice(0).map((handle) => handle.close().catch(() => undefined)));
  }
}

async function diskFiles(bundle: FdBundle, disks: VmmDisk[]): Promise<Array<Record<string, unknown>>> {
  const wire: Array<Record<string, unknown>> = [];
  for (const [index, disk] of disks.entries()) {
    const file = await bundle.add(`disks[${index}] (${disk.serial})`, disk.file, disk.readOnly ? 'read' : 'readWrite');
    wire.push({ file, read_only: disk.readOnly, serial: disk.serial });
  }
  return wire;
}

export class VmmClient {
  private readonly listeners = new Set<(event: VmmEvent) => void>();
  private exitEvent: { reason: string; detail: string } | null = null;
  private resolveTermination!: (termination: VmmTermination) => void;
  private processGone = false;
  /** Resolves once the VMM process has exited (and been reaped). Never rejects. */
  readonly terminated: Promise<VmmTermination>;

  private constructor(private session: AddonVmmSession | null) {
    this.terminated = new Promise((resolve) => { this.resolveTermination = resolve; });
  }

  /**
   * Starts smolvm-vmm through the exec wrapper (recorded in `vmDir`, killed with this
   * process) and waits for its hello.
   */
  static async spawn(options: VmmSpawnOptions): Promise<VmmClient> {
    const addon = loadVmmAddon();
    const binary = options.binary ?? vmmArtifacts().binary;
    const execPrefix = vmmExecPrefix(options.vmDir);
    const ownLog = options.logFile !== undefined ? fs.openSync(options.logFile, 'a', 0o600) : undefined;
    const client = new VmmClient(null);
    const tracked = trackVmm(options.vmDir);
    let session: AddonVmmSession;
    try {
      session = await addon.spawnVmm({
        binary,
        logFd: ownLog ?? options.logFd,
        execPrefix,
        onEvent: (raw) => client.dispatch(raw),
      });
    } catch (err) {
      tracked.exited();
      const message = err instanceof Error ? err.message : String(err);
      const wrapperFailure = vmmExecFailure(Number(/exited with code (\d+)/.exec(message)?.[1] ?? NaN));
      throw new Error(wrapperFailure ? `${message}: ${wrapperFailure} (its message is in ${options.logFile ?? 'the VMM log'})` : message);
    } finally {
      if (ownLog !== undefined) fs.closeSync(ownLog);
    }
    client.session = session;
    tracked.spawnedAs(session.pid);
    void client.terminated.then(() => tracked.exited());
    // The wrapper wrote it before the exec: none means an addon built before it took execPrefix.
    const record = readVmmRecord(options.vmDir);
    if (record?.pid !== session.pid) {
      session.signal(os.constants.signals.SIGKILL);
      await client.terminated;
      throw new Error(`smolvm-vmm (pid ${session.pid}) was not started through the exec wrapper (no ${VMM_RECORD_FILE} in ${options.vmDir}): rebuild the addon with \`npm run build:addon\``);
    }
    return client;
  }

  get pid(): number { return this.live().pid; }
  get exited(): boolean { return this.processGone; }
  /** The VMM's own account of why it ended, once it gave one. */
  get exitReason(): { reason: string; detail: string } | null { return this.exitEvent; }

  onEvent(listener: (event: VmmEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private live(): AddonVmmSession {
    if (!this.session) throw new Error('smolvm-vmm is not started yet');
    return this.session;
  }

  private dispatch(raw: unknown): void {
    const event = parseVmmEvent(raw);
    if (!event) return;
    if (event.kind === 'exited') this.exitEvent = { reason: event.reason, detail: event.detail };
    for (const listener of this.listeners) listener(event);
    if (event.kind === 'process-exit') {
      this.processGone = true;
      this.resolveTermination({
        reason: this.exitEvent?.reason ?? null,
        detail: this.exitEvent?.detail ?? '',
        code: event.code,
        signal: event.signal,
      });
    }
  }

  /** Builds the VM; every host file goes over as a descriptor. Rejects naming the field. */
  async configure(config: VmmMachineConfig): Promise<VmmConfigured> {
    const session = this.live();
    const bundle = new FdBundle();
    try {
      const wire: Record<string, unknown> = { memory_mib: config.memoryMiB, kernel: await bundle.add('kernel', config.kernel, 'read') };
      if (config.vcpus !== undefined) wire.vcpus = config.vcpus;
      if (config.initramfs !== undefined) wire.initramfs = await bundle.add('initramfs', config.initramfs, 'read');
      if (config.cmdline !== undefined) wire.cmdline = config.cmdline;
      if (config.serial !== undefined) wire.serial = await bundle.add('serial', config.serial, 'append');
      if (config.bootProtocol !== undefined) wire.boot_protocol = config.bootProtocol;
      if (config.disks !== undefined) wire.disks = await diskFiles(bundle, config.disks);
      if (config.vsock !== undefined) wire.vsock = { guest_cid: config.vsock.guestCid, uds_path: config.vsock.udsPath };
      if (config.rng !== undefined) wire.rng = config.rng;
      if (config.exitRecordPath !== undefined) wire.exit_record_path = config.exitRecordPath;
      if (config.onControlClose !== undefined) wire.on_control_close = config.onControlClose;
      return parseConfigured(await session.request('configure', { config: wire }, bundle.fds));
    } finally {
      await bundle.close();
    }
  }

  /** Builds the VM from a snapshot (memory mapped MAP_PRIVATE by the VMM); then `start`. */
  async restore(config: VmmRestoreConfig): Promise<VmmConfigured> {
    const session = this.live();
    const bundle = new FdBundle();
    try {
      const wire: Record<string, unknown> = {
        restore: {
          state: await bundle.add('restore.state', config.restore.state, 'read'),
          memory: await bundle.add('restore.memory', config.restore.memory, 'read'),
        },
      };
      if (config.memoryMiB !== undefined) wire.memory_mib = config.memoryMiB;
      if (config.vcpus !== undefined) wire.vcpus = config.vcpus;
      if (config.serial !== undefined) wire.serial = await bundle.add('serial', config.serial, 'append');
      if (config.disks !== undefined) wire.disks = await diskFiles(bundle, config.disks);
      if (config.vsock !== undefined) wire.vsock = { guest_cid: config.vsock.guestCid, uds_path: config.vsock.udsPath };
      if (config.exitRecordPath !== undefined) wire.exit_record_path = config.exitRecordPath;
      if (config.onControlClose !== undefined) wire.on_control_close = config.onControlClose;
      return parseConfigured(await session.request('configure', { config: wire }, bundle.fds));
    } finally {
      await bundle.close();
    }
  }

  /** Writes the paused VM's state and memory (paths are written atomically by the VMM). */
  async snapshot(target: { state: string; memory: string }): Promise<VmmSnapshotInfo> {
    return parseSnapshotInfo(await this.live().request('snapshot', { state: { path: target.state }, memory: { path: target.memory } }));
  }

  async start(): Promise<void> { await this.live().request('start'); }
  async pause(): Promise<void> { await this.live().request('pause'); }
  async resume(): Promise<void> { await this.live().request('resume'); }
  /** Ends the VM; the process exits right after (see `terminated`). */
  async stop(): Promise<void> { await this.live().request('stop'); }
  async status(): Promise<VmmState> { return parseState(await this.live().request('status')); }

  /**
   * The file behind disk slot `serial` was rewritten in place: the VMM takes its new size and
   * raises virtio-blk's config-change interrupt. Resolves with the new capacity in bytes.
   */
  async refreshDisk(serial: string): Promise<number> {
    const reply = await this.live().request('refresh_disk', { serial }) as { capacity_bytes?: unknown } | null;
    const bytes = reply?.capacity_bytes;
    if (typeof bytes !== 'number' || !Number.isSafeInteger(bytes) || bytes < 0) {
      throw new Error(`smolvm-vmm refresh_disk ${serial}: unexpected reply ${JSON.stringify(reply).slice(0, 200)}`);
    }
    return bytes;
  }

  /** Signals the VMM through its pidfd; false when it has already exited. */
  signal(signal: NodeJS.Signals | number): boolean {
    const number = typeof signal === 'number' ? signal : os.constants.signals[signal];
    if (number === undefined) throw new Error(`unknown signal ${String(signal)}`);
    return this.live().signal(number);
  }

  closeControl(): void { this.live().closeControl(); }
}
