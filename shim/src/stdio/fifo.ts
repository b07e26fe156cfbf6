// The container's stdio on the host side: the FIFOs containerd's client made (`ctr` and CRI
// create them and pass their paths in CreateTaskRequest). They are opened non-blocking and
// driven as net.Socket, never through fs streams: fs streams on FIFOs park libuv's four worker
// threads in blocking reads, and a few stalled pipes would freeze the whole daemon.
import * as fs from 'node:fs';
import * as net from 'node:net';
import { invalidArgument, unimplemented } from '../errdefs';

export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export interface HostStdio {
  stdin?: net.Socket;
  stdout?: net.Socket;
  stderr?: net.Socket;
  /** Closes every FIFO end we hold. Idempotent. */
  close(): void;
  /** Stops reading stdin (CloseIO): the guest then sees EOF. */
  closeStdin(): void;
}

/** "" = absent; a bare path or fifo:// = FIFO; other schemes come with the full task API. */
function fifoPath(uri: string, stream: string): string | null {
  if (!uri) return null;
  if (uri.startsWith('/')) return uri;
  const m = /^([a-z][a-z0-9+.-]*):\/\/(.*)$/i.exec(uri);
  if (!m) throw invalidArgument(`${stream}: ${JSON.stringify(uri)} is neither a path nor a URI`);
  if (m[1] === 'fifo') return m[2]!;
  throw unimplemented(`${stream}: stdio URI scheme ${m[1]}:// is not supported yet`);
}

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

export function openHostStdio(paths: StdioPaths): HostStdio {
  const opened: net.Socket[] = [];
  const result: HostStdio = {
    close(): void {
      for (const s of opened) s.destroy();
    },
    closeStdin(): void {
      result.stdin?.destroy();
    },
  };
  try {
    const stdin = fifoPath(paths.stdin, 'stdin');
    const stdout = fifoPath(paths.stdout, 'stdout');
    const stderr = paths.terminal ? null : fifoPath(paths.stderr, 'stderr');
    if (stdin) {
      // Read-only: EOF arrives when the client closes its end (a reader with no writer yet
      // simply waits: epoll reports nothing until a writer shows up).
      const sock = new net.Socket({ fd: openFifo(stdin, 'stdin', fs.constants.O_RDONLY), readable: true, writable: false });
      sock.pause();
      opened.push(sock);
      result.stdin = sock;
    }
    for (const [name, p] of [['stdout', stdout], ['stderr', stderr]] as const) {
      if (!p) continue;
      // Read-write: we hold a reader too, so a client that detaches never causes EPIPE; a full
      // pipe only back-pressures the guest through the stream credit.
      const sock = new net.Socket({ fd: openFifo(p, name, fs.constants.O_RDWR), readable: false, writable: true });
      sock.on('error', () => undefined); // the pump sees write errors through callbacks
      opened.push(sock);
      result[name] = sock;
    }
    return result;
  } catch (err) {
    result.close();
    throw err;
  }
}
