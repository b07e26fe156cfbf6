// The kvm backend: our own VMM, smolvm-vmm (native-vmm/), one process per VM, driven through
// the node addon. The same kernel, initramfs and disk slots as tcg; the agent channel is
// virtio-vsock (guest cid 3, port 1024) whose host side is the VMM's hybrid unix socket
// (`CONNECT <port>\n` → `OK <port>\n`). Every host file goes to the VMM as a descriptor.
// The serial console and the VMM's own stderr are pipes this process reads into capped logs in
// the VM's data dir (capped-log.ts); the VMM writes its serial output non-blocking, so a slow
// reader costs dropped console bytes, never a stalled vCPU.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import type { Duplex } from 'node:stream';
import { failedPrecondition } from '../../errdefs';
import type { Logger } from '../../log';
import { processStartTime, waitGone, type ProcessIdentity } from '../../util/proc';
import { tailFile, type Backend, type TemplateIdentity, type VmConfig, type VmExit, type Vmm } from '../backend';
import type { VmShape } from '../shape';
import { fileSha256, sha256Hex } from '../../util/file-identity';
import { CappedLog, DEFAULT_LOG_MAX_BYTES, logsDrained } from '../capped-log';
import { probeHost } from '../host';
import { loadVmmAddon } from '../vmm/addon';
import { VmmClient } from '../vmm/client';
import { vmmBuildStatus } from '../vmm/locate';
import { readExitRecord } from '../vmm/protocol';

/** The guest agent listens on this vsock port (rootfs-builder/agent/src/agent.h). */
export const AGENT_VSOCK_PORT = 1024;
/** The guest's vsock context id: 3 is the first one not reserved. */
export const GUEST_CID = 3;
/** `stop`, then SIGKILL if the VMM has not exited after this long. */
const STOP_GRACE_MS = 2000;
/** One CONNECT attempt: the guest answers at once (OK or a reset) once its driver is up. */
const CONNECT_ATTEMPT_MS = 5000;
/** The longest `CONNECT` line answer we accept ("OK 4294967295\n" is 14 bytes). */
const MAX_HANDSHAKE_LINE = 64;

/** The explanation a PVM host deserves when a stock kernel dies under its KVM. */
export const PVM_HINT =
  'this host\'s /dev/kvm is provided by kvm_pvm, which runs only PVM-patched guest kernels: a stock kernel\'s ' +
  'ring-0 code is emulated there and gives up early in boot (an instruction it cannot emulate). ' +
  'Use --backend tcg, or auto (which picks tcg here)';

/** Set to 1 to boot on a PVM host anyway (a PVM-patched guest kernel can run there). */
export const FORCE_ON_PVM_ENV = 'SMOLVM_KVM_ON_PVM';

/**
 * Connects to a hybrid vsock host socket and asks for guest `port`. Resolves with the stream
 * positioned just after the `OK <port>\n` line (any bytes after it are put back); rejects when
 * the VMM closes the connection (nobody listening in the guest yet) or answers anything else.
 */
export function connectHybridVsock(socketPath: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    let answer = Buffer.alloc(0);
    let settled = false;
    const timer = setTimeout(() => fail(new Error(`no answer to CONNECT ${port} within ${timeoutMs} ms`)), timeoutMs);
    const cleanup = (): void => {
      clearTimeout(timer);
      socket.removeListener('readable', onReadable);
      socket.removeListener('error', onError);
      socket.removeListener('end', onEnd);
      socket.removeListener('connect', onConnect);
    };
    const fail = (err: Error): void => {
      if (settled) return;
      settled = true;
      cleanup();
      socket.destroy();
      reject(err);
    };
    const onError = (err: Error): void => fail(err);
    const onEnd = (): void => fail(new Error(`the VMM closed the connection to vsock port ${port} (nothing listening in the guest yet)`));
    const onConnect = (): void => { socket.write(`CONNECT ${port}\n`); };
    const onReadable = (): void => {
      for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read() as Buffer | null) {
        answer = Buffer.concat([answer, chunk]);
        const newline = answer.indexOf(0x0a);
        if (newline < 0) {
          if (answer.length > MAX_HANDSHAKE_LINE) return fail(new Error(`vsock handshake: answer too long: ${JSON.stringify(answer.toString('latin1').slice(0, 80))}`));
          continue;
        }
        const line = answer.subarray(0, newline).toString('latin1');
        if (!/^OK \d{1,10}$/.test(line)) return fail(new Error(`vsock handshake: expected "OK <port>", got ${JSON.stringify(line.slice(0, 80))}`));
        settled = true;
        cleanup();
        const rest = answer.subarray(newline + 1);
        if (rest.length > 0) socket.unshift(rest);
        resolve(socket);
        return;
      }
    };
    socket.on('connect', onConnect);
    socket.on('readable', onReadable);
    socket.on('error', onError);
    socket.on('end', onEnd);
  });
}

class KvmVm implements Vmm {
  readonly backend = 'kvm' as const;
  readonly exited: Promise<VmExit>;
  private killing: Promise<void> | null = null;

  constructor(
    readonly identity: ProcessIdentity,
    readonly sockets: Record<string, string>,
    private readonly console: CappedLog,
    private readonly client: VmmClient,
    private readonly vmmOutput: CappedLog,
    private readonly exitRecord: string,
    private readonly hostHint: string,
  ) {
    // Exited, and its last words logged: both pipes reach EOF as the VMM exits.
    this.exited = client.terminated.then(async (t) => {
      await logsDrained([console, vmmOutput]);
      return { code: t.code, signal: t.signal };
    });
  }

  get consoleLog(): string {
    return this.console.file;
  }

  consoleSays(text: string, timeoutMs: number): Promise<boolean> {
    return this.console.waitFor(text, timeoutMs);
  }

  async connectAgent(timeoutMs: number): Promise<Duplex> {
    const deadline = Date.now() + timeoutMs;
    let lastError = 'no attempt yet';
    let delay = 10;
    for (;;) {
      if (this.client.exited) throw new Error(`the VM exited before its agent answered on vsock port ${AGENT_VSOCK_PORT}: ${this.diagnostics()}`);
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new Error(`the guest agent did not answer on vsock port ${AGENT_VSOCK_PORT} within ${timeoutMs} ms (last attempt: ${lastError}): ${this.diagnostics()}`);
      }
      try {
        return await connectHybridVsock(this.sockets.vsock!, AGENT_VSOCK_PORT, Math.min(remaining, CONNECT_ATTEMPT_MS));
      } catch (err) {
        lastError = err instanceof Error ? err.message : String(err);
      }
      // Retry soon; wake at once if the VM dies meanwhile.
      await Promise.race([new Promise((resolve) => setTimeout(resolve, delay)), this.exited]);
      delay = Math.min(delay * 2, 100);
    }
  }

  /** Why the VM ended (the VMM's own account), its log, the guest console, and a host hint. */
  diagnostics(): string {
    const parts: string[] = [];
    const account = this.client.exitReason ?? readExitRecord(this.exitRecord);
    if (account) parts.push(`smolvm-vmm: ${account.reason}${account.detail ? `: ${account.detail}` : ''}`);
    const vmmLog = tailFile(this.vmmOutput.file, 8);
    if (vmmLog) parts.push(`smolvm-vmm log:\n${vmmLog}`);
    const console = tailFile(this.consoleLog, 15);
    parts.push(console ? `guest console:\n${console}` : 'guest console: (empty: the kernel died before printing anything)');
    if (this.hostHint && this.client.exited) parts.push(this.hostHint);
    return parts.join('\n');
  }

  /** The VMM parks its vCPU threads; the guest makes no progress until resume. */
  async pause(): Promise<void> {
    await this.client.pause();
  }

  async resume(): Promise<void> {
    await this.client.resume();
  }

  /** Pauses the VM and snapshots it: state to `stateFile`, guest memory to memory.bin next to
   *  it (restores map it MAP_PRIVATE: lazily loaded, copy-on-write, shared by every clone). */
  async snapshot(stateFile: string): Promise<void> {
    await this.client.pause();
    await this.client.snapshot({ state: stateFile, memory: kvmMemoryFileOf(stateFile) });
  }

  /** `refresh_disk`: the VMM re-reads the size through the fd it holds and raises the
   *  virtio-blk config-change interrupt (native-vmm/src/control/protocol.md). */
  async refreshSlot(serial: string): Promise<void> {
    await this.client.refreshDisk(serial);
  }

  kill(): Promise<void> {
    if (!this.killing) {
      this.killing = (async () => {
        if (!this.client.exited) {
          // A clean stop first (the VMM removes its socket and writes its exit record), then
          // SIGKILL through the pidfd if it does not go in time.
          let timer: NodeJS.Timeout | undefined;
          const inTime = await Promise.race([
            this.client.stop().then(() => this.exited, () => this.exited).then(() => true),
            new Promise<boolean>((resolve) => { timer = setTimeout(() => resolve(false), STOP_GRACE_MS); }),
          ]);
          clearTimeout(timer);  // else it would hold the event loop (and `smolvm run`) open
          if (!inTime && !this.client.exited) this.client.signal('SIGKILL');
        }
        await Promise.race([this.exited, waitGone(this.identity, 5000)]);
        // Gone (or not killable): nothing written to its files from now on.
        this.console.close();
        this.vmmOutput.close();
      })();
    }
    return this.killing;
  }
}

/** How boot() configures smolvm-vmm besides the shape (a change there must bump this). */
const KVM_MACHINE = 'smolvm-vmm configure v1: vsock cid 3, serial console, virtio-blk slots in order';

let cpuSignatureMemo: string | undefined;

/** The host CPU as the guest's CPUID derives from it: vendor, family, model, flags. */
function cpuSignature(): string {
  if (cpuSignatureMemo === undefined) {
    const first = fs.readFileSync('/proc/cpuinfo', 'utf8').split('\n\n')[0] ?? '';
    const wanted = /^(vendor_id|cpu family|model|model name|stepping|microcode|flags)\s*:/;
    const lines = first.split('\n').filter((line) => wanted.test(line)).map((line) => line.replace(/\s+/g, ' '));
    cpuSignatureMemo = sha256Hex(lines.join('\n')).slice(0, 16);
  }
  return cpuSignatureMemo;
}

/** Where a kvm template keeps guest memory: next to its state file. */
export function kvmMemoryFileOf(stateFile: string): string {
  return path.join(path.dirname(stateFile), 'memory.bin');
}

export class KvmBackend implements Backend {
  readonly name = 'kvm' as const;
  /** Our VMM gives the guest an in-kernel LAPIC, IOAPIC and PIT: nothing to work around. */
  /**
   * Our VMM has an i8042 (its reset line ends the VM) where QEMU's microvm has none: Linux
   * must not probe its AUX port, mux or PnP, which costs ~2 s of timeouts (as Firecracker).
   */
  readonly kernelArgs = 'i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd';
  /** No virtio-9p device in smolvm-vmm yet. */
  readonly supportsDirShares = false;
  /** smolvm-vmm's `disks` limit (native-vmm/src/control/configure.cc). */
  readonly maxDiskSlots = 16;
  /** VmConfig.incomingState: smolvm-vmm's `restore` (state + memory.bin next to it). */
  readonly restoresState = true;

  constructor(private readonly binary?: string) {}

  /** The VMM build, its machine, and the host: never across host kinds (PVM vs hardware), nor
   *  across CPUs (smolvm-vmm itself refuses a snapshot from another CPUID too). */
  async templateIdentity(_shape: VmShape, memoDir: string): Promise<TemplateIdentity> {
    const build = vmmBuildStatus();
    if (build.problem) throw new Error(`kvm templates: ${build.problem}`);
    return {
      vmm: `smolvm-vmm sha256:${await fileSha256(this.binary ?? build.artifacts.binary, memoDir)}`,
      machine: KVM_MACHINE,
      host: `${probeHost(true).kind}:${cpuSignature()}`,
    };
  }

  async saveState(vmm: Vmm, stateFile: string): Promise<void> {
    if (!(vmm instanceof KvmVm)) throw new Error('kvm: not a VM of this backend');
    await vmm.snapshot(stateFile);
  }

  async boot(config: VmConfig, log: Logger): Promise<Vmm> {
    const build = vmmBuildStatus();
    // With an explicit binary only the addon must be built (its loader says so clearly).
    if (build.problem && !this.binary) throw new Error(`backend kvm: ${build.problem}`);
    for (const slot of config.slots) {
      if (!fs.existsSync(slot.path)) throw new Error(`disk slot ${slot.serial}: ${slot.path} does not exist`);
    }
    // Shapes this VMM does not build yet: refused before a process exists.
    if (config.shape.diskHotplug) throw new Error('kvm: no disk hotplug controller in smolvm-vmm (pods use slot pairs)');
    if (config.shape.nics.length > 0) throw new Error('kvm: network interfaces are not supported yet');
    if (config.shape.shares.length > 0) throw new Error('kvm: shared directories are not supported yet');
    const consoleLog = path.join(config.dataDir, 'console.log');
    const vmmLog = path.join(config.dataDir, 'vmm.log');
    const vsockSocket = path.join(config.dir, 'vsock.sock');
    const exitRecord = path.join(config.dir, 'vmm-exit.json');
    const host = probeHost(true);
    const hostHint = host.kind === 'pvm' ? PVM_HINT : '';
    // Booting would take ~15 s of emulated ring-0 code before the kernel dies: say so at once.
    if (host.kind === 'pvm' && process.env[FORCE_ON_PVM_ENV] !== '1') {
      throw failedPrecondition(`backend kvm: ${PVM_HINT} (${FORCE_ON_PVM_ENV}=1 boots anyway, e.g. a PVM-patched guest kernel)`);
    }
    log.debug('booting kvm vm', { vm: config.vmId, binary: this.binary ?? build.artifacts.binary });
    const addon = loadVmmAddon();
    const vmmOutput = new CappedLog(vmmLog, config.logMaxBytes ?? DEFAULT_LOG_MAX_BYTES);
    const guestConsole = new CappedLog(consoleLog, config.logMaxBytes ?? DEFAULT_LOG_MAX_BYTES);
    let client: VmmClient;
    // The VMM's stdout/stderr: its own warnings, some of them about what the guest does.
    const logWriteEnd = pipeInto(addon, vmmOutput);
    try {
      client = await VmmClient.spawn({ vmDir: config.dir, binary: this.binary ?? build.artifacts.binary, logFd: logWriteEnd });
    } catch (err) {
      vmmOutput.close();
      guestConsole.close();
      throw err;
    } finally {
      fs.closeSync(logWriteEnd);
    }
    const startTime = processStartTime(client.pid);
    const vm = new KvmVm(
      { pid: client.pid, startTime: startTime ?? '' },
      { vsock: vsockSocket, exitRecord },
      guestConsole, client, vmmOutput, exitRecord, hostHint,
    );
    // COM1's output: the VMM holds the only write end once configure has sent it.
    const serialWriteEnd = pipeInto(addon, guestConsole);
    try {
      // The VMM is our unreaped child until `terminated`: /proc/<pid>/stat is there.
      if (startTime === null) throw new Error(`smolvm-vmm (pid ${client.pid}) vanished right after its hello`);
      const disks = config.slots.map((slot) => ({ file: slot.path, readOnly: slot.readOnly, serial: slot.serial }));
      // A template restore: same machine, the container's files behind the same slots.
      const configured = config.incomingState ? await client.restore({
        restore: { state: config.incomingState, memory: kvmMemoryFileOf(config.incomingState) },
        memoryMiB: config.shape.memoryMiB,
        vcpus: config.shape.vcpus,
        serial: { fd: serialWriteEnd },
        disks,
        vsock: { guestCid: GUEST_CID, udsPath: vsockSocket },
        exitRecordPath: exitRecord,
      }) : await client.configure({
        memoryMiB: config.shape.memoryMiB,
        vcpus: config.shape.vcpus,
        kernel: config.guest.kernel,
        initramfs: config.guest.initramfs,
        cmdline: config.guest.cmdline,
        serial: { fd: serialWriteEnd },
        disks,
        vsock: { guestCid: GUEST_CID, udsPath: vsockSocket },
        exitRecordPath: exitRecord,
      });
      log.debug('kvm vm configured', { vm: config.vmId, boot: configured.boot, cmdline: configured.cmdline });
      await client.start();
    } catch (err) {
      fs.closeSync(serialWriteEnd);
      await vm.kill();
      const msg = err instanceof Error ? err.message : String(err);
      throw new Error(`kvm backend: ${msg}\n${vm.diagnostics()}`);
    }
    fs.closeSync(serialWriteEnd);
    return vm;
  }
}

/** A new pipe whose read end feeds `log` (until EOF); returns the write end, for the VMM. */
function pipeInto(addon: ReturnType<typeof loadVmmAddon>, log: CappedLog): number {
  const { read, write } = addon.makePipe();
  // A net.Socket over a pipe fd reads it non-blocking on the event loop (never a pool thread).
  log.attach(new net.Socket({ fd: read, readable: true, writable: false }));
  return write;
}
