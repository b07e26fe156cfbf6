// Reads a shim daemon's log FIFO (the bundle's `log`, which containerd would copy into its own
// log) for the whole test, so that a test can fail when the daemon logged an uncaught
// exception or an unhandled rejection: the daemon keeps serving after one, and nothing else
// would notice.
import * as fs from 'node:fs';
import * as net from 'node:net';
import { daemonFaultLines } from '../../shim/src/daemon-faults';

export class DaemonLogReader {
  private text = '';
  private readonly socket: net.Socket;

  /** Starts reading `fifo` at once (the daemon opens it O_RDWR | O_NONBLOCK and drops lines
   *  nobody reads: the reader must be there before the daemon starts). */
  constructor(readonly fifo: string) {
    const fd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    this.socket = new net.Socket({ fd, readable: true, writable: false });
    this.socket.setEncoding('utf8');
    this.socket.on('data', (chunk: string) => {
      // Keep the log bounded: faults are found as they arrive, the rest is kept for messages.
      this.text = (this.text + chunk).slice(-4 * 1024 * 1024);
    });
    this.socket.on('error', () => undefined);
  }

  get log(): string {
    return this.text;
  }

  faults(): string[] {
    return daemonFaultLines(this.text);
  }

  /** Throws, quoting the lines, when the daemon reported a fault. */
  assertNoFaults(): void {
    const faults = this.faults();
    if (faults.length > 0) throw new Error(`the shim daemon (log ${this.fifo}) logged:\n  ${faults.join('\n  ')}`);
  }

  close(): void {
    this.socket.destroy();
  }
}

/**
 * Gives every `makeBundle` of a suite a log reader and checks each after its test: call once
 * in a describe block; `watch(fifo)` when a bundle's log FIFO is made.
 */
export function checkDaemonLogs(): { watch: (fifo: string) => DaemonLogReader } {
  const readers: DaemonLogReader[] = [];
  afterEach(function () {
    const open = readers.splice(0);
    // Give lines written just before the test ended a moment to arrive.
    return new Promise<void>((resolve, reject) => setTimeout(() => {
      try {
        if (this.currentTest?.state !== 'failed') for (const reader of open) reader.assertNoFaults();
        resolve();
      } catch (err) {
        reject(err as Error);
      } finally {
        for (const reader of open) reader.close();
      }
    }, 50));
  });
  return { watch: (fifo) => { const r = new DaemonLogReader(fifo); readers.push(r); return r; } };
}
