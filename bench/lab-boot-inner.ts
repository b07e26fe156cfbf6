// Runs INSIDE the KVM lab (bench/lab-boot.ts starts it there): boots the same guest kernel and
// initramfs alternately under our VMM (smolvm-vmm) and under `qemu-system-x86_64 -enable-kvm
// -M microvm,acpi=off`, and times each from process spawn to the guest init's first line.
//   node dist/bench/lab-boot-inner.js KERNEL INITRAMFS RUNS
import { spawn } from 'node:child_process';
import type { Readable } from 'node:stream';
import { L2_INIT_MARKER } from '../lab/tools';
import { VmmProcess } from '../test/guests/vmm-harness';

const CMDLINE = 'console=ttyS0 panic=-1 reboot=t quiet';
// Our VMM has an i8042 (for the reset line) where QEMU's microvm has none: tell Linux not to
// probe its AUX port and PnP, as Firecracker does (see the kvm backend's kernel args).
const VMM_EXTRA_ARGS = 'i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd';

function waitForMarker(stream: Readable, started: number, what: string, timeoutMs: number): Promise<number> {
  return new Promise((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error(`${what}: no init line within ${timeoutMs} ms:\n${text.slice(-2000)}`)), timeoutMs);
    stream.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (text.includes(L2_INIT_MARKER)) {
        clearTimeout(timer);
        resolve(Date.now() - started);
      }
    });
  });
}

async function bootQemu(kernel: string, initramfs: string): Promise<number> {
  const started = Date.now();
  const child = spawn('qemu-system-x86_64', ['-enable-kvm', '-cpu', 'host', '-M', 'microvm,acpi=off', '-m', '256', '-smp', '1',
    '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot', '-kernel', kernel, '-initrd', initramfs,
    '-append', CMDLINE, '-serial', 'stdio'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise((r) => child.once('exit', r));
  try {
    return await waitForMarker(child.stdout!, started, 'qemu', 60_000);
  } finally {
    child.kill('SIGKILL');
    await exited;
  }
}

async function bootVmm(kernel: string, initramfs: string): Promise<number> {
  const started = Date.now();
  const vmm = new VmmProcess();
  try {
    const configured = await vmm.request('configure', { config: {
      memory_mib: 256, vcpus: 1, kernel: { path: kernel }, initramfs: { path: initramfs }, cmdline: `${CMDLINE} ${VMM_EXTRA_ARGS}`,
      serial: { inherited_fd: 4 },
    } });
    if (!configured.ok) throw new Error(`smolvm-vmm configure: ${JSON.stringify(configured)}`);
    await vmm.request('start');
    await vmm.serialContains(L2_INIT_MARKER, 60_000);
    return Date.now() - started;
  } catch (err) {
    throw new Error(`smolvm-vmm: ${(err as Error).message}\nserial:\n${vmm.serialText.slice(-2000)}\nstderr:\n${vmm.stderr.slice(-2000)}`);
  } finally {
    vmm.kill();
    await vmm.exited(5000).catch(() => null);
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  const [kernel, initramfs, runsArg] = process.argv.slice(2);
  const runs = Number(runsArg ?? '5');
  if (!kernel || !initramfs || !Number.isInteger(runs) || runs < 1) {
    throw new Error('usage: lab-boot-inner.js KERNEL INITRAMFS RUNS');
  }
  // One warm-up each (pages QEMU, node and the kernel in over 9p), then interleaved runs.
  await bootQemu(kernel, initramfs);
  await bootVmm(kernel, initramfs);
  const qemu: number[] = [];
  const vmm: number[] = [];
  for (let i = 0; i < runs; i++) {
    const order = i % 2 === 0 ? ['vmm', 'qemu'] : ['qemu', 'vmm'];
    for (const which of order) {
      if (which === 'vmm') vmm.push(await bootVmm(kernel, initramfs));
      else qemu.push(await bootQemu(kernel, initramfs));
    }
  }
  process.stdout.write(`${JSON.stringify({ qemu, vmm, qemuMedian: median(qemu), vmmMedian: median(vmm) })}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`lab-boot-inner: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
