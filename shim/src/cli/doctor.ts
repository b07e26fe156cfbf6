// `smolvm doctor [--json]`: what this host can do and which backend `auto` picks, and why.
import { execFileSync } from 'node:child_process';
import { cachedKernel } from '../../../rootfs-builder/kernel/build';
import { smolvmPaths } from '../config/paths';
import { probeHost } from '../sandbox/host';
import { KVM_BACKEND_AVAILABLE } from '../sandbox/select';

function versionOf(cmd: string, args: string[]): string | null {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 }).split('\n')[0]!.trim();
  } catch {
    return null;
  }
}

export function doctor(json: boolean): number {
  const probe = probeHost(KVM_BACKEND_AVAILABLE);
  const paths = smolvmPaths();
  const kernel = cachedKernel(paths.cacheDir) ?? cachedKernel('/var/lib/smolvm');
  const report = {
    host: { kind: probe.kind, devKvm: probe.devKvm, cpuVirtFlags: probe.cpuVirtFlags, kvmModules: probe.kvmModules },
    backends: {
      kvm: { available: KVM_BACKEND_AVAILABLE && probe.kind === 'hardware', note: KVM_BACKEND_AVAILABLE ? '' : 'native VMM not built yet' },
      tcg: { available: versionOf('qemu-system-x86_64', ['--version']) !== null, qemu: versionOf('qemu-system-x86_64', ['--version']) },
    },
    auto: { backend: probe.auto, reason: probe.reason },
    kernel: kernel ? { path: kernel.vmlinux, release: kernel.release } : null,
    containerd: versionOf('containerd', ['--version']),
    paths,
  };
  if (json) {
    process.stdout.write(JSON.stringify(report, null, 2) + '\n');
  } else {
    const lines = [
      `host:        ${probe.kind}${probe.devKvm ? ' (/dev/kvm present)' : ''}${probe.kvmModules.length ? ` modules: ${probe.kvmModules.join(',')}` : ''}`,
      `auto picks:  ${probe.auto} — ${probe.reason}`,
      `tcg:         ${report.backends.tcg.qemu ?? 'qemu-system-x86_64 missing (apt-get install qemu-system-x86)'}`,
      `kvm:         ${report.backends.kvm.available ? 'available' : `unavailable (${report.backends.kvm.note || `host is ${probe.kind}`})`}`,
      `kernel:      ${kernel ? `${kernel.release} ${kernel.vmlinux}` : 'not built (smolvm kernel build)'}`,
      `containerd:  ${report.containerd ?? 'not installed'}`,
      `state:       ${paths.stateDir}`,
      `cache:       ${paths.cacheDir}`,
    ];
    process.stdout.write(lines.join('\n') + '\n');
  }
  return 0;
}
