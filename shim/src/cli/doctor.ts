// `smolvm doctor [--json]`: what this host can do and which backend `auto` picks, and why:
// the host kind (hardware, pvm, none), what KVM itself says (through the VMM addon, when it
// is built), whether smolvm-vmm and the addon are built, QEMU, the guest kernel, containerd.
import { execFileSync } from 'node:child_process';
import { cachedKernel } from '../../../rootfs-builder/kernel/build';
import { smolvmPaths } from '../config/paths';
import { probeHost } from '../vm/host';
import { probeKvm, type KvmProbe } from '../vm/vmm/probe';
import { vmmBuildStatus } from '../vm/vmm/locate';

function versionOf(cmd: string, args: string[]): string | null {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).split('\n')[0]!.trim();
  } catch {
    return null;
  }
}

async function kvmDetails(addonBuilt: boolean): Promise<KvmProbe | { error: string }> {
  if (!addonBuilt) return { error: 'the VMM addon is not built' };
  try {
    return await probeKvm();
  } catch (err) {
    return { error: err instanceof Error ? err.message : String(err) };
  }
}

export async function doctor(json: boolean): Promise<number> {
  const build = vmmBuildStatus();
  const probe = probeHost(build.problem === '');
  const paths = smolvmPaths();
  const kernel = cachedKernel(paths.cacheDir) ?? cachedKernel('/var/lib/smolvm');
  const kvm = await kvmDetails(build.addonBuilt);
  const qemu = versionOf('qemu-system-x86_64', ['--version']);
  const kvmUsable = build.problem === '' && probe.kind === 'hardware';
  let kvmNote = '';
  if (build.problem) kvmNote = build.problem;
  else if (probe.kind === 'pvm') kvmNote = 'this /dev/kvm (kvm_pvm) cannot boot the stock guest kernel; tiny test guests only';
  else if (probe.kind === 'none') kvmNote = probe.reason;
  const report = {
    host: {
      kind: probe.kind, devKvm: probe.devKvm, cpuVendor: probe.cpuVendor,
      cpuVirtFlags: probe.cpuVirtFlags, kvmModules: probe.kvmModules,
    },
    kvm,
    backends: {
      kvm: {
        available: kvmUsable,
        vmmBinary: { path: build.artifacts.binary, built: build.binaryBuilt },
        addon: { path: build.artifacts.addon, built: build.addonBuilt },
        note: kvmNote,
      },
      tcg: { available: qemu !== null, qemu },
    },
    auto: { backend: probe.auto, reason: probe.reason },
    notes: probe.notes,
    kernel: kernel ? { path: kernel.vmlinux, release: kernel.release } : null,
    containerd: versionOf('containerd', ['--version']),
    paths,
  };
  if (json) {
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
    return 0;
  }
  const kvmLine = 'error' in kvm
    ? `(${kvm.error})`
    : `api ${kvm.apiVersion ?? '?'}, ${kvm.vendor}${kvm.pvm ? ', kvm_pvm' : ''}` +
      `${kvm.cpuidError ? `, refuses ${kvm.cpuidError.split(':')[0]}` : `, ${kvm.supportedCpuidEntries ?? '?'} CPUID entries`}` +
      `${kvm.msrIndexError ? `, refuses ${kvm.msrIndexError.split(':')[0]}` : ''}`;
  const lines = [
    `host:        ${probe.kind}${probe.devKvm ? ' (/dev/kvm present)' : ''}${probe.kvmModules.length ? ` modules: ${probe.kvmModules.join(',')}` : ''}${probe.cpuVendor ? ` cpu: ${probe.cpuVendor}` : ''}`,
    `/dev/kvm:    ${probe.devKvm ? kvmLine : 'absent'}`,
    `auto picks:  ${probe.auto} — ${probe.reason}`,
    `kvm:         ${kvmUsable ? 'available' : `unavailable (${kvmNote || `host is ${probe.kind}`})`}`,
    `  vmm:       ${build.binaryBuilt ? build.artifacts.binary : 'not built (npm run build:vmm)'}`,
    `  addon:     ${build.addonBuilt ? build.artifacts.addon : 'not built (npm install, or bash native-vmm/src/addon/build.sh)'}`,
    `tcg:         ${qemu ?? 'qemu-system-x86_64 missing (apt-get install qemu-system-x86)'}`,
    `kernel:      ${kernel ? `${kernel.release} ${kernel.vmlinux}` : 'not built (smolvm kernel build)'}`,
    `containerd:  ${report.containerd ?? 'not installed'}`,
    `state:       ${paths.stateDir}`,
    `cache:       ${paths.cacheDir}`,
    ...probe.notes.map((note) => `note:        ${note}`),
  ];
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}
