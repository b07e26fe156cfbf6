// FIFO stdio: the FIFOs containerd's client made (`ctr` and CRI create them and pass their
// paths in CreateTaskRequest). They are opened non-blocking and driven as net.Socket, never
// through fs streams: fs streams on FIFOs park libuv's four worker threads in blocking reads,
// and a few stalled pipes would freeze the whole daemon.
import * as fs from 'node:fs';
import * as net from 'node:net';
import { invalidArgument } from '../errdefs';

function openFifo(path: string, stream: string, flags: number): number {
  try {
    const st = fs.statSync(path);
    if (!st.isFIFO()) throw invalidArgument(`${stream}: ${path} is not a FIFO`);
    return fs.openSync(path, flags | fs.constants.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw invalidArgument(`${stream}: FIFO ${path} does not exist`);
    throw err;
  }
}

/**
 * The process's stdin FIFO, read-only: EOF arrives when the client closes its end (a reader
 * with no writer yet simply waits: epoll reports nothing until a writer shows up). Paused.
 */
export function openStdinFifo(path: string): net.Socket {
  const sock = new net.Socket({ fd: openFifo(path, 'stdin', fs.constants.O_RDONLY), readable: true, writable: false });
  sock.pause();
  return sock;
}

/**
 * An output FIFO, read-write: we hold a reader too, so a client that detaches never causes
 * EPIPE; a full pipe only back-pressures the guest through the stream credit.
 */
export function openOutputFifo(path: string, stream: 'stdout' | 'stderr'): net.Socket {
  const sock = new net.Socket({ fd: openFifo(path, stream, fs.constants.O_RDWR), readable: false, writable: true });
  sock.on('error', () => undefined); // the pump sees write errors through callbacks
  return sock;
}
