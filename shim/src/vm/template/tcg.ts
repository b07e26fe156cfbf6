// The tcg backend's part of templates: what the QEMU machine is (for the key) and saving a
// stopped VM's state to a file with QEMU's migration (`stop`, `migrate "exec:cat > FILE"`).
// Restoring is the backend's own `-incoming` (VmConfig.incomingState, backends/tcg.ts).
import type { VmConfig, Vmm } from '../backend';
import { qemuArgs } from '../backends/tcg';
import { QmpChannel, QmpError } from '../backends/qmp';
import { sha256Hex, type SlotShape } from './key';

/** Longest a migration to a file may take (it is ~0.2 s for 256 MiB here). */
const SAVE_TIMEOUT_MS = 120_000;
const SAVE_POLL_MS = 10;

/**
 * The QEMU machine of a VM with this memory, vcpus and slot layout, paths abstracted: any
 * change to the devices or options the backend passes (tcg.ts) changes the template key.
 */
export function tcgMachine(memoryMiB: number, vcpus: number, slots: readonly SlotShape[], diskHotplug = false): string {
  const config: VmConfig = {
    vmId: 'template', dir: '/T', dataDir: '/D', kernel: '/K', initramfs: '/I', cmdline: '', memoryMiB, vcpus,
    slots: slots.map((s, i) => ({ serial: s.serial, readOnly: s.readOnly, path: `/T/slot${i}` })),
    ...(diskHotplug ? { diskHotplug: true } : {}),
  };
  return sha256Hex(JSON.stringify(qemuArgs(config, '/T/agent'))).slice(0, 24);
}

/** exec: runs through /bin/sh: the path goes in single quotes, so it must hold none. */
function shellQuoted(file: string): string {
  if (file.includes("'")) throw new Error(`template state file ${JSON.stringify(file)}: a quote in the path`);
  return `'${file}'`;
}

/**
 * Stops the VM and writes its whole state (devices, CPU, RAM) to `file`; the VM stays stopped
 * (the caller kills it). Rejects naming QEMU's error when the migration fails.
 */
export async function saveTcgState(vm: Vmm, file: string): Promise<void> {
  const socket = vm.sockets.qmp;
  if (!socket) throw new Error('tcg VM has no QMP socket');
  const qmp = new QmpChannel(socket);
  await qmp.stop();
  await qmp.execute('migrate', { uri: `exec:cat > ${shellQuoted(file)}` });
  const deadline = Date.now() + SAVE_TIMEOUT_MS;
  for (;;) {
    const info = (await qmp.execute('query-migrate')) as { status?: unknown; 'error-desc'?: unknown } | null;
    const status = typeof info?.status === 'string' ? info.status : '';
    if (status === 'completed') return;
    if (status === 'failed' || status === 'cancelled') {
      const desc = typeof info?.['error-desc'] === 'string' ? `: ${info['error-desc']}` : '';
      throw new QmpError(`saving the VM state to ${file} ${status}${desc}`);
    }
    if (Date.now() > deadline) throw new QmpError(`saving the VM state to ${file}: not done after ${SAVE_TIMEOUT_MS} ms (status ${status || 'unknown'})`);
    await new Promise((resolve) => setTimeout(resolve, SAVE_POLL_MS));
  }
}
