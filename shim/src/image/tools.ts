// External programs the image code runs (mkfs.erofs, mkfs.ext4, unshare): finding them without
// spawning anything, and running them with their stderr captured for a useful error message.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { failedPrecondition, internal } from '../errdefs';

/** A program found on disk, with what identifies its exact build (for cache keys). */
export interface Tool {
  readonly name: string;
  readonly path: string;
  /** inode, size and mtime (ns) of the binary: changes when the package is upgraded. */
  readonly identity: string;
}

// Daemons are often started with a minimal PATH that lacks the sbin directories, where
// Debian installs mkfs.*: always look there too.
const EXTRA_DIRS = ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin'];

/** The directories searched for programs: $PATH's absolute entries, then the sbin/bin dirs. */
export function defaultSearchDirs(): string[] {
  const fromEnv = (process.env.PATH ?? '').split(':').filter((d) => d.startsWith('/'));
  return [...new Set([...fromEnv, ...EXTRA_DIRS])];
}

/**
 * Finds `name` on PATH (plus the sbin dirs) by stat alone: no `which`, no spawn, so it is cheap
 * enough for the hot path. Throws FailedPrecondition naming the Debian package when absent.
 */
export async function findTool(name: string, debianPackage: string, dirs = defaultSearchDirs()): Promise<Tool> {
  for (const dir of dirs) {
    const candidate = path.join(dir, name);
    try {
      const st = await fs.promises.stat(candidate, { bigint: true });
      if (!st.isFile() || (st.mode & 0o111n) === 0n) continue;
      return { name, path: candidate, identity: `${st.ino}:${st.size}:${st.mtimeNs}` };
    } catch {
      // not in this directory
    }
  }
  throw failedPrecondition(`${name} not found on PATH or in /usr/sbin, /sbin: install the Debian package ${debianPackage}`);
}

export interface RunOptions {
  cwd?: string;
  /** How much of stderr/stdout to keep for the error message. */
  keepBytes?: number;
}

/**
 * Runs a program to completion. Rejects with an Internal error naming the program, its exit
 * status and the tail of its output when it fails or cannot be started.
 */
export function runTool(file: string, args: readonly string[], opts: RunOptions = {}): Promise<void> {
  const keep = opts.keepBytes ?? 4096;
  return new Promise<void>((resolve, reject) => {
    let output = '';
    const child = spawn(file, [...args], { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    const collect = (chunk: Buffer): void => {
      output += chunk.toString('utf8');
      if (output.length > keep * 2) output = output.slice(-keep);
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    child.on('error', (err) => reject(internal(`cannot run ${file}: ${err.message}`)));
    child.on('close', (code, signal) => {
      if (code === 0) {
        resolve();
        return;
      }
      // Strip the terminal escapes mkfs.erofs prints for its progress line.
      // eslint-disable-next-line no-control-regex
      const tail = output.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '').trim().slice(-keep);
      const status = signal ? `killed by ${signal}` : `exit status ${code}`;
      reject(internal(`${path.basename(file)} failed (${status})${tail ? `: ${tail}` : ''}`));
    });
  });
}
