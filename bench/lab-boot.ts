// Boot-to-init of the same kernel and init in the KVM lab: our VMM (smolvm-vmm) against
// `qemu-system-x86_64 -M microvm -enable-kvm`, interleaved in one L1 VM. The lab's absolute
// times mean nothing (KVM nested under TCG); the ratio is the number.
//   node dist/bench/lab-boot.js [--runs N]
import * as path from 'node:path';
import { smolvmPaths } from '../shim/src/config/paths';
import { runInLab } from '../lab/lab';
import { ensureL2Initramfs, findGuestKernel } from '../lab/tools';

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  let runs = 5;
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--runs') runs = Number(args[++i]);
    else throw new Error(`unknown argument ${args[i]} (usage: lab-boot.js [--runs N])`);
  }
  if (!Number.isInteger(runs) || runs < 1 || runs > 30) throw new Error('--runs must be 1..30');
  const cacheDir = smolvmPaths().cacheDir;
  const kernel = findGuestKernel(cacheDir);
  if (!kernel) throw new Error('no guest kernel: run `smolvm kernel build`');
  const initramfs = await ensureL2Initramfs(cacheDir);
  const inner = path.join(__dirname, 'lab-boot-inner.js');
  const result = await runInLab([process.execPath, inner, kernel, initramfs, String(runs)], { timeoutMs: 600_000, cacheDir });
  if (result.exitCode !== 0) throw new Error(`lab run failed (${result.exitCode}):\n${result.stderr}\n${result.stdout}`);
  const line = result.stdout.trim().split('\n').pop() ?? '';
  const r = JSON.parse(line) as { qemu: number[]; vmm: number[]; qemuMedian: number; vmmMedian: number };
  process.stdout.write([
    `boot-to-init in the KVM lab (L2 under nested KVM; ${runs} interleaved runs each, after a warm-up):`,
    `  qemu -M microvm -enable-kvm: median ${r.qemuMedian} ms  runs ${r.qemu.join(' ')}`,
    `  smolvm-vmm (ours):           median ${r.vmmMedian} ms  runs ${r.vmm.join(' ')}`,
    `  ratio ours/qemu: ${(r.vmmMedian / r.qemuMedian).toFixed(2)}`,
  ].join('\n') + '\n');
  return 0;
}

main().then((code) => { process.exitCode = code; }, (err: unknown) => {
  process.stderr.write(`lab-boot: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
