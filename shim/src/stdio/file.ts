// file:///path stdio, as containerd's runc shim does it: the parent directories are created
// (0755), the file is opened for append and created 0644 (whatever the daemon's umask), and
// stdout and stderr both go to it. One descriptor, one Writable: the two streams interleave in
// the order their bytes arrive from the guest and the sink is ended once, after both EOFs.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Writable } from 'node:stream';
import { invalidArgument } from '../errdefs';

export interface LogFile {
  readonly path: string;
  readonly sink: Writable;
  /** Closes the file (after what was written is flushed). Idempotent. */
  close(): Promise<void>;
}

/** mkdir -p with mode 0755 on every directory it creates (the daemon's umask is 077). */
function makeParents(dir: string): void {
  const missing: string[] = [];
  for (let d = dir; !fs.existsSync(d); d = path.dirname(d)) missing.unshift(d);
  for (const d of missing) {
    try {
      fs.mkdirSync(d, { mode: 0o755 });
      fs.chmodSync(d, 0o755);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
}

export function openLogFile(file: string, stream = 'stdout'): LogFile {
  let fd: number;
  try {
    makeParents(path.dirname(file));
    try {
      // O_EXCL tells us whether we created it: only then is its mode ours to set.
      fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
      fs.fchmodSync(fd, 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_APPEND);
    }
    if (!fs.fstatSync(fd).isFile()) {
      fs.closeSync(fd);
      throw Object.assign(new Error('not a regular file'), { code: 'ENOTREG' });
    }
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw invalidArgument(`${stream}: cannot open log file ${file}: ${e.code ?? ''} ${e.message}`.replace(/\s+/g, ' ').trim());
  }
  const sink = fs.createWriteStream(file, { fd, autoClose: true });
  sink.on('error', () => undefined); // the pump sees write errors through its callbacks
  let closing: Promise<void> | null = null;
  return {
    path: file,
    sink,
    close(): Promise<void> {
      if (!closing) {
        closing = new Promise<void>((resolve) => {
          if (sink.closed || sink.destroyed) return resolve();
          sink.once('close', () => resolve());
          if (sink.writableEnded) return; // the pump ended it: 'close' follows the flush
          sink.end();
        });
      }
      return closing;
    },
  };
}
