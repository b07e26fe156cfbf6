// binary:///path?k=v stdio, as containerd's runc shim does it (pkg/process NewBinaryIO): the
// logging binary is spawned with the query pairs as arguments and an environment of exactly
// CONTAINER_ID and CONTAINER_NAMESPACE; fd 3 carries the process's stdout, fd 4 its stderr, and
// fd 5 is a channel it closes (or writes to) once it is ready, which we wait for. At Delete its
// inputs are closed; it gets a moment to drain and exit, then SIGTERM, then SIGKILL.
// (Node hands the child socketpairs rather than pipe(2) pairs: read, EOF and close behave the
// same for the logger.)
import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { invalidArgument } from '../errdefs';
import { processStartTime } from '../util/proc';

export interface BinaryLoggerOptions {
  path: string;
  args: string[];
  containerId: string;
  namespace: string;
  /** Bound on the wait for the ready signal on fd 5 (containerd waits forever; we do not). */
  readyTimeoutMs?: number;
  /** After its inputs closed, how long the logger may take to exit by itself before SIGTERM. */
  drainGraceMs?: number;
  /** After SIGTERM, how long before SIGKILL (containerd: 12 s). */
  termGraceMs?: number;
}

export interface BinaryLogger {
  readonly pid: number;
  /** /proc start time of `pid`: recorded in the state file so that `delete` can stop the
   *  logger after the daemon died, and never signal a reused pid. */
  readonly startTime: string;
  readonly stdout: Writable;
  readonly stderr: Writable;
  /** Closes its inputs and waits until the logger is gone (SIGTERM, then SIGKILL). Idempotent. */
  close(): Promise<void>;
}

export const DEFAULT_READY_TIMEOUT_MS = 30_000;
const DEFAULT_DRAIN_GRACE_MS = 2_000;
const DEFAULT_TERM_GRACE_MS = 12_000;

function exitedPromise(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve({ code: child.exitCode, signal: child.signalCode });
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

function within<T>(promise: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<'timeout'>((resolve) => { timer = setTimeout(() => resolve('timeout'), ms); }),
  ]).finally(() => clearTimeout(timer));
}

export async function startBinaryLogger(opts: BinaryLoggerOptions): Promise<BinaryLogger> {
  const what = `logging binary ${opts.path}`;
  const child = spawn(opts.path, opts.args, {
    stdio: ['ignore', 'ignore', 'ignore', 'pipe', 'pipe', 'pipe'],
    env: { CONTAINER_ID: opts.containerId, CONTAINER_NAMESPACE: opts.namespace },
    cwd: '/',
  });
  const exited = exitedPromise(child);
  const fds = child.stdio as ReadonlyArray<unknown>;
  const stdout = fds[3] as Socket;
  const stderr = fds[4] as Socket;
  const ready = fds[5] as Readable;
  for (const s of [stdout, stderr, ready]) s.on('error', () => undefined);
  // We only write to fd 3 and 4: a logger that writes back must not fill our buffers.
  stdout.resume();
  stderr.resume();

  let closing: Promise<void> | null = null;
  const close = (): Promise<void> => {
    if (!closing) {
      closing = (async () => {
        stdout.end();
        stderr.end();
        ready.destroy();
        if (child.pid === undefined) return;
        if (await within(exited, opts.drainGraceMs ?? DEFAULT_DRAIN_GRACE_MS) !== 'timeout') return;
        child.kill('SIGTERM');
        if (await within(exited, opts.termGraceMs ?? DEFAULT_TERM_GRACE_MS) !== 'timeout') return;
        child.kill('SIGKILL');
        await exited;
      })();
    }
    return closing;
  };

  const readyTimeout = opts.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS;
  const outcome = await new Promise<{ ok: true } | { ok: false; reason: string }>((resolve) => {
    const timer = setTimeout(() => resolve({ ok: false, reason: `did not signal ready on fd 5 within ${readyTimeout} ms` }), readyTimeout);
    const done = (result: { ok: true } | { ok: false; reason: string }): void => {
      clearTimeout(timer);
      resolve(result);
    };
    child.once('error', (err: NodeJS.ErrnoException) => done({
      ok: false,
      reason: err.code === 'ENOENT' ? 'does not exist' : err.code === 'EACCES' ? 'is not executable' : `cannot be started: ${err.message}`,
    }));
    // One byte or EOF means ready (containerd reads one byte and accepts EOF).
    ready.once('data', () => done({ ok: true }));
    ready.once('end', () => done({ ok: true }));
    void exited.then(({ code, signal }) => {
      if (code !== 0) done({ ok: false, reason: `exited before it was ready (${signal ? `signal ${signal}` : `code ${code}`})` });
    });
  });
  if (!outcome.ok) {
    await close();
    throw invalidArgument(`${what} ${outcome.reason}`);
  }
  ready.destroy();
  const pid = child.pid!;
  const startTime = processStartTime(pid);
  if (startTime === null) {
    await close();
    throw invalidArgument(`${what} exited right after it signalled ready`);
  }
  return { pid, startTime, stdout, stderr, close };
}
