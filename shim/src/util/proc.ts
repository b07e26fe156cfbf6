// Process identity without a pidfd (Node has none): a pid plus its start time from
// /proc/<pid>/stat names one process for good, so a recycled pid is never signalled.
import * as fs from 'node:fs';

/** Field 22 (starttime, clock ticks since boot) of /proc/<pid>/stat, or null if gone. */
export function processStartTime(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may hold spaces and parentheses: parse after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); starttime is field 22 → rest[19].
    return rest[19] ?? null;
  } catch {
    return null;
  }
}

export interface ProcessIdentity {
  pid: number;
  startTime: string;
}

export function isSameProcessAlive(id: ProcessIdentity): boolean {
  const state = processState(id.pid);
  return state !== null && state !== 'Z' && processStartTime(id.pid) === id.startTime;
}

function processState(pid: number): string | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] ?? null;
  } catch {
    return null;
  }
}

/** SIGKILLs the process if it is still the one identified; true if a signal was sent. */
export function killIdentified(id: ProcessIdentity, signal: NodeJS.Signals = 'SIGKILL'): boolean {
  if (!isSameProcessAlive(id)) return false;
  try {
    process.kill(id.pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Waits (polling /proc; works for non-children too) until the process is gone or a zombie. */
export async function waitGone(id: ProcessIdentity, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  let delay = 2;
  while (Date.now() < deadline) {
    if (!isSameProcessAlive(id)) return true;
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 50);
  }
  return !isSameProcessAlive(id);
}
