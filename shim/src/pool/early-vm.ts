// The VM a shim daemon starts as soon as it runs, before containerd's Create reaches it:
// restoring a template (~150 ms under TCG) then overlaps the daemon's own start-up and the
// Create's round trip instead of following them. It has the pod shape (disks arrive by
// hotplug or slot pairs, as for a warm spare's VM), the config's memory and vCPUs; the first
// Create takes it if it fits, and it is gone once that Create is over either way (a container
// that did not take it boots its own). While it waits it is recorded in the state file of the
// container `start` was called for, so that `delete` kills it should the daemon die.
import type { SmolvmConfig } from '../config/config';
import type { Paths } from '../config/paths';
import type { Logger } from '../log';
import type { Backend } from '../sandbox/backend';
import { PodVm } from '../sandbox/pod';
import type { VmRecord } from '../state/store';
import type { WarmVmSource } from '../task/container';

export interface EarlyVmOptions {
  backend: Backend;
  paths: Paths;
  config: SmolvmConfig;
  log: Logger;
  /** Records the VMM (pid, dir) where `delete` finds it, before the guest runs. */
  record: (vm: VmRecord) => void;
}

export class EarlyVm implements WarmVmSource {
  private readonly booting: Promise<PodVm | null>;
  private taken = false;
  private destroying: Promise<void> | null = null;

  constructor(private readonly opts: EarlyVmOptions) {
    const { config, log } = opts;
    this.booting = PodVm.boot({
      sandboxId: `early-${process.pid}`, backend: opts.backend, paths: opts.paths, memoryMiB: config.memoryMiB,
      vcpus: config.vcpus, maxContainers: config.podMaxContainers, templates: config.templates, log,
      onVmStarted: (vm, vmDir) => {
        // Released before its VMM even existed (the first Create failed at once): no record,
        // that container's state file is gone for good. The boot completes and the VM goes.
        if (this.destroying) return;
        opts.record({
          backend: vm.backend, pid: vm.identity.pid, pidStartTime: vm.identity.startTime, dir: vmDir, sockets: vm.sockets, disks: {},
        });
      },
    }).then(
      async (pod) => {
        // The first container's writable disk, attached before it comes (hotplug VMs).
        await pod.prepareWritable(config.writableDiskMiB * 1024 * 1024, opts.paths.cacheDir).catch((err: unknown) => {
          log.warn('early vm: could not attach a writable disk ahead', { error: String(err) });
        });
        return pod;
      },
      (err: unknown) => {
        if (!this.destroying) log.warn('early vm did not start; the container boots its own', { error: err instanceof Error ? err.message : String(err) });
        return null;
      },
    );
  }

  async take(memoryMiB: number, vcpus: number): Promise<PodVm | null> {
    if (this.taken) return null;
    this.taken = true;
    if (memoryMiB !== this.opts.config.memoryMiB || vcpus !== this.opts.config.vcpus) {
      this.opts.log.info('early vm does not fit the container; booting one', { vm_memory_mib: this.opts.config.memoryMiB, wanted_memory_mib: memoryMiB, vcpus });
      void this.destroy();
      return null;
    }
    const pod = await this.booting;
    return pod?.alive ? pod : null;
  }

  /** Tears it down unless a container took it (after the first Create, and at exit: the
   *  daemon waits for a teardown already under way). */
  release(): Promise<void> {
    if (this.destroying) return this.destroying;
    if (this.taken) return Promise.resolve();
    this.taken = true;
    return this.destroy();
  }

  private destroy(): Promise<void> {
    // A boot under way is let finish (killing it mid-restore would count as a bad template:
    // removed, rebuilt, and a cold boot started instead), then the VM goes.
    this.destroying ??= this.booting.then((pod) => pod?.destroy());
    return this.destroying;
  }
}
