/**
 * Test harness for the native VMM: builds `smolvm-vmm` (native-vmm/build.sh) and the tiny
 * freestanding guests in this folder, spawns the VMM with its control socket on fd 3 and the
 * serial output on fd 4, and speaks the control protocol (native-vmm/src/control/protocol.md):
 * 4-byte little-endian length + JSON, one object per frame.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import type { Socket } from 'node:net';

/** The repository root, from dist/test/guests or test/guests. */
export const REPO_ROOT = (() => {
  let dir = __dirname;
  while (!fs.existsSync(path.join(dir, 'native-vmm', 'CMakeLists.txt'))) {
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`no native-vmm/CMakeLists.txt above ${__dirname}`);
    dir = parent;
  }
  return dir;
})();

export const GUEST_SOURCES = path.join(REPO_ROOT, 'test', 'guests');
/** SMOLVM_VMM_BINARY overrides it, e.g. with the sanitizer build (native-vmm/build.sh --sanitize). */
export const VMM_BINARY = process.env.SMOLVM_VMM_BINARY ?? path.join(REPO_ROOT, 'native-vmm', 'build', 'smolvm-vmm');

/**
 * Builds the VMM when its binary is missing or older than a source file. SMOLVM_VMM_SKIP_BUILD=1
 * skips it (a binary built elsewhere, given with SMOLVM_VMM_BINARY).
 */
export function ensureVmmBuilt(): string {
  if (process.env.SMOLVM_VMM_SKIP_BUILD === '1') return VMM_BINARY;
  execFileSync(path.join(REPO_ROOT, 'native-vmm', 'build.sh'), { stdio: ['ignore', 'ignore', 'inherit'] });
  return VMM_BINARY;
}

/** Whether this machine has a /dev/kvm we may open read-write. */
export function kvmUsable(): boolean {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Assembles guest `name` (test/guests/<name>.S) into `outDir`/<name>.elf. */
export function buildGuest(name: string, outDir: string): string {
  const output = path.join(outDir, `${name}.elf`);
  execFileSync('gcc', [
    '-nostdlib', '-static', '-ffreestanding', '-no-pie',
    '-Wl,--build-id=none', '-Wl,--no-warn-rwx-segments',
    '-Wl,-T,' + path.join(GUEST_SOURCES, 'guest.ld'),
    '-o', output, path.join(GUEST_SOURCES, `${name}.S`),
  ], { stdio: ['ignore', 'ignore', 'inherit'] });
  return output;
}

/** One message from the VMM: a hello, a reply, an event or a protocol error. */
export interface VmmMessage {
  v: number;
  type: 'hello' | 'reply' | 'event' | 'error';
  id?: unknown;
  ok?: boolean;
  error?: string;
  event?: string;
  reason?: string;
  detail?: string;
  exit_code?: number;
  [key: string]: unknown;
}

function isVmmMessage(value: unknown): value is VmmMessage {
  if (typeof value !== 'object' || value === null) return false;
  const record = value as Record<string, unknown>;
  return typeof record.v === 'number' &&
    (record.type === 'hello' || record.type === 'reply' || record.type === 'event' || record.type === 'error');
}

/** Encodes one control frame. */
export function encodeFrame(body: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(body), 'utf8');
  const header = Buffer.alloc(4);
  header.writeUInt32LE(json.length, 0);
  return Buffer.concat([header, json]);
}

export class VmmProcess {
  readonly child: ChildProcess;
  readonly messages: VmmMessage[] = [];
  private readonly control: Socket;
  private buffer = Buffer.alloc(0);
  private serial = '';
  /** The serial output file (unlinked), read incrementally from serialRead on. */
  private serialFd: number | null;
  private serialRead = 0;
  private readonly serialPoll: NodeJS.Timeout;
  private stderrText = '';
  private nextId = 1;
  private waiters: Array<() => void> = [];
  private exitCode: number | null | undefined = undefined;
  private serialEnded = false;

  /**
   * Spawns smolvm-vmm with the control socket on fd 3 and its serial output on fd 4: a file
   * (unlinked at once), never a pipe. The VMM writes serial output non-blocking and drops what
   * a lagging pipe reader cannot take (native-vmm/src/devices/output_sink.h); a test that
   * reads a guest's output needs every byte.
   */
  constructor(binary: string = VMM_BINARY) {
    const serialFile = path.join(os.tmpdir(), `smolvm-vmm-serial-${process.pid}-${randomBytes(4).toString('hex')}`);
    this.serialFd = fs.openSync(serialFile, 'w+', 0o600);
    fs.unlinkSync(serialFile);
    this.child = spawn(binary, ['--control-fd', '3'], { stdio: ['ignore', 'ignore', 'pipe', 'pipe', this.serialFd] });
    this.control = this.child.stdio[3] as Socket;
    (this.child.stderr as Readable).on('data', (chunk: Buffer) => { this.stderrText += chunk.toString('utf8'); });
    this.serialPoll = setInterval(() => { if (this.readSerial()) this.wake(); }, 10);
    this.serialPoll.unref();
    this.control.on('data', (chunk: Buffer) => this.onData(chunk));
    this.control.on('error', () => undefined);
    this.control.on('close', () => this.wake());
    this.child.on('exit', (code) => {
      this.exitCode = code;
      // Exited: every byte it wrote is in the file.
      clearInterval(this.serialPoll);
      this.readSerial();
      if (this.serialFd !== null) fs.closeSync(this.serialFd);
      this.serialFd = null;
      this.serialEnded = true;
      this.wake();
    });
  }

  /** Appends what the VMM wrote to the serial file since the last read; true if anything. */
  private readSerial(): boolean {
    if (this.serialFd === null) return false;
    const size = fs.fstatSync(this.serialFd).size;
    if (size <= this.serialRead) return false;
    const chunk = Buffer.alloc(size - this.serialRead);
    const got = fs.readSync(this.serialFd, chunk, 0, chunk.length, this.serialRead);
    this.serialRead += got;
    this.serial += chunk.subarray(0, got).toString('latin1');
    return got > 0;
  }

  get serialText(): string {
    this.readSerial();
    return this.serial;
  }
  get stderr(): string { return this.stderrText; }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter();
  }

  private onData(chunk: Buffer): void {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    while (this.buffer.length >= 4) {
      const length = this.buffer.readUInt32LE(0);
      if (this.buffer.length < 4 + length) break;
      const parsed: unknown = JSON.parse(this.buffer.subarray(4, 4 + length).toString('utf8'));
      this.buffer = this.buffer.subarray(4 + length);
      if (!isVmmMessage(parsed)) throw new Error(`malformed VMM message: ${JSON.stringify(parsed)}`);
      this.messages.push(parsed);
    }
    this.wake();
  }

  /** Waits (bounded) until `predicate` holds; re-checked whenever anything arrives. */
  async waitFor<T>(what: string, predicate: () => T | undefined, timeoutMs = 10_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = predicate();
      if (value !== undefined) return value;
      const remaining = deadline - Date.now();
      if (remaining <= 0) {
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; stderr: ${this.stderrText}`);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(remaining, 200));
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
  }

  sendRaw(bytes: Buffer): void { this.control.write(bytes); }

  /** Sends a request of `type` with `fields` and waits for its reply. */
  async request(type: string, fields: Record<string, unknown> = {}, version = 1): Promise<VmmMessage> {
    const id = this.nextId++;
    this.sendRaw(encodeFrame({ v: version, id, type, ...fields }));
    return this.waitFor(`the reply to ${type}`, () =>
      this.messages.find((m) => m.type === 'reply' && m.id === id));
  }

  async event(name: string, timeoutMs = 10_000): Promise<VmmMessage> {
    return this.waitFor(`event ${name}`, () =>
      this.messages.find((m) => m.type === 'event' && m.event === name), timeoutMs);
  }

  async serialContains(text: string, timeoutMs = 10_000): Promise<void> {
    await this.waitFor(`serial output "${text}"`, () => (this.serialText.includes(text) ? true : undefined), timeoutMs);
  }

  /** Waits for the process to exit and returns its exit code. */
  async exited(timeoutMs = 10_000): Promise<number | null> {
    return this.waitFor('the VMM process to exit', () => this.exitCode, timeoutMs);
  }

  /** Waits until the VMM has exited and every byte it wrote to the serial file has been read. */
  async serialClosed(timeoutMs = 10_000): Promise<void> {
    await this.waitFor('the serial pipe to close', () => (this.serialEnded ? true : undefined), timeoutMs);
  }

  closeControl(): void { this.control.end(); }

  kill(): void {
    if (this.exitCode === undefined) this.child.kill('SIGKILL');
  }
}
