// The host side of one process's stdio (a container's init or an exec), from the paths in
// CreateTaskRequest/ExecProcessRequest: stdin is always a FIFO (or absent); stdout's URI
// decides where both outputs go, as in containerd's runc shim: FIFOs, a file:// log file, or a
// binary:// logger (see uri.ts). Everything opened is released by close(); `closed` resolves
// once it is (a logger process may take a moment to exit).
import type * as net from 'node:net';
import type { Writable } from 'node:stream';
import { invalidArgument } from '../errdefs';
import { startBinaryLogger, type BinaryLogger } from './binary';
import { openOutputFifo, openStdinFifo } from './fifo';
import { openLogFile, type LogFile } from './file';
import { parseStdioUri } from './uri';
import type { ProcessIdentity } from '../util/proc';

export interface StdioPaths {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export interface StdioContext {
  /** CONTAINER_ID of a binary:// logger: the container id, or the exec id for an exec (as runc's shim). */
  containerId: string;
  namespace: string;
  /** Bound on a binary:// logger's ready signal. */
  loggerReadyTimeoutMs?: number;
}

export interface HostStdio {
  stdin?: net.Socket;
  stdout?: Writable;
  /** For file:// and binary:// with one shared sink, the same object as stdout. */
  stderr?: Writable;
  /** Releases every FIFO end, file and logger we hold. Idempotent. */
  close(): void;
  /** Resolves once close() has released everything (a logger has exited). Never rejects. */
  readonly closed: Promise<void>;
  /** Stops reading stdin (CloseIO): the guest then sees EOF. */
  closeStdin(): void;
  /** The binary:// logger process, if any (recorded in the state file for `delete`). */
  readonly logger?: ProcessIdentity;
}

export async function openHostStdio(paths: StdioPaths, context: StdioContext): Promise<HostStdio> {
  const sockets: net.Socket[] = [];
  let logFile: LogFile | null = null;
  let logger: BinaryLogger | null = null;
  let closedPromise: Promise<void> | null = null;
  const release = (): Promise<void> => {
    if (!closedPromise) {
      for (const s of sockets) s.destroy();
      closedPromise = Promise.all([
        logFile?.close(),
        logger?.close(),
      ]).then(() => undefined, () => undefined);
    }
    return closedPromise;
  };
  let resolveClosed!: () => void;
  const closed = new Promise<void>((resolve) => { resolveClosed = resolve; });
  const result: { -readonly [K in keyof HostStdio]: HostStdio[K] } = {
    close(): void {
      void release().then(resolveClosed);
    },
    closed,
    closeStdin(): void {
      result.stdin?.destroy();
    },
  };
  try {
    const stdin = parseStdioUri(paths.stdin, 'stdin');
    const stdout = parseStdioUri(paths.stdout, 'stdout');
    const stderr = paths.terminal ? { kind: 'none' as const } : parseStdioUri(paths.stderr, 'stderr');
    if (stdin.kind !== 'none' && stdin.kind !== 'fifo') throw invalidArgument(`stdin: ${stdin.kind}:// is for output only; stdin must be a FIFO`);
    if (stdin.kind === 'fifo') {
      result.stdin = openStdinFifo(stdin.path);
      sockets.push(result.stdin);
    }
    switch (stdout.kind) {
      case 'file':
        // stderr's own value is not consulted (containerd's runc shim neither): both go here.
        logFile = openLogFile(stdout.path, 'stdout');
        result.stdout = logFile.sink;
        if (!paths.terminal) result.stderr = logFile.sink;
        break;
      case 'binary':
        logger = await startBinaryLogger({
          path: stdout.path, args: stdout.args, containerId: context.containerId, namespace: context.namespace,
          readyTimeoutMs: context.loggerReadyTimeoutMs,
        });
        result.stdout = logger.stdout;
        result.logger = { pid: logger.pid, startTime: logger.startTime };
        if (!paths.terminal) result.stderr = logger.stderr;
        break;
      case 'fifo':
      case 'none':
        if (stderr.kind === 'file' || stderr.kind === 'binary') {
          throw invalidArgument(`stderr: ${stderr.kind}:// needs stdout to be the same URI (stdout's URI decides where both outputs go)`);
        }
        for (const [name, target] of [['stdout', stdout], ['stderr', stderr]] as const) {
          if (target.kind !== 'fifo') continue;
          const sock = openOutputFifo(target.path, name);
          sockets.push(sock);
          result[name] = sock;
        }
        break;
    }
    return result;
  } catch (err) {
    result.close();
    await closed;
    throw err;
  }
}
