// A log file on the host that a guest cannot grow without bound: the guest console and the
// VMM's own output. The VMM writes into a pipe (or socketpair) whose reading end is held by the
// process that launched it; this class reads it and keeps at most `maxBytes` on disk, as two
// files of at most half of it each: `<file>` (the newest output) and `<file>.1` (the output
// before it), rotated by rename. The shim does the renaming, never the VMM, so this works the
// same for a jailed VMM that holds nothing but its fds. Readers take both files together
// (readLogTail): a line cut by a rotation is whole again there.
import * as fs from 'node:fs';
import type { Readable } from 'node:stream';
import { DEFAULT_CONFIG } from '../config/config';

/** The cap of a VM's console log and of its VMM's log when the caller names none. */
export const DEFAULT_LOG_MAX_BYTES = DEFAULT_CONFIG.consoleLogMaxKiB * 1024;

/** The older half of a capped log. */
export const ROTATED_SUFFIX = '.1';
/** How much of a log the diagnostics read, at most. */
const TAIL_READ_BYTES = 64 * 1024;
/** A VMM's pipe reaches EOF as it exits; its last bytes are awaited this long at most. */
export const DRAIN_WAIT_MS = 1_000;

/** Both files of a capped log, oldest first. */
export function logFiles(file: string): [string, string] {
  return [file + ROTATED_SUFFIX, file];
}

interface ConsoleWatch {
  text: string;
  resolve: (seen: boolean) => void;
  timer: NodeJS.Timeout;
}

export class CappedLog {
  private fd: number | null;
  private size = 0;
  private readonly halfBytes: number;
  private openSources = 0;
  private resolveDrained!: () => void;
  /** Resolves once every attached source has ended and its bytes are written (or dropped). */
  readonly drained: Promise<void>;
  /** The last bytes seen (for watches that straddle two reads). */
  private recent = '';
  private readonly watches = new Set<ConsoleWatch>();
  /** Why writing stopped (e.g. the host disk is full), once it has. */
  private writeError: string | null = null;

  /** Creates `file` anew, empty (an older `<file>` and `<file>.1` are removed first: a log of
   *  an earlier VM still open, e.g. a restore that fell back to a cold boot, keeps its inode). */
  constructor(readonly file: string, maxBytes: number) {
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 2) throw new Error(`capped log ${file}: cap ${maxBytes} is not a byte count of at least 2`);
    this.halfBytes = Math.floor(maxBytes / 2);
    for (const name of logFiles(file)) fs.rmSync(name, { force: true });
    this.fd = fs.openSync(file, 'wx', 0o600);
    this.drained = new Promise((resolve) => { this.resolveDrained = resolve; });
  }

  /** Reads `source` to its end into the log. Attach every source before any can end. */
  attach(source: Readable): void {
    this.openSources += 1;
    let ended = false;
    const end = (): void => {
      if (ended) return;
      ended = true;
      this.openSources -= 1;
      if (this.openSources === 0) this.finish();
    };
    source.on('data', (chunk: Buffer | string) => this.write(typeof chunk === 'string' ? Buffer.from(chunk) : chunk));
    source.once('end', end);
    source.once('close', end);
    // A read error ends the log like EOF does: nothing here may throw out of an event handler.
    source.once('error', end);
  }

  /**
   * Appends `chunk`, rotating first when the current file would pass half the cap. Of a chunk
   * larger than that only its last half-cap bytes are kept. Never throws: a write error (the
   * host disk full) stops the log and is kept for `describeProblem`.
   */
  write(chunk: Buffer): void {
    this.notifyWatches(chunk);
    if (this.fd === null || chunk.length === 0) return;
    let data = chunk;
    try {
      if (data.length > this.halfBytes) data = data.subarray(data.length - this.halfBytes);
      if (this.size + data.length > this.halfBytes) this.rotate();
      let done = 0;
      while (done < data.length) done += fs.writeSync(this.fd, data, done, data.length - done);
      this.size += data.length;
    } catch (err) {
      this.writeError = err instanceof Error ? err.message : String(err);
      this.closeFile();
    }
  }

  /** Why the log stopped being written, or null. */
  get problem(): string | null {
    return this.writeError;
  }

  /**
   * Resolves true once the output contains `text` after this call (read from the sources,
   * whatever the rotation does), false after `timeoutMs` or when the sources ended first.
   */
  waitFor(text: string, timeoutMs: number): Promise<boolean> {
    if (this.openSources === 0 && this.fd === null) return Promise.resolve(false);
    return new Promise((resolve) => {
      const watch: ConsoleWatch = {
        text,
        resolve: (seen) => {
          clearTimeout(watch.timer);
          this.watches.delete(watch);
          resolve(seen);
        },
        timer: setTimeout(() => watch.resolve(false), timeoutMs),
      };
      this.watches.add(watch);
    });
  }

  private notifyWatches(chunk: Buffer): void {
    if (this.watches.size === 0) {
      this.recent = '';
      return;
    }
    const longest = Math.max(...[...this.watches].map((w) => w.text.length));
    const window = this.recent + chunk.toString('latin1');
    for (const watch of [...this.watches]) if (window.includes(watch.text)) watch.resolve(true);
    this.recent = window.slice(-Math.max(0, longest - 1));
  }

  private rotate(): void {
    this.closeFile();
    fs.renameSync(this.file, this.file + ROTATED_SUFFIX);
    this.fd = fs.openSync(this.file, 'w', 0o600);
    this.size = 0;
  }

  private closeFile(): void {
    if (this.fd === null) return;
    const fd = this.fd;
    this.fd = null;
    try {
      fs.closeSync(fd);
    } catch {
      // already unusable: nothing else to do with it
    }
  }

  private finish(): void {
    this.closeFile();
    for (const watch of [...this.watches]) watch.resolve(false);
    this.resolveDrained();
  }

  /** Stops logging now (the sources may still be open; what they send is dropped). */
  close(): void {
    this.closeFile();
  }
}

/**
 * Waits (at most `waitMs`) until the logs have read their sources to the end, then closes
 * them: call when the VMM has exited (its fds closed, so EOF is due at once).
 */
export async function logsDrained(logs: readonly CappedLog[], waitMs = DRAIN_WAIT_MS): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all(logs.map((log) => log.drained)),
    new Promise((resolve) => { timer = setTimeout(resolve, waitMs); }),
  ]);
  clearTimeout(timer);
  for (const log of logs) log.close();
}

/**
 * The end (at most `maxBytes`) of a capped log: `<file>.1` followed by `<file>`, as UTF-8.
 * "" when neither can be read. Also right for a plain file (no `.1`).
 */
export function readLogTail(file: string, maxBytes = TAIL_READ_BYTES): string {
  const parts: Buffer[] = [];
  let wanted = maxBytes;
  for (const name of logFiles(file).reverse()) {
    if (wanted <= 0) break;
    let fd: number;
    try {
      fd = fs.openSync(name, 'r');
    } catch {
      continue;
    }
    try {
      const size = fs.fstatSync(fd).size;
      const length = Math.min(size, wanted);
      const buffer = Buffer.alloc(length);
      const read = fs.readSync(fd, buffer, 0, length, size - length);
      parts.unshift(buffer.subarray(0, read));
      wanted -= read;
    } catch {
      // unreadable: what we have is the tail
    } finally {
      fs.closeSync(fd);
    }
  }
  return Buffer.concat(parts).toString('utf8');
}

/** The last lines of a capped log (or a plain file), for error messages. */
export function tailLog(file: string, maxLines = 20): string {
  const text = readLogTail(file);
  return text.trimEnd().split('\n').slice(-maxLines).join('\n');
}

/** Bytes on disk of a capped log (both files). */
export function logBytes(file: string): number {
  return logFiles(file).reduce((sum, name) => sum + (fs.statSync(name, { throwIfNoEntry: false })?.size ?? 0), 0);
}
