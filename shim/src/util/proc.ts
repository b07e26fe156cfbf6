// Process identity without a pidfd (Node has none): a pid plus its start time from
// /proc/<pid>/stat names one process for good, so a recycled pid is never signalled.
import * as fs from 'node:fs';

/** Fields 3.. of /proc/<pid>/stat (rest[0] = field 3, state), or null if the process is gone. */
function statFields(pid: number): string[] | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // comm (field 2) may hold spaces and parentheses: parse after the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return null;
  }
}

/** Field 22 (starttime, clock ticks since boot) of /proc/<pid>/stat, or null if gone. */
export function processStartTime(pid: number): string | null {
  return statFields(pid)?.[19] ?? null;
}

export interface ProcessIdentity {
  pid: number;
  startTime: string;
}

/** The start time of the process while it lives (a zombie or a dead one counts as gone), else null. */
export function liveProcessStartTime(pid: number): string | null {
  const fields = statFields(pid);
  if (!fields || fields[0] === 'Z' || fields[0] === 'X') return null;
  return fields[19] ?? null;
}

export function isSameProcessAlive(id: ProcessIdentity): boolean {
  return liveProcessStartTime(id.pid) === id.startTime;
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
