// Restore-to-ready vs cold boot for the same guest, side by side in one run: the same kernel,
// initramfs, memory, vcpus and slots (a busybox image and a fresh writable disk per VM), timed
// from "start this VM" to "its agent answered" (for a restore: handshake + reseed + capacity
// refresh done). Runs are interleaved, the order flipped every round, so drift on a shared
// machine hits both alike. Prints medians, min/max and the cold/restore ratio.
//
// usage: node dist/bench/restore.js [--n 7] [--backend tcg|kvm] [--memory 256] [--json]
// (kvm: in the KVM lab, where only the ratio means something)
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createWritableDisk, ensureImage } from '../shim/src/image';
import type { Paths } from '../shim/src/config/paths';
import { nullLogger } from '../shim/src/log';
import type { Backend } from '../shim/src/vm/backend';
import { KvmBackend } from '../shim/src/vm/backends/kvm';
import { TcgBackend } from '../shim/src/vm/backends/tcg';
import { VmBuilder } from '../shim/src/vm/builder';
import { containerVmShape } from '../shim/src/vm/shape';
import { buildTemplate, TemplateStore } from '../shim/src/vm/template';
import { makeBusyboxRootfs } from '../test/helpers/rootfs';

interface Options {
  n: number;
  backend: 'tcg' | 'kvm';
  memoryMiB: number;
  json: boolean;
}

function parseArgs(argv: readonly string[]): Options {
  const opts: Options = { n: 7, backend: 'tcg', memoryMiB: 256, json: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = (): string => {
      const next = argv[++i];
      if (next === undefined) throw new Error(`${arg} needs a value`);
      return next;
    };
    if (arg === '--n') opts.n = Number(value());
    else if (arg === '--memory') opts.memoryMiB = Number(value());
    else if (arg === '--backend') {
      const b = value();
      if (b !== 'tcg' && b !== 'kvm') throw new Error(`--backend ${b}: tcg or kvm`);
      opts.backend = b;
    } else if (arg === '--json') opts.json = true;
    else throw new Error(`unknown argument ${arg}`);
  }
  if (!Number.isInteger(opts.n) || opts.n < 1) throw new Error('--n must be a positive integer');
  if (!Number.isInteger(opts.memoryMiB) || opts.memoryMiB < 64) throw new Error('--memory must be an integer >= 64 (MiB)');
  return opts;
}

/** Apparent size of a template's files (kvm: state + memory.bin; tcg: the migration stream). */
function templateBytes(paths: Paths, key: string): number {
  const dir = new TemplateStore(paths.cacheDir).dirOf(key);
  return fs.readdirSync(dir).reduce((sum, name) => sum + fs.statSync(path.join(dir, name)).size, 0);
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
};

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-bench-restore-'));
  const paths: Paths = { stateDir: path.join(work, 'run'), cacheDir: path.join(work, 'lib') };
  const backend: Backend = opts.backend === 'kvm' ? new KvmBackend() : new TcgBackend();
  try {
    const rootfs = makeBusyboxRootfs(work);
    const image = await ensureImage({ kind: 'dir', path: rootfs }, { cacheDir: paths.cacheDir });
    const shape = containerVmShape(backend, opts.memoryMiB, 1);
    const builderWith = (templates: boolean): VmBuilder => new VmBuilder({ backend, paths, templates });
    const buildStarted = Date.now();
    const built = await buildTemplate({ backend, paths, shape, guest: await builderWith(true).guest(), log: nullLogger });
    const buildMs = Date.now() - buildStarted;

    const runOnce = async (templates: boolean): Promise<number> => {
      const started = process.hrtime.bigint();
      const vm = await builderWith(templates).start({
        shape, log: nullLogger,
        slotFiles: async (dirs) => {
          const writable = path.join(dirs.dataDir, 'writable.ext4');
          await createWritableDisk(writable, 1024 * 1024 * 1024, { cacheDir: paths.cacheDir });
          return [image.path, writable];
        },
      });
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      if ((vm.restoredFrom !== null) !== templates) throw new Error(`expected a ${templates ? 'restore' : 'cold boot'}, got the other`);
      await vm.destroy();
      return ms;
    };
    // Warm-up (page cache, memo files), not counted.
    await runOnce(false);
    await runOnce(true);
    const cold: number[] = [];
    const restored: number[] = [];
    for (let round = 0; round < opts.n; round++) {
      const order = round % 2 === 0 ? [false, true] : [true, false];
      for (const templates of order) (templates ? restored : cold).push(await runOnce(templates));
    }
    const result = {
      backend: opts.backend, memoryMiB: opts.memoryMiB, rounds: opts.n,
      template: { key: built.key, buildMs, bytes: templateBytes(paths, built.key) },
      coldBoot: { medianMs: median(cold), minMs: Math.min(...cold), maxMs: Math.max(...cold) },
      restore: { medianMs: median(restored), minMs: Math.min(...restored), maxMs: Math.max(...restored) },
      ratio: median(cold) / median(restored),
    };
    if (opts.json) {
      console.log(JSON.stringify(result));
    } else {
      const row = (name: string, s: { medianMs: number; minMs: number; maxMs: number }): string =>
        `${name.padEnd(22)} median ${s.medianMs.toFixed(1).padStart(7)} ms   min ${s.minMs.toFixed(1).padStart(7)}   max ${s.maxMs.toFixed(1).padStart(7)}`;
      console.log(`restore-to-ready vs cold boot, ${opts.backend}, ${opts.memoryMiB} MiB, 1 vcpu, ${opts.n} rounds`);
      console.log(`template ${built.key}: built in ${buildMs} ms, ${(result.template.bytes / 2 ** 20).toFixed(1)} MiB on disk (apparent)`);
      console.log(row('cold boot', result.coldBoot));
      console.log(row('restore from template', result.restore));
      console.log(`ratio cold/restore: ${result.ratio.toFixed(2)}x`);
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
