// What this host can virtualize, and which backend `auto` picks. A /dev/kvm from the kvm_pvm
// module (nested clouds) runs only PVM-patched guest kernels, so it does not count as hardware
// virtualization for our stock guest kernel.
import * as fs from 'node:fs';
import type { BackendName } from './backend';

export type HostKind = 'hardware' | 'pvm' | 'none';

export interface HostProbe {
  kind: HostKind;
  devKvm: boolean;
  cpuVirtFlags: string[];
  kvmModules: string[];
  auto: BackendName;
  reason: string;
}

function loadedModules(): string[] {
  try {
    return fs.readFileSync('/proc/modules', 'utf8').split('\n').map((l) => l.split(' ')[0]!).filter((m) => m.startsWith('kvm'));
  } catch {
    return [];
  }
}

function cpuFlags(): string[] {
  try {
    const line = fs.readFileSync('/proc/cpuinfo', 'utf8').split('\n').find((l) => l.startsWith('flags'));
    const flags = new Set((line ?? '').split(':')[1]?.trim().split(/\s+/) ?? []);
    return ['vmx', 'svm'].filter((f) => flags.has(f));
  } catch {
    return [];
  }
}

/** kvm backend availability is decided by the caller (the native VMM may not be built). */
export function probeHost(kvmBackendAvailable: boolean): HostProbe {
  const devKvm = fs.existsSync('/dev/kvm');
  const kvmModules = loadedModules();
  const cpuVirtFlags = cpuFlags();
  const pvm = kvmModules.includes('kvm_pvm');
  let kind: HostKind = 'none';
  if (devKvm && pvm) kind = 'pvm';
  else if (devKvm && cpuVirtFlags.length > 0) kind = 'hardware';
  let auto: BackendName = 'tcg';
  let reason: string;
  if (kind === 'hardware' && kvmBackendAvailable) {
    auto = 'kvm';
    reason = `/dev/kvm with hardware virtualization (${cpuVirtFlags.join(',')})`;
  } else if (kind === 'hardware') {
    reason = 'hardware virtualization is present but the native VMM (kvm backend) is not built';
  } else if (kind === 'pvm') {
    reason = '/dev/kvm is provided by kvm_pvm, which cannot boot a stock guest kernel';
  } else if (devKvm) {
    reason = '/dev/kvm exists but the CPU shows neither vmx nor svm';
  } else {
    reason = 'no /dev/kvm';
  }
  return { kind, devKvm, cpuVirtFlags, kvmModules, auto, reason };
}
