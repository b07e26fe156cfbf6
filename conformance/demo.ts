// The README's first command ends here: a private containerd 1.6, a busybox image built from
// Debian's busybox-static, and one `ctr run --runtime io.containerd.smolvm.v1` in a microVM.
import * as os from 'node:os';
import { PrivateContainerd } from './harness/containerd';
import { busyboxImage, importImage } from './harness/image';
import { repoRoot, SMOLVM_RUNTIME } from './harness/suite';

async function main(): Promise<number> {
  const containerd = await PrivateContainerd.start({ repoRoot: repoRoot(), namespace: 'smolvm-demo', logLevel: 'info' });
  try {
    const image = busyboxImage();
    await importImage(containerd, image);
    const args = ['run', '--rm', '--runtime', SMOLVM_RUNTIME, image.ref, `demo-${process.pid}`,
      'sh', '-c', 'echo "hello from a microVM: $(uname -sr) (host: HOST)"; echo "guest cpu: $(grep -m1 "model name" /proc/cpuinfo)"']
      .map((a) => a.replace('HOST', os.release()));
    process.stdout.write(`$ ctr ${args.join(' ')}\n`);
    const started = Date.now();
    const result = await containerd.ctr(args, { timeoutMs: 120_000 });
    process.stdout.write(result.stdout.toString());
    process.stderr.write(result.stderr.toString());
    process.stdout.write(`(exit ${result.exitCode}, ${Date.now() - started} ms)\n`);
    return result.exitCode ?? 1;
  } catch (err) {
    process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\ncontainerd log:\n${containerd.logTail(40)}\n`);
    return 1;
  } finally {
    await containerd.stop();
  }
}

main().then((code) => { process.exitCode = code; }, (err: unknown) => {
  process.stderr.write(`demo failed: ${String(err)}\n`);
  process.exitCode = 1;
});
