// What the host looks like from /proc and the file system: processes (by environment marker or
// command line), mounts under a directory, FIFOs under a directory. Used by leak checks and by
// teardown; reads only, except unmountAll.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { runCommand } from './exec';

export interface HostProcess {
  readonly pid: number;
  readonly cmdline: string;
}

function listPids(): number[] {
  return fs
    .readdirSync('/proc')
    .filter((name) => /^[0-9]+$/.test(name))
    .map(Number)
    .filter((pid) => pid !== process.pid);
}

function readProcFile(pid: number, file: string): Buffer | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/${file}`);
  } catch {
    return undefined; // exited meanwhile, or a kernel thread
  }
}

function cmdlineOf(pid: number): string | undefined {
  const raw = readProcFile(pid, 'cmdline');
  if (raw === undefined || raw.length === 0) return undefined;
  return raw.toString('utf8').replace(/\0+$/, '').split('\0').join(' ');
}

/** Whether a process with this pid exists (a zombie counts: use for processes we do not reap). */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Polls until no process has this pid, or `boundMs` passes; true when it is gone. */
export async function waitPidGone(pid: number, boundMs: number): Promise<boolean> {
  const deadline = Date.now() + boundMs;
  while (pidAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  return !pidAlive(pid);
}

/** Live processes whose environment holds `name=value` (inherited from our containerd). */
export function findMarkedProcesses(name: string, value: string, excludePids: readonly number[] = []): HostProcess[] {
  const needle = `${name}=${value}`;
  const found: HostProcess[] = [];
  for (const pid of listPids()) {
    if (excludePids.includes(pid)) continue;
    const environ = readProcFile(pid, 'environ');
    if (environ === undefined || !environ.toString('utf8').split('\0').includes(needle)) continue;
    const cmdline = cmdlineOf(pid);
    if (cmdline !== undefined && !isZombie(pid)) found.push({ pid, cmdline });
  }
  return found;
}

/** Live processes whose command line contains any of `needles`. */
export function findProcessesByCmdline(needles: readonly string[], excludePids: readonly number[] = []): HostProcess[] {
  const found: HostProcess[] = [];
  for (const pid of listPids()) {
    if (excludePids.includes(pid)) continue;
    const cmdline = cmdlineOf(pid);
    if (cmdline !== undefined && needles.some((needle) => cmdline.includes(needle)) && !isZombie(pid)) {
      found.push({ pid, cmdline });
    }
  }
  return found;
}

function isZombie(pid: number): boolean {
  const stat = readProcFile(pid, 'stat');
  if (stat === undefined) return true;
  // Field 3, after the parenthesised comm (which may itself hold spaces or parentheses).
  const afterComm = stat.toString('utf8').slice(stat.toString('utf8').lastIndexOf(')') + 2);
  return afterComm.startsWith('Z') || afterComm.startsWith('X');
}

/** Decode the octal escapes (\040 etc.) that /proc/self/mountinfo uses in paths. */
function unescapeMountPath(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_m, octal: string) => String.fromCharCode(parseInt(octal, 8)));
}

/** Mount points at or below `dir`, deepest first. */
export function mountsUnder(dir: string): string[] {
  const prefix = path.resolve(dir);
  const mountinfo = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  const points = mountinfo
    .split('\n')
    .filter((line) => line.length > 0)
    .map((line) => unescapeMountPath(line.split(' ')[4] ?? ''))
    .filter((point) => point === prefix || point.startsWith(`${prefix}/`));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** Unmount everything below `dirs` (deepest first; lazily if a plain unmount fails). */
export async function unmountAll(dirs: readonly string[]): Promise<void> {
  for (const dir of dirs) {
    for (const point of mountsUnder(dir)) {
      const plain = await runCommand('umount', [point], { timeoutMs: 10_000 });
      if (plain.exitCode !== 0) await runCommand('umount', ['-l', point], { timeoutMs: 10_000 });
    }
  }
}

/** FIFOs at or below `dir` (not following symlinks); a missing dir has none. */
export function fifosUnder(dir: string, nameFilter: (name: string) => boolean = () => true): string[] {
  const found: string[] = [];
  const walk = (current: string): void => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(current, { withFileTypes: true });
    } catch {
      return; // gone meanwhile, or not a directory
    }
    for (const entry of entries) {
      const full = path.join(current, entry.name);
      if (entry.isFIFO() && nameFilter(entry.name)) found.push(full);
      else if (entry.isDirectory()) walk(full);
    }
  };
  walk(dir);
  return found;
}

/** Visits every entry below `dir` (depth-first, at most `maxDepth` levels); unreadable dirs are skipped. */
export function walkTree(dir: string, maxDepth: number, visit: (full: string, entry: fs.Dirent) => void): void {
  const walk = (current: string, depth: number): void => {
    if (depth > maxDepth) return;
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(current, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      const full = path.join(current, entry.name);
      visit(full, entry);
      if (entry.isDirectory()) walk(full, depth + 1);
    }
  };
  walk(dir, 0);
}
