// Task status as `ctr tasks ls` shows it, and waiting for one.
import { type PrivateContainerd, lines } from './containerd';
import { sleep } from './exec';

export async function taskStatus(containerd: PrivateContainerd, id: string): Promise<string | undefined> {
  const listing = await containerd.ctrChecked(['tasks', 'ls'], { timeoutMs: 15_000 });
  for (const row of lines(listing.stdout).slice(1)) {
    const [taskId, , status] = row.split(/\s+/);
    if (taskId === id) return status;
  }
  return undefined;
}

/** Polls until the task shows `status` or `boundMs` passes; returns the last status seen. */
export async function waitForStatus(containerd: PrivateContainerd, id: string, status: string, boundMs: number): Promise<string | undefined> {
  const deadline = Date.now() + boundMs;
  let current: string | undefined;
  while (Date.now() < deadline) {
    current = await taskStatus(containerd, id);
    if (current === status) return current;
    await sleep(200);
  }
  return current;
}
