// Things the lab tests run inside the L1 VM, built on the host (the L1 VM sees the host's `/`):
// - kvm-probe (lab/kvm-probe.c): a tiny real-mode guest driven through /dev/kvm;
// - the L2 initramfs: busybox as /init printing a marker, to time our guest kernel booting
//   under QEMU -enable-kvm inside the lab (lab/l2-boot.sh).
// Both are cached under <cacheDir>/lab/tools/ by the hash of their inputs.
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';

import { repoRoot } from '../shim/src/config/paths';
import { writeCpio } from '../rootfs-builder/initramfs/cpio';
import { contentKey } from './kernel';

const execFileAsync = promisify(execFile);

/** The line the L2 init prints once it runs (lab/l2-boot.sh times the boot up to it). */
export const L2_INIT_MARKER = 'smolvm-l2: init reached';

/** Source files live in lab/ of the repository (dist/lab/*.js is two levels below it). */
export function labSourceDir(): string {
  return path.join(repoRoot(), 'lab');
}

async function publish(target: string, write: (temp: string) => Promise<void>): Promise<string> {
  if (fs.existsSync(target)) return target;
  await fs.promises.mkdir(path.dirname(target), { recursive: true });
  const temp = `${target}.${process.pid}.tmp`;
  try {
    await write(temp);
    await fs.promises.rename(temp, target);
  } finally {
    await fs.promises.rm(temp, { force: true });
  }
  return target;
}

/** musl-gcc ships no kernel headers: an include dir of links to just the ones we need. */
async function kernelHeaderDir(parent: string): Promise<string> {
  const dir = path.join(parent, 'include');
  await fs.promises.mkdir(dir);
  const links: Array<[string, string]> = [
    ['linux', '/usr/include/linux'],
    ['asm', '/usr/include/x86_64-linux-gnu/asm'],
    ['asm-generic', '/usr/include/asm-generic'],
  ];
  for (const [name, target] of links) {
    if (!fs.existsSync(target)) throw new Error(`lab: ${target} is missing (apt-get install linux-libc-dev)`);
    await fs.promises.symlink(target, path.join(dir, name));
  }
  return dir;
}

/** Builds lab/kvm-probe.c (static, musl) once; returns the binary's path. */
export async function ensureKvmProbe(cacheDir: string): Promise<string> {
  const source = path.join(labSourceDir(), 'kvm-probe.c');
  const code = await fs.promises.readFile(source).catch((err: Error) => {
    throw new Error(`lab: cannot read ${source}: ${err.message}`);
  });
  const target = path.join(cacheDir, 'lab', 'tools', `kvm-probe-${contentKey(code)}`);
  return publish(target, async (temp) => {
    const work = await fs.promises.mkdtemp(path.join(os.tmpdir(), 'smolvm-lab-cc-'));
    try {
      const include = await kernelHeaderDir(work);
      await execFileAsync('musl-gcc', ['-std=gnu11', '-O2', '-Wall', '-Wextra', '-Werror', '-static',
        '-isystem', include, '-o', temp, source]);
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { stderr?: string };
      if (e.code === 'ENOENT') throw new Error('lab: musl-gcc is not installed (apt-get install musl-tools)');
      throw new Error(`lab: building ${source} failed: ${(e.stderr ?? e.message).trim()}`);
    } finally {
      await fs.promises.rm(work, { recursive: true, force: true });
    }
  });
}

/** PID 1 of the L2 guest: print the marker with the guest's uptime, then reboot (QEMU exits). */
function l2InitScript(): string {
  return `#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
read -r uptime rest < /proc/uptime
echo "${L2_INIT_MARKER}: kernel $(/bin/busybox uname -r), guest uptime $uptime s"
/bin/busybox reboot -f
/bin/busybox sleep 5
`;
}

/** An initramfs for the L2 guest (our smolvm guest kernel): busybox + the marker init. */
export async function ensureL2Initramfs(cacheDir: string): Promise<string> {
  const busybox = await fs.promises.readFile('/bin/busybox').catch((err: Error) => {
    throw new Error(`lab: cannot read /bin/busybox (apt-get install busybox-static): ${err.message}`);
  });
  const archive = writeCpio([
    { kind: 'dir', path: 'bin' },
    { kind: 'dir', path: 'dev' },
    { kind: 'dir', path: 'proc' },
    { kind: 'chardev', path: 'dev/console', major: 5, minor: 1, mode: 0o600 },
    { kind: 'file', path: 'bin/busybox', data: busybox, mode: 0o755 },
    { kind: 'file', path: 'init', data: Buffer.from(l2InitScript()), mode: 0o755 },
  ]);
  const target = path.join(cacheDir, 'lab', 'tools', `l2-initramfs-${contentKey(archive)}.cpio`);
  return publish(target, (temp) => fs.promises.writeFile(temp, archive, { mode: 0o644 }));
}

/** Our guest kernel (`smolvm kernel build`), newest first; undefined when none is built. */
export function findGuestKernel(cacheDir: string): string | undefined {
  const dir = path.join(cacheDir, 'kernels');
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return undefined;
  }
  const kernels = names
    .map((n) => path.join(dir, n, 'vmlinux'))
    .filter((f) => fs.existsSync(f))
    .sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs);
  return kernels[0];
}
