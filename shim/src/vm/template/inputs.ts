// The template inputs of a VM about to start: what its boot would be made of. Used both by a
// Create (to find a template) and by the builder (to make one), so both agree on the key.
import * as fs from 'node:fs';
import type { Backend, VmConfig } from '../backend';
import { QEMU_BINARY } from '../backends/tcg';
import { probeHost } from '../host';
import { vmmBuildStatus } from '../vmm/locate';
import { fileSha256, programVersion, sha256Hex, TEMPLATE_FORMAT, templateKey, type SlotShape, type TemplateInputs } from './key';
import { tcgMachine } from './tcg';

/** What a VM's boot is made of, minus the files behind its slots. */
export interface VmShape {
  kernel: string;
  initramfs: string;
  cmdline: string;
  memoryMiB: number;
  vcpus: number;
  slots: SlotShape[];
  /** A pod VM with the backend's disk hotplug controller (VmConfig.diskHotplug). */
  diskHotplug?: boolean;
}

export function shapeOf(config: VmConfig): VmShape {
  return {
    kernel: config.kernel, initramfs: config.initramfs, cmdline: config.cmdline,
    memoryMiB: config.memoryMiB, vcpus: config.vcpus,
    slots: config.slots.map((s) => ({ serial: s.serial, readOnly: s.readOnly })),
    ...(config.diskHotplug ? { diskHotplug: true } : {}),
  };
}

/** Why this backend has no templates (yet), or null when it has. */
export function templatesUnsupported(backend: Backend): string | null {
  if (!backend.restoresState) return `the ${backend.name} backend cannot restore a saved VM yet`;
  return null;
}

/** How backends/kvm.ts configures smolvm-vmm (a change there must bump this). */
const KVM_MACHINE = 'smolvm-vmm configure v1: vsock cid 3, serial console, virtio-blk slots in order';

let cpuSignatureMemo: string | undefined;

/** The host CPU as the guest's CPUID derives from it: vendor, family, model, flags. smolvm-vmm
 *  itself refuses a snapshot from another CPUID; this keeps such a template from being found. */
function cpuSignature(): string {
  if (cpuSignatureMemo === undefined) {
    const first = fs.readFileSync('/proc/cpuinfo', 'utf8').split('\n\n')[0] ?? '';
    const wanted = /^(vendor_id|cpu family|model|model name|stepping|microcode|flags)\s*:/;
    const lines = first.split('\n').filter((line) => wanted.test(line)).map((line) => line.replace(/\s+/g, ' '));
    cpuSignatureMemo = sha256Hex(lines.join('\n')).slice(0, 16);
  }
  return cpuSignatureMemo;
}

/** What the saved state depends on besides the guest: the VMM, its machine, the host. */
async function vmmIdentity(backend: Backend, shape: VmShape, memoDir: string): Promise<{ vmm: string; machine: string; host: string }> {
  if (backend.name === 'tcg') {
    return {
      vmm: await programVersion(QEMU_BINARY, memoDir),
      machine: tcgMachine(shape.memoryMiB, shape.vcpus, shape.slots, shape.diskHotplug === true),
      // TCG emulates its CPU: the saved state does not depend on the host's.
      host: 'tcg-any',
    };
  }
  const build = vmmBuildStatus();
  if (build.problem) throw new Error(`kvm templates: ${build.problem}`);
  return {
    vmm: `smolvm-vmm sha256:${await fileSha256(build.artifacts.binary, memoDir)}`,
    machine: KVM_MACHINE,
    // Never across host kinds (PVM vs hardware), nor across CPUs.
    host: `${probeHost(true).kind}:${cpuSignature()}`,
  };
}

export async function templateInputs(backend: Backend, shape: VmShape, memoDir: string): Promise<{ key: string; inputs: TemplateInputs }> {
  const unsupported = templatesUnsupported(backend);
  if (unsupported) throw new Error(unsupported);
  const [kernelSha256, initramfsSha256, identity] = await Promise.all([
    fileSha256(shape.kernel, memoDir),
    fileSha256(shape.initramfs, memoDir),
    vmmIdentity(backend, shape, memoDir),
  ]);
  const inputs: TemplateInputs = {
    format: TEMPLATE_FORMAT,
    backend: backend.name,
    kernelSha256,
    initramfsSha256,
    cmdline: shape.cmdline,
    memoryMiB: shape.memoryMiB,
    vcpus: shape.vcpus,
    slots: shape.slots,
    ...(shape.diskHotplug ? { diskHotplug: true } : {}),
    ...identity,
  };
  return { key: templateKey(inputs), inputs };
}
