// Chooses the backend for a config's `backend` setting: kvm (our VMM), tcg (QEMU) or auto.
import type { BackendChoice } from '../config/config';
import type { Backend } from './backend';
import { TcgBackend } from './backends/tcg';
import { probeHost } from './host';

/** The native VMM (kvm backend) is not part of this build yet. */
export const KVM_BACKEND_AVAILABLE = false;

export function selectBackend(choice: BackendChoice): Backend {
  if (choice === 'tcg') return new TcgBackend();
  if (choice === 'kvm') {
    throw new Error('backend "kvm" (the native VMM) is not available in this build; use "tcg" or "auto"');
  }
  const probe = probeHost(KVM_BACKEND_AVAILABLE);
  return probe.auto === 'kvm' ? selectBackend('kvm') : new TcgBackend();
}
