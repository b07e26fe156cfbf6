// The VM a shim daemon starts as soon as it runs, before containerd's Create reaches it:
// restoring a template (~150 ms under TCG) then overlaps the daemon's own start-up and the
// Create's round trip instead of following them. It has the pod shape (disks arrive by
// hotplug or slot pairs, as for a warm spare's VM), the config's memory and vCPUs; the first
// Create takes it if it fits, and it is gone once that Create is over either way (a container
// that did not take it boots its own). While it waits it is recorded in the state file of the
// container `start` was called for, so that `delete` kills it should the daemon die.
import type { SmolvmConfig } from '../config/config';
import type { Logger } from '../log';
import type { VmBuilder } from '../vm/builder';
import { vmRecordOf } from '../vm/placement';
import { PodVm } from '../vm/pod-vm';
import { podVmShape } from '../vm/shape';
import type { VmRecord } from '../state/store';
import { WarmVm } from './warm-vm';

export interface EarlyVmOptions {
  builder: VmBuilder;
  config: SmolvmConfig;
  log: Logger;
  /** Records the VMM (pid, dir) where `delete` finds it, before the guest runs. */
  record: (vm: VmRecord) => void;
}

/** Starts restoring the early VM; the returned WarmVm is the daemon's for its first Create. */
export function startEarlyVm(opts: EarlyVmOptions): WarmVm {
  const { config, log } = opts;
  const { builder } = opts;
  const booting: Promise<PodVm | null> = PodVm.start(builder, {
    podId: `early-${process.pid}`, log, maxContainers: config.podMaxContainers,
    shape: podVmShape(builder.backend, config.memoryMiB, config.vcpus, config.podMaxContainers),
    onVmm: (vmm, dirs) => {
      // Released before its VMM even existed (the first Create failed at once): no record,
      // that container's state file is gone for good. The boot completes and the VM goes.
      if (warm.releasing) return;
      opts.record(vmRecordOf(vmm, dirs, []));
    },
  }).then(
    async (pod) => {
      // The first container's writable disk, attached before it comes (hotplug VMs).
      await pod.prepareWritable(config.writableDiskMiB * 1024 * 1024, builder.paths.cacheDir).catch((err: unknown) => {
        log.warn('early vm: could not attach a writable disk ahead', { error: String(err) });
      });
      return pod;
    },
    (err: unknown) => {
      if (!warm.releasing) log.warn('early vm did not start; the container boots its own', { error: err instanceof Error ? err.message : String(err) });
      return null;
    },
  );
  const warm = new WarmVm(booting, config, log, 'early vm');
  return warm;
}
