// What this host can virtualize, and which backend `auto` picks. A /dev/kvm from the kvm_pvm
// module (nested clouds) runs only PVM-patched guest kernels, so it does not count as hardware
// virtualization for our stock guest kernel. Synchronous and cheap (a few /proc and /sys
// reads): backend selection runs it on every VM boot.
import * as fs from 'node:fs';
import type { BackendName } from './backend';

export type HostKind = 'hardware' | 'pvm' | 'none';

export interface HostProbe {
  kind: HostKind;
  devKvm: boolean;
  cpuVirtFlags: string[];
  /** vendor_id from /proc/cpuinfo (GenuineIntel, AuthenticAMD, ...), '' if unknown. */
  cpuVendor: string;
  kvmModules: string[];
  auto: BackendName;
  reason: string;
  /** Caveats worth printing (e.g. Intel VMX is not exercised by our tests). */
  notes: string[];
}

/** kvm* modules, from /proc/modules or (where that is absent, e.g. in containers) /sys/module. */
function loadedKvmModules(): string[] {
  const found = new Set<string>();
  try {
    for (const line of fs.readFileSync('/proc/modules', 'utf8').split('\n')) {
      const name = line.split(' ')[0];
      if (name?.startsWith('kvm')) found.add(name);
    }
  } catch {
    // no /proc/modules: /sys/module below still answers
  }
  try {
    for (const name of fs.readdirSync('/sys/module')) if (name.startsWith('kvm')) found.add(name);
  } catch {
    // no sysfs: nothing more to learn
  }
  return [...found].sort();
}

function cpuInfo(): { flags: string[]; vendor: string } {
  try {
    const lines = fs.readFileSync('/proc/cpuinfo', 'utf8').split('\n');
    const flagLine = lines.find((l) => l.startsWith('flags'));
    const flags = new Set((flagLine ?? '').split(':')[1]?.trim().split(/\s+/) ?? []);
    const vendor = lines.find((l) => l.startsWith('vendor_id'))?.split(':')[1]?.trim() ?? '';
    return { flags: ['vmx', 'svm'].filter((f) => flags.has(f)), vendor };
  } catch {
    return { flags: [], vendor: '' };
  }
}

/** The Intel caveat: our KVM path's Intel-only set-up runs in neither test environment. */
export const INTEL_VMX_NOTE =
  'Intel VMX is not exercised by smolvm\'s tests: the KVM lab emulates AMD SVM and PVM hosts have neither; ' +
  'the Intel-only set-up (KVM_SET_TSS_ADDR, identity map) is untested here';

/** kvm backend availability is decided by the caller (the native VMM may not be built). */
export function probeHost(kvmBackendAvailable: boolean): HostProbe {
  const devKvm = fs.existsSync('/dev/kvm');
  const kvmModules = loadedKvmModules();
  const { flags: cpuVirtFlags, vendor: cpuVendor } = cpuInfo();
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
  const notes: string[] = [];
  if (cpuVendor === 'GenuineIntel' || cpuVirtFlags.includes('vmx')) notes.push(INTEL_VMX_NOTE);
  return { kind, devKvm, cpuVirtFlags, cpuVendor, kvmModules, auto, reason, notes };
}
