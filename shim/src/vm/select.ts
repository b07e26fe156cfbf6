// Chooses the backend for a config's `backend` setting: kvm (our VMM), tcg (QEMU) or auto.
// Loads nothing heavy: the VMM addon is loaded by the kvm backend when it boots a VM.
import type { BackendChoice } from '../config/config';
import type { Backend } from './backend';
import { KvmBackend } from './backends/kvm';
import { TcgBackend } from './backends/tcg';
import { probeHost } from './host';
import { vmmBuildStatus } from './vmm/locate';

/** Whether the kvm backend can run here at all: smolvm-vmm and its addon are built. */
export function kvmBackendAvailable(): boolean {
  return vmmBuildStatus().problem === '';
}

export function selectBackend(choice: BackendChoice): Backend {
  if (choice === 'tcg') return new TcgBackend();
  if (choice === 'kvm') {
    const build = vmmBuildStatus();
    if (build.problem) throw new Error(`backend "kvm" is not available: ${build.problem}; or use --backend tcg`);
    return new KvmBackend();
  }
  const probe = probeHost(kvmBackendAvailable());
  return probe.auto === 'kvm' ? new KvmBackend() : new TcgBackend();
}
