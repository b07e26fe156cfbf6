// The pods of one shim daemon, by sandbox id (io.kubernetes.cri.sandbox-id): the first
// container of a pod boots its VM, the others join it (waiting for a boot in progress), the
// last one to leave destroys it. Whichever container comes first boots: the sandbox (pause)
// container usually does, but nothing here depends on it.
import type { PodVm } from './pod-vm';

/** The annotation CRI puts on every container of a pod (and on the sandbox container). */
export const SANDBOX_ID_ANNOTATION = 'io.kubernetes.cri.sandbox-id';

interface PodEntry {
  pod: Promise<PodVm>;
  /** Containers joined or joining: the VM stays while this is above zero. */
  members: Set<string>;
}

export class PodRegistry {
  private readonly pods = new Map<string, PodEntry>();

  /** The pod (CRI's sandbox id) a spec's annotations put the container in, or null (a VM of its own). */
  static podIdOf(annotations: Record<string, string> | undefined): string | null {
    const id = annotations?.[SANDBOX_ID_ANNOTATION];
    return id ? id : null;
  }

  /** Pods that have a VM or are booting one. */
  get size(): number {
    return this.pods.size;
  }

  /**
   * Joins `member` to pod `podId`, booting the pod's VM with `boot` when it has none, and
   * reserves a slot pair for it. The caller must `leave` once it is done (also after a failed
   * fill); on a failure here nothing is held.
   */
  async join(podId: string, member: string, boot: () => Promise<PodVm>): Promise<PodVm> {
    let entry = this.pods.get(podId);
    if (!entry) {
      const created: PodEntry = { pod: boot(), members: new Set() };
      // A failed boot is forgotten at once: the next container boots afresh.
      created.pod.catch(() => {
        if (this.pods.get(podId) === created) this.pods.delete(podId);
      });
      this.pods.set(podId, created);
      entry = created;
    }
    entry.members.add(member);
    try {
      const pod = await entry.pod;
      pod.reserve(member);
      return pod;
    } catch (err) {
      entry.members.delete(member);
      await this.dropIfEmpty(podId, entry);
      throw err;
    }
  }

  /** Gives the member's slots back; the last member destroys the VM. */
  async leave(podId: string, member: string): Promise<void> {
    const entry = this.pods.get(podId);
    if (!entry || !entry.members.delete(member)) return;
    const pod = await entry.pod;
    const last = entry.members.size === 0;
    // Forgotten before the teardown: a container arriving meanwhile boots a new VM.
    if (last && this.pods.get(podId) === entry) this.pods.delete(podId);
    await pod.release(member);
    if (last) await pod.destroy();
  }

  /**
   * Leaves the pod. The last member ends the VM at once: taking its container out of the
   * guest and its disks out of the VM first would only delay the kill. Any other member
   * runs `removeFromGuest` first, then gives its slots back.
   */
  async leaveGuest(podId: string, member: string, removeFromGuest: () => Promise<void>): Promise<void> {
    const entry = this.pods.get(podId);
    if (!entry || !entry.members.has(member)) return;
    if (entry.members.size === 1) {
      // Decided synchronously: a container joining from now on boots a VM of its own.
      entry.members.delete(member);
      this.pods.delete(podId);
      const pod = await entry.pod;
      await pod.destroy();
      return;
    }
    await removeFromGuest();
    await this.leave(podId, member);
  }

  /** The member count of a pod (joined or joining), 0 when it has no VM. */
  membersOf(podId: string): number {
    return this.pods.get(podId)?.members.size ?? 0;
  }

  private async dropIfEmpty(podId: string, entry: PodEntry): Promise<void> {
    if (entry.members.size > 0) return;
    if (this.pods.get(podId) === entry) this.pods.delete(podId);
    const pod = await entry.pod.catch(() => null);
    // A VM booted for a container whose join then failed: nobody else holds it.
    if (pod && pod.memberCount === 0) await pod.destroy();
  }
}
