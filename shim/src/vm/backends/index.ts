// The one backend factory: a config's `backend` setting (or a template job's backend name)
// to the backend that runs VMs. Loads nothing heavy: the VMM addon is loaded by the kvm
// backend when it boots a VM.
import type { BackendChoice } from '../../config/config';
import type { Backend } from '../backend';
import { probeHost } from '../host';
import { vmmBuildStatus } from '../vmm/locate';
import { KvmBackend } from './kvm';
import { TcgBackend } from './tcg';

/** Whether the kvm backend can run here at all: smolvm-vmm and its addon are built. */
export function kvmBackendAvailable(): boolean {
  return vmmBuildStatus().problem === '';
}

/** kvm where the host has hardware virtualization and smolvm-vmm is built, else tcg (auto);
 *  an explicit kvm that is not built is a clear error. */
export function createBackend(choice: BackendChoice): Backend {
  if (choice === 'tcg') return new TcgBackend();
  if (choice === 'kvm') {
    const build = vmmBuildStatus();
    if (build.problem) throw new Error(`backend "kvm" is not available: ${build.problem}; or use --backend tcg`);
    return new KvmBackend();
  }
  const probe = probeHost(kvmBackendAvailable());
  return probe.auto === 'kvm' ? new KvmBackend() : new TcgBackend();
}
