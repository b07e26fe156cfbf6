// L2 boots in the lab: our guest kernel booted under `qemu-system-x86_64 -enable-kvm -M
// microvm,acpi=off` on the lab's /dev/kvm (lab/l2-boot.sh does the timing inside the L1 VM).
// This is the QEMU side of the bench "our VMM vs QEMU -enable-kvm", and the proof that the
// lab's KVM boots our kernel.
import * as path from 'node:path';

import { smolvmPaths } from '../shim/src/config/paths';
import { runInLab } from './lab';
import { ensureL2Initramfs, findGuestKernel, labSourceDir, L2_INIT_MARKER } from './tools';

export interface L2BootOptions {
  /** Boots in one L1 VM; the first is cold (QEMU paged in over 9p). Default 3. */
  runs?: number;
  /** Default: the newest <cacheDir>/kernels/<key>/vmlinux. */
  guestKernel?: string;
  cacheDir?: string;
  /** For the whole L1 run. Default 180 s. */
  timeoutMs?: number;
}

export interface L2BootResult {
  guestKernel: string;
  /** `uname -r` the L2 init printed. */
  guestRelease: string;
  /** Per run: QEMU spawn until the L2 init's first line, in ms (L1 wall clock). */
  initMs: number[];
  /** Per run: QEMU spawn until QEMU exited, in ms. */
  qemuExitMs: number[];
  /** The L1 boot that hosted the runs. */
  l1BootMs: number;
  /** Everything l2-boot.sh printed (the L2 consoles and its summary lines). */
  output: string;
}

/** Boots our guest kernel `runs` times under QEMU -enable-kvm inside one lab VM. */
export async function runL2QemuBoot(opts: L2BootOptions = {}): Promise<L2BootResult> {
  const runs = opts.runs ?? 3;
  if (!Number.isInteger(runs) || runs < 1 || runs > 20) throw new Error(`runL2QemuBoot: runs must be 1..20, got ${runs}`);
  const cacheDir = opts.cacheDir ?? smolvmPaths().cacheDir;
  const guestKernel = opts.guestKernel ?? findGuestKernel(cacheDir);
  if (!guestKernel) throw new Error(`runL2QemuBoot: no guest kernel under ${cacheDir}/kernels (run \`smolvm kernel build\`)`);
  const initramfs = await ensureL2Initramfs(cacheDir);
  const perBootLimitSeconds = 60;
  const result = await runInLab(
    [path.join(labSourceDir(), 'l2-boot.sh'), guestKernel, initramfs, String(perBootLimitSeconds), String(runs)],
    { timeoutMs: opts.timeoutMs ?? 180_000, cacheDir },
  );
  const output = result.stdout + result.stderr;
  if (result.exitCode !== 0) {
    throw new Error(`runL2QemuBoot: l2-boot.sh exited ${result.exitCode}:\n${output}`);
  }
  const summaries = [...result.stdout.matchAll(/^l2-boot: run \d+: init after (\d+) ms, qemu exited 0 after (\d+) ms$/gm)];
  const release = new RegExp(`${L2_INIT_MARKER}: kernel (\\S+),`).exec(result.stdout)?.[1];
  if (summaries.length !== runs || !release) throw new Error(`runL2QemuBoot: unexpected l2-boot.sh output:\n${output}`);
  return {
    guestKernel,
    guestRelease: release,
    initMs: summaries.map((m) => Number(m[1])),
    qemuExitMs: summaries.map((m) => Number(m[2])),
    l1BootMs: result.bootMs,
    output,
  };
}
