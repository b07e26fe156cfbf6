// What this host's /dev/kvm offers, asked of KVM itself through the addon (off the event
// loop): API version, capabilities, and whether it refuses the calls a stock kernel's boot
// depends on (a kvm_pvm KVM refuses KVM_GET_SUPPORTED_CPUID and the MSR list).
import { loadVmmAddon } from './addon';

export interface KvmProbe {
  devKvm: boolean;
  /** Why /dev/kvm could not be opened, when it could not. */
  openError: string | null;
  apiVersion: number | null;
  /** CPUID vendor string of the host, e.g. GenuineIntel / AuthenticAMD. */
  vendor: string;
  /** /dev/kvm comes from the kvm_pvm module. */
  pvm: boolean;
  /** KVM_CHECK_EXTENSION results by name (irqchip, pit2, irqfd, maxVcpus, ...). */
  capabilities: Record<string, number>;
  supportedCpuidEntries: number | null;
  cpuidError: string | null;
  msrIndexCount: number | null;
  msrIndexError: string | null;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

const numberOrNull = (value: unknown): number | null => (typeof value === 'number' ? value : null);
const stringOrNull = (value: unknown): string | null => (typeof value === 'string' ? value : null);

export async function probeKvm(): Promise<KvmProbe> {
  const raw = await loadVmmAddon().probeHost();
  if (!isRecord(raw)) throw new Error('the VMM addon returned a malformed host probe');
  const capabilities: Record<string, number> = {};
  if (isRecord(raw.capabilities)) {
    for (const [name, value] of Object.entries(raw.capabilities)) if (typeof value === 'number') capabilities[name] = value;
  }
  return {
    devKvm: raw.devKvm === true,
    openError: stringOrNull(raw.openError),
    apiVersion: numberOrNull(raw.apiVersion),
    vendor: stringOrNull(raw.vendor) ?? '',
    pvm: raw.pvm === true,
    capabilities,
    supportedCpuidEntries: numberOrNull(raw.supportedCpuidEntries),
    cpuidError: stringOrNull(raw.cpuidError),
    msrIndexCount: numberOrNull(raw.msrIndexCount),
    msrIndexError: stringOrNull(raw.msrIndexError),
  };
}
