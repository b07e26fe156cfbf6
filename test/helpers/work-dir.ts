// Removing a test's temporary SMOLVM_ROOT. A Create that finds no template starts a detached
// template builder (shim/src/vm/template/build-process.ts) that outlives the test and keeps
// writing under the root's cache dir, so a plain recursive removal can race it (ENOTEMPTY).
// Stop those builders first (SIGTERM: a builder kills its QEMU and leaves no half template),
// then remove the directory.
import * as fs from 'node:fs';

/** Pids of template builders whose job names a path under `dir`. */
export function templateBuildersUnder(dir: string): number[] {
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.some((a) => a.endsWith('template/build-process.js')) && argv.some((a) => a.includes(dir))) pids.push(Number(entry));
    } catch {
      // gone while we looked
    }
  }
  return pids;
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** Stops the template builders working under `dir`, then removes `dir`. */
export async function removeWorkDir(dir: string, timeoutMs = 10_000): Promise<void> {
  if (!dir) return;
  const builders = templateBuildersUnder(dir);
  for (const pid of builders) {
    try { process.kill(pid, 'SIGTERM'); } catch { /* already gone */ }
  }
  const deadline = Date.now() + timeoutMs;
  while (builders.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  for (const pid of builders.filter(alive)) {
    try { process.kill(pid, 'SIGKILL'); } catch { /* already gone */ }
  }
  fs.rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
}
