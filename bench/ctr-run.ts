// `ctr run --rm IMAGE ID /bin/true`, wall time from spawning ctr to its exit, with runc and with
// smolvm side by side on one private containerd: a warm-up run each, then N runs each,
// interleaved (and the order flipped every round) so drift on a shared machine hits both alike.
// Prints median, p90, min, max per runtime and the smolvm/runc ratio. No target: honest numbers.
//
// usage: node dist/bench/ctr-run.js [--n 10] [--runtimes io.containerd.runc.v2,io.containerd.smolvm.v1]
//                                   [--json] [-- CMD…]
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PrivateContainerd } from '../conformance/harness/containerd';
import { RunResult, describeResult } from '../conformance/harness/exec';
import { busyboxImage, importImage } from '../conformance/harness/image';
import { waitForNoLeaks } from '../conformance/harness/leaks';
import { SMOLVM_RUNTIME, SMOLVM_SHIM_BINARY, repoRoot } from '../conformance/harness/suite';

const RUNC_RUNTIME = 'io.containerd.runc.v2';
const RUN_TIMEOUT_MS = 120_000;

interface BenchOptions {
  readonly n: number;
  readonly runtimes: readonly string[];
  readonly json: boolean;
  readonly command: readonly string[];
}

interface RuntimeStats {
  readonly runtime: string;
  readonly ok: number;
  readonly failed: number;
  readonly medianMs?: number;
  readonly p90Ms?: number;
  readonly minMs?: number;
  readonly maxMs?: number;
  readonly firstError?: string;
  readonly unavailable?: string;
}

function parseArgs(argv: readonly string[]): BenchOptions {
  let n = 10;
  let runtimes: string[] = [RUNC_RUNTIME, SMOLVM_RUNTIME];
  let json = false;
  let command: string[] = ['/bin/true'];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = (): string => {
      const next = argv[i + 1];
      if (next === undefined) throw new Error(`${arg} needs a value`);
      i += 1;
      return next;
    };
    if (arg === '--n') {
      const raw = value();
      n = Number(raw);
      if (!Number.isInteger(n) || n < 1 || n > 1000) throw new Error(`--n must be an integer from 1 to 1000, got "${raw}"`);
    } else if (arg === '--runtimes') {
      runtimes = value().split(',').map((r) => r.trim()).filter((r) => r.length > 0);
      if (runtimes.length === 0) throw new Error('--runtimes needs at least one runtime');
    } else if (arg === '--json') {
      json = true;
    } else if (arg === '--') {
      command = argv.slice(i + 1);
      if (command.length === 0) throw new Error('-- must be followed by a command');
      break;
    } else {
      throw new Error(`unknown argument "${arg}" (usage: [--n N] [--runtimes a,b] [--json] [-- CMD…])`);
    }
  }
  return { n, runtimes, json, command };
}

export function median(sorted: readonly number[]): number {
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}

/** Nearest-rank percentile of an ascending list. */
export function percentile(sorted: readonly number[], p: number): number {
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1] as number;
}

function summarize(runtime: string, samples: readonly number[], failures: readonly RunResult[], unavailable?: string): RuntimeStats {
  const sorted = [...samples].sort((a, b) => a - b);
  const base = {
    runtime,
    ok: sorted.length,
    failed: failures.length,
    firstError: failures[0] ? describeResult(failures[0], 400) : undefined,
    unavailable,
  };
  if (sorted.length === 0) return base;
  return {
    ...base,
    medianMs: median(sorted),
    p90Ms: percentile(sorted, 90),
    minMs: sorted[0],
    maxMs: sorted[sorted.length - 1],
  };
}

const fmt = (ms: number | undefined): string => (ms === undefined ? '-' : `${ms.toFixed(1)} ms`);

async function main(): Promise<number> {
  const options = parseArgs(process.argv.slice(2));
  const root = repoRoot();
  const image = busyboxImage();
  const containerd = await PrivateContainerd.start({ repoRoot: root, logLevel: 'info', namespace: 'smolvm-bench' });
  const samples = new Map<string, number[]>();
  const failures = new Map<string, RunResult[]>();
  const unavailable = new Map<string, string>();
  let runCounter = 0;

  const runOnce = async (runtime: string): Promise<RunResult> => {
    runCounter += 1;
    const id = `bench-${runtime.split('.').slice(-2).join('-')}-${process.pid}-${runCounter}`;
    return containerd.ctr(['run', '--rm', '--runtime', runtime, image.ref, id, ...options.command], {
      timeoutMs: RUN_TIMEOUT_MS,
    });
  };

  try {
    await importImage(containerd, image);
    const active: string[] = [];
    for (const runtime of options.runtimes) {
      samples.set(runtime, []);
      failures.set(runtime, []);
      if (runtime === SMOLVM_RUNTIME && !fs.existsSync(path.join(root, 'bin', SMOLVM_SHIM_BINARY))) {
        unavailable.set(runtime, `${path.join(root, 'bin', SMOLVM_SHIM_BINARY)} does not exist`);
        continue;
      }
      // Warm-up: page cache, image conversion caches, kernel build cache lookups.
      const warmup = await runOnce(runtime);
      if (warmup.exitCode !== 0) {
        unavailable.set(runtime, `warm-up run failed:\n${describeResult(warmup, 600)}`);
        continue;
      }
      active.push(runtime);
    }

    for (let round = 0; round < options.n; round++) {
      const order = round % 2 === 0 ? active : [...active].reverse();
      for (const runtime of order) {
        const result = await runOnce(runtime);
        if (result.exitCode === 0 && !result.timedOut) samples.get(runtime)?.push(result.durationMs);
        else failures.get(runtime)?.push(result);
        if (!options.json) process.stderr.write(`round ${round + 1}/${options.n} ${runtime}: ${result.durationMs.toFixed(1)} ms${result.exitCode === 0 ? '' : ` (exit ${result.exitCode})`}\n`);
      }
    }

    const leftovers = await waitForNoLeaks({ containerd, containerIds: [] });
    const stats = options.runtimes.map((runtime) =>
      summarize(runtime, samples.get(runtime) ?? [], failures.get(runtime) ?? [], unavailable.get(runtime)),
    );
    const runc = stats.find((s) => s.runtime === RUNC_RUNTIME);
    const smolvm = stats.find((s) => s.runtime === SMOLVM_RUNTIME);
    const ratio = (a: number | undefined, b: number | undefined): number | undefined =>
      a !== undefined && b !== undefined && b > 0 ? a / b : undefined;
    const medianRatio = ratio(smolvm?.medianMs, runc?.medianMs);
    const p90Ratio = ratio(smolvm?.p90Ms, runc?.p90Ms);

    if (options.json) {
      console.log(JSON.stringify({ command: options.command, n: options.n, stats, ratio: { median: medianRatio, p90: p90Ratio }, leftovers }, null, 2));
    } else {
      console.log(`\nctr run --rm ${image.ref} ID ${options.command.join(' ')}   (n=${options.n} per runtime, interleaved, after 1 warm-up each)`);
      console.log(`${'runtime'.padEnd(26)} ${'ok'.padStart(4)} ${'fail'.padStart(4)} ${'median'.padStart(11)} ${'p90'.padStart(11)} ${'min'.padStart(11)} ${'max'.padStart(11)}`);
      for (const s of stats) {
        if (s.unavailable) {
          console.log(`${s.runtime.padEnd(26)} unavailable: ${s.unavailable}`);
          continue;
        }
        console.log(
          `${s.runtime.padEnd(26)} ${String(s.ok).padStart(4)} ${String(s.failed).padStart(4)} ${fmt(s.medianMs).padStart(11)} ${fmt(s.p90Ms).padStart(11)} ${fmt(s.minMs).padStart(11)} ${fmt(s.maxMs).padStart(11)}`,
        );
        if (s.firstError) console.log(`  first failure:\n${s.firstError}`);
      }
      console.log(
        medianRatio === undefined
          ? 'ratio smolvm/runc: n/a (one side has no successful runs)'
          : `ratio smolvm/runc: median ${medianRatio.toFixed(2)}x, p90 ${(p90Ratio ?? NaN).toFixed(2)}x`,
      );
      if (leftovers.length > 0) console.log(`LEFT BEHIND after the runs:\n  ${leftovers.join('\n  ')}`);
    }
    const complete = stats.every((s) => !s.unavailable && s.failed === 0) && leftovers.length === 0;
    return complete ? 0 : 1;
  } finally {
    await containerd.stop();
  }
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error(`bench ctr-run: ${err instanceof Error ? err.message : String(err)}`);
      process.exit(2);
    },
  );
}
