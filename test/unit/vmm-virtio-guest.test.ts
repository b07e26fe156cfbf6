/**
 * smolvm-vmm's virtio devices on this machine's real /dev/kvm, driven through real virtqueues
 * by a tiny freestanding guest (test/guests/virtio) with its own virtio-mmio driver:
 *  - blk: serial, capacity, a two-descriptor write + flush + read back on the writable disk
 *    (checked in the host file), a read of the read-only disk and a write there refused with
 *    IOERR (the host file unchanged);
 *  - vsock: a guest echo server on port 1024 behind the VMM's hybrid unix socket (CONNECT /
 *    OK handshake, credit flow, shutdown), the agent channel's real path;
 *  - rng: bytes from the host's entropy.
 * Every VM ends through the guest's i8042 reset; nothing is left behind.
 */
import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { buildVirtioGuest } from '../guests/virtio/build';
import { ensureVmmBuilt, kvmUsable, VmmProcess } from '../guests/vmm-harness';
import { skipBecause } from '../helpers/skip';

const SECTOR = 512;
const IO_TIMEOUT_MS = 20_000;

/** The host end of one hybrid-vsock connection, with bounded reads. */
class HostStream {
  private received = Buffer.alloc(0);
  private ended = false;
  private error: Error | undefined;
  private waiters: Array<() => void> = [];

  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => { this.received = Buffer.concat([this.received, chunk]); this.wake(); });
    socket.on('end', () => { this.ended = true; this.wake(); });
    socket.on('close', () => { this.ended = true; this.wake(); });
    socket.on('error', (error: Error) => { this.error = error; this.ended = true; this.wake(); });
  }

  static async connect(socketPath: string): Promise<HostStream> {
    const socket = net.createConnection(socketPath);
    const stream = new HostStream(socket);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return stream;
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const waiter of waiters) waiter();
  }

  private async until<T>(what: string, take: () => T | undefined, timeoutMs = IO_TIMEOUT_MS): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = take();
      if (value !== undefined) return value;
      if (this.ended) {
        throw new Error(`vsock stream ended while waiting for ${what} (have ${this.received.length} bytes` +
          `${this.error ? `, ${this.error.message}` : ''})`);
      }
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (have ${this.received.length} bytes)`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(remaining, 200));
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
  }

  /** Exactly `length` bytes, once they have all arrived. */
  async read(length: number): Promise<Buffer> {
    return this.until(`${length} bytes`, () => {
      if (this.received.length < length) return undefined;
      const bytes = this.received.subarray(0, length);
      this.received = this.received.subarray(length);
      return bytes;
    });
  }

  async readLine(): Promise<string> {
    return this.until('a line', () => {
      const newline = this.received.indexOf(0x0a);
      if (newline < 0) return undefined;
      const line = this.received.subarray(0, newline + 1).toString('latin1');
      this.received = this.received.subarray(newline + 1);
      return line;
    });
  }

  /** Waits for the other side to close; returns the bytes that came before. */
  async closed(timeoutMs = IO_TIMEOUT_MS): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) {
      const remaining = deadline - Date.now();
      if (remaining <= 0) throw new Error(`timed out after ${timeoutMs} ms waiting for the vsock stream to close`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(remaining, 200));
        this.waiters.push(() => { clearTimeout(timer); resolve(); });
      });
    }
    return this.received;
  }

  write(bytes: Buffer | string): void { this.socket.write(bytes); }
  /** Stops reading: what the VMM sends piles up in the socket, then in the VMM's buffer. */
  pause(): void { this.socket.pause(); }
  resume(): void { this.socket.resume(); }
  end(): void { this.socket.end(); }
  destroy(): void { this.socket.destroy(); }
}

describe('smolvm-vmm virtio devices driven by a tiny guest on /dev/kvm', function () {
  this.timeout(60_000);
  let workDir = '';
  let guest = '';
  const running: VmmProcess[] = [];
  const streams: HostStream[] = [];

  before(function () {
    if (!kvmUsable()) skipBecause(this, { lacks: 'kvm', detail: 'no usable /dev/kvm' });
    this.timeout(600_000);  // a first build of the VMM compiles ~30 files on 2 cores
    ensureVmmBuilt();
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-virtio-guest-'));
    guest = buildVirtioGuest(workDir);
  });

  afterEach(() => {
    for (const stream of streams.splice(0)) stream.destroy();
    for (const process of running.splice(0)) process.kill();
  });

  after(() => {
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  function vmm(): VmmProcess {
    const process = new VmmProcess();
    running.push(process);
    return process;
  }

  async function connect(socketPath: string): Promise<HostStream> {
    const stream = await HostStream.connect(socketPath);
    streams.push(stream);
    return stream;
  }

  /** Configures and starts the guest in `mode` (its command line) with `devices`. */
  async function boot(cmdline: string, devices: Record<string, unknown>): Promise<VmmProcess> {
    const process = vmm();
    const configured = await process.request('configure', {
      config: {
        memory_mib: 16,
        kernel: { path: guest },
        cmdline,
        serial: { inherited_fd: 4 },
        rng: false,
        ...devices,
      },
    });
    assert.equal(configured.ok, true, configured.error);
    assert.match(String(configured.boot), /^ELF 64-bit entry/);
    const started = await process.request('start');
    assert.equal(started.ok, true, started.error);
    return process;
  }

  /** Waits for the guest's i8042 reset and the VMM's clean exit; returns the serial output. */
  async function guestReset(process: VmmProcess): Promise<string> {
    const exited = await process.event('exited', IO_TIMEOUT_MS);
    assert.equal(await process.exited(), 0, process.stderr);
    await process.serialClosed();
    assert.equal(exited.reason, 'guest_reset', `${String(exited.detail)}\nserial:\n${process.serialText}`);
    assert.doesNotMatch(process.serialText, /FAIL/, process.serialText);
    return process.serialText;
  }

  it('blk: serial, capacity, write + flush + read back, read-only disk refuses writes with IOERR', async () => {
    const readOnlyDisk = path.join(workDir, 'image.img');
    const scratchDisk = path.join(workDir, 'scratch.img');
    const image = Buffer.alloc(1 << 20, 0xa5);
    const roText = 'smolvm read-only sector 3, left as it was\n';
    image.fill(0, 3 * SECTOR, 4 * SECTOR);
    image.write(roText, 3 * SECTOR, 'latin1');
    fs.writeFileSync(readOnlyDisk, image);
    fs.writeFileSync(scratchDisk, Buffer.alloc(1 << 20));
    const imageHash = createHash('sha256').update(fs.readFileSync(readOnlyDisk)).digest('hex');

    const sector = 9;
    const seed = 90;
    const process = await boot(`blk sector=${sector} seed=${seed} ro_sector=3`, {
      disks: [
        { file: { path: readOnlyDisk }, read_only: true, serial: 'image' },
        { file: { path: scratchDisk }, serial: 'scratch' },
      ],
    });
    const serial = await guestReset(process);
    assert.match(serial, /blk: disk at 0xd0000000 serial=image capacity=2048 read_only=1\n/);
    assert.match(serial, /blk: disk at 0xd0001000 serial=scratch capacity=2048 read_only=0\n/);
    assert.match(serial, /blk: wrote 2 sectors at 9 and read them back: ok\n/);
    assert.match(serial, /blk: read past the end: IOERR ok\n/);
    assert.match(serial, /blk: unknown request type: UNSUPP ok\n/);
    assert.ok(serial.includes(`blk: ro sector 3: ${roText.slice(0, 41)}`), serial);
    assert.match(serial, /blk: write to the read-only disk: IOERR ok\n/);
    assert.match(serial, /blk: all ok\nvirtio guest done\n/);

    const scratch = fs.readFileSync(scratchDisk);
    const expected = Buffer.alloc(2 * SECTOR);
    for (let i = 0; i < expected.length; i++) expected[i] = (seed + i * 31) & 0xff;
    assert.ok(scratch.subarray(sector * SECTOR, (sector + 2) * SECTOR).equals(expected), 'the pattern reached the scratch file');
    const elsewhere = Buffer.concat([scratch.subarray(0, sector * SECTOR), scratch.subarray((sector + 2) * SECTOR)]);
    assert.ok(elsewhere.every((byte) => byte === 0), 'nothing else in the scratch file changed');
    assert.equal(createHash('sha256').update(fs.readFileSync(readOnlyDisk)).digest('hex'), imageHash, 'the read-only image is unchanged');
  });

  it('blk: the guest reports a missing disk (a failing check is seen as FAIL)', async () => {
    const process = await boot('blk', {});
    const exited = await process.event('exited', IO_TIMEOUT_MS);
    assert.equal(exited.reason, 'guest_reset');
    await process.serialClosed();
    assert.match(process.serialText, /FAIL: blk: disks found: 0\n/);
  });

  it('vsock: CONNECT/OK to a guest echo server on port 1024; 4 KiB messages and a 64 KiB burst come back byte-exact', async () => {
    const socketPath = path.join(workDir, 'vsock.sock');
    const process = await boot('vsock port=1024 conns=3', { vsock: { guest_cid: 7, uds_path: socketPath } });
    await process.serialContains('listening on port 1024', IO_TIMEOUT_MS);

    // A port nobody listens on: the guest answers RST, the VMM closes the unix connection.
    const refused = await connect(socketPath);
    refused.write('CONNECT 1025\n');
    assert.equal((await refused.closed()).length, 0, 'no OK for a refused port');

    async function echoSession(stream: HostStream): Promise<number> {
      stream.write('CONNECT 1024\n');
      const ok = /^OK (\d+)\n$/.exec(await stream.readLine());
      assert.ok(ok, 'OK <port> after CONNECT');
      for (let i = 0; i < 3; i++) {
        const message = randomBytes(4096);
        stream.write(message);
        assert.ok((await stream.read(message.length)).equals(message), `4 KiB message ${i} echoed byte-exact`);
      }
      const burst = randomBytes(64 * 1024);
      stream.write(burst);
      assert.ok((await stream.read(burst.length)).equals(burst), '64 KiB burst echoed byte-exact');
      stream.end();  // EOF: the VMM sends SHUTDOWN, the guest shuts down too, the VMM closes
      assert.equal((await stream.closed()).length, 0, 'nothing after the echoes');
      return Number(ok[1]);
    }

    const first = await echoSession(await connect(socketPath));
    // Two at once: the guest serves both streams, each under its own credit.
    const [second, third] = await Promise.all([
      connect(socketPath).then(echoSession),
      connect(socketPath).then(echoSession),
    ]);
    assert.equal(new Set([first, second, third]).size, 3, 'each connection has its own host port');

    const serial = await guestReset(process);
    assert.match(serial, /vsock: guest cid 7, listening on port 1024\n/);
    assert.match(serial, /vsock: refused host port \d+\n/);
    for (const port of [first, second, third]) {
      assert.ok(serial.includes(`vsock: accepted host port ${port}\n`), serial);
      assert.match(serial, new RegExp(`vsock: host port ${port} shut down \\(flags \\d\\) after 77824 bytes echoed`));
      assert.ok(serial.includes(`vsock: closed host port ${port}\n`), serial);
    }
    assert.match(serial, /vsock: served 3 connections: ok\nvirtio guest done\n/);
    assert.ok(!fs.existsSync(socketPath), 'the VMM removed its vsock socket');
  });

  it('vsock: a host reader that lags makes the guest wait for credit; 2 MiB still come back byte-exact', async () => {
    const socketPath = path.join(workDir, 'vsock-lag.sock');
    const process = await boot('vsock conns=1', { vsock: { guest_cid: 3, uds_path: socketPath } });
    await process.serialContains('listening on port 1024', IO_TIMEOUT_MS);
    const stream = await connect(socketPath);
    stream.write('CONNECT 1024\n');
    assert.match(await stream.readLine(), /^OK \d+\n$/);
    // More than the VMM buffers for us (256 KiB) plus both socket buffers: the guest runs out
    // of credit, asks for more, and goes on once we read again.
    stream.pause();
    const payload = randomBytes(2 << 20);
    stream.write(payload);
    await new Promise((resolve) => setTimeout(resolve, 500));
    stream.resume();
    assert.ok((await stream.read(payload.length)).equals(payload), '2 MiB echoed byte-exact');
    stream.end();
    await stream.closed();
    const serial = await guestReset(process);
    // The host's CREDIT_UPDATEs (sent once we read again) are what let the guest go on.
    assert.match(serial, /after 2097152 bytes echoed in \d+ packets, \d+ credit updates sent, [1-9]\d* received, [1-9]\d* waits for credit\n/);
    assert.match(serial, /vsock: served 1 connections: ok\n/);
  });

  it('rng: random bytes, not all zeros, two requests differ', async () => {
    const process = await boot('rng', { rng: true });
    const serial = await guestReset(process);
    assert.match(serial, /rng: features without VERSION_1 refused: ok\n/);
    assert.match(serial, /rng: [0-9a-f]{32}\.\.\. not all zeros, two reads differ: ok\nvirtio guest done\n/);
  });
});
