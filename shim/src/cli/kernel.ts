// `smolvm kernel build|path`: provision the guest kernel into the cache.
import { cachedKernel, ensureKernel } from '../../../rootfs-builder/kernel/build';
import { smolvmPaths } from '../config/paths';

export async function kernelCommand(argv: string[]): Promise<number> {
  const [sub, ...flags] = argv;
  const { cacheDir } = smolvmPaths();
  if (sub === 'path') {
    const k = cachedKernel(cacheDir);
    if (!k) {
      process.stderr.write(`no guest kernel built in ${cacheDir}: run \`smolvm kernel build\`\n`);
      return 1;
    }
    process.stdout.write(k.vmlinux + '\n');
    return 0;
  }
  if (sub !== 'build') {
    process.stderr.write('usage: smolvm kernel build [--force] | smolvm kernel path\n');
    return 2;
  }
  const started = Date.now();
  const k = await ensureKernel({
    cacheDir,
    force: flags.includes('--force'),
    onProgress: (line) => process.stderr.write(`kernel: ${line}\n`),
  });
  process.stderr.write(`kernel: ${k.release} ready in ${((Date.now() - started) / 1000).toFixed(1)}s\n`);
  process.stdout.write(k.vmlinux + '\n');
  return 0;
}
