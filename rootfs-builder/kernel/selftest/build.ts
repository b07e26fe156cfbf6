// Builds the guest kernel self-test (guest-selftest.c) as a static musl binary.
// Debian's musl-gcc ships no kernel headers: we give it an include dir holding only links to the
// host's linux/, asm/ and asm-generic/ headers (glibc's own headers must stay out of the way).
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { builderPath } from '../../source-tree';

const execFileAsync = promisify(execFile);

const KERNEL_HEADER_LINKS: ReadonlyArray<readonly [name: string, target: string]> = [
  ['linux', '/usr/include/linux'],
  ['asm', '/usr/include/x86_64-linux-gnu/asm'],
  ['asm-generic', '/usr/include/asm-generic'],
];

export function selftestSourcePath(): string {
  return builderPath('kernel', 'selftest', 'guest-selftest.c');
}

/** Compiles the self-test into `<buildDir>/guest-selftest` and returns that path. */
export async function buildGuestSelftest(buildDir: string): Promise<string> {
  for (const [, target] of KERNEL_HEADER_LINKS) {
    if (!fs.existsSync(target)) {
      throw new Error(`selftest: kernel headers missing at ${target} (apt-get install linux-libc-dev)`);
    }
  }
  const includeDir = path.join(buildDir, 'musl-kernel-headers');
  fs.mkdirSync(includeDir, { recursive: true });
  for (const [name, target] of KERNEL_HEADER_LINKS) {
    const link = path.join(includeDir, name);
    fs.rmSync(link, { force: true });
    fs.symlinkSync(target, link);
  }
  const output = path.join(buildDir, 'guest-selftest');
  const args = ['-static', '-Os', '-s', '-std=gnu11', '-Wall', '-Wextra', '-Werror',
    '-isystem', includeDir, '-o', output, selftestSourcePath()];
  try {
    await execFileAsync('musl-gcc', args, { timeout: 120_000 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new Error('selftest: musl-gcc not found (apt-get install musl-tools)');
    throw new Error(`selftest: musl-gcc failed: ${e.stderr?.trim() || e.message}`);
  }
  return output;
}
