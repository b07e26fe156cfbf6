// A VM started before its container came: a warm-pool spare's (spare.ts) or the one a daemon
// starts as it runs (early-vm.ts). The first Create takes it at most once, when it has that
// container's memory and vCPUs; otherwise, or when nobody took it by the end of the first
// Create (or at exit), it is torn down. A boot under way is let finish first: killing it
// mid-restore would count as a bad template (removed, rebuilt, a cold boot started instead).
import type { Logger } from '../log';
import type { PodVm } from '../vm/pod-vm';
import type { WarmVmSource } from '../vm/placement';

export class WarmVm implements WarmVmSource {
  private taken = false;
  private destroying: Promise<void> | null = null;

  /**
   * `what` names it in the log ("warm vm", "early vm"); `onGone` runs once it is either a
   * container's or torn down (a spare's pool entry goes then).
   */
  constructor(
    private readonly vm: Promise<PodVm | null>,
    private readonly shape: { memoryMiB: number; vcpus: number },
    private readonly log: Logger,
    private readonly what: string,
    private readonly onGone: () => void = () => undefined,
  ) {}

  /** Whether its teardown has begun (nothing may record it any more). */
  get releasing(): boolean {
    return this.destroying !== null;
  }

  async take(memoryMiB: number, vcpus: number): Promise<PodVm | null> {
    if (this.taken) return null;
    this.taken = true;
    if (memoryMiB !== this.shape.memoryMiB || vcpus !== this.shape.vcpus) {
      this.log.info(`${this.what} does not fit the container; booting one`, { vm_memory_mib: this.shape.memoryMiB, wanted_memory_mib: memoryMiB, vcpus });
      void this.destroy();
      return null;
    }
    const pod = await this.vm;
    if (!pod?.alive) {
      void this.destroy();
      return null;
    }
    // The container's state file records the VM from here on.
    this.onGone();
    return pod;
  }

  /** Tears it down unless a container took it; the daemon's exit waits for a teardown
   *  already under way. */
  release(): Promise<void> {
    if (this.destroying) return this.destroying;
    if (this.taken) return Promise.resolve();
    this.taken = true;
    return this.destroy();
  }

  private destroy(): Promise<void> {
    this.destroying ??= this.vm.then((pod) => pod?.destroy()).finally(() => this.onGone());
    return this.destroying;
  }
}
