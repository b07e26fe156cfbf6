// `ctr run --rm IMAGE ID /bin/true`, wall time from spawning ctr to its exit, with runc and with
// smolvm side by side on one private containerd: a warm-up run each, then N runs each,
// interleaved (and the order flipped every round) so drift on a shared machine hits both alike.
// Prints median, p90, min, max per runtime and the smolvm/runc ratio. No target: honest numbers.
//
// With --pool N (default 1) a third lane runs smolvm on a second private containerd whose
// config has pool_size = N: every one of its runs starts with N warm spares ready (pool/).
//
// usage: node dist/bench/ctr-run.js [--n 10] [--runtimes io.containerd.runc.v2,io.containerd.smolvm.v1]
//                                   [--pool 1] [--json] [-- CMD…]
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { smolvmPaths, type Paths } from '../shim/src/config/paths';
import { drainPool, waitForReady } from '../shim/src/pool/pool';
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
  /** Warm-pool size of the extra smolvm lane (0: no such lane). */
  readonly pool: number;
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
  let pool = 1;
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
    } else if (arg === '--pool') {
      const raw = value();
      pool = Number(raw);
      if (!Number.isInteger(pool) || pool < 0 || pool > 16) throw new Error(`--pool must be an integer from 0 to 16, got "${raw}"`);
    } else if (arg === '--json') {
      json = true;
    } else if (arg === '--') {
      command = argv.slice(i + 1);
      if (command.length === 0) throw new Error('-- must be followed by a command');
      break;
    } else {
      throw new Error(`unknown argument "${arg}" (usage: [--n N] [--runtimes a,b] [--pool N] [--json] [-- CMD…])`);
    }
  }
  return { n, runtimes, json, command, pool };
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

/** One column of the table: a runtime on a containerd, maybe with a warm pool. */
interface Lane {
  readonly label: string;
  readonly runtime: string;
  readonly containerd: PrivateContainerd;
  /** Warm-pool size of this lane's smolvm (0: none). Each run starts with the pool full. */
  readonly pool: number;
}

const POOL_READY_TIMEOUT_MS = 120_000;

async function startContainerd(root: string, namespace: string, pool: number): Promise<PrivateContainerd> {
  if (pool === 0) return PrivateContainerd.start({ repoRoot: root, logLevel: 'info', namespace });
  const configDir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-bench-pool-'));
  const config = path.join(configDir, 'config.toml');
  fs.writeFileSync(config, `pool_size = ${pool}\n`);
  return PrivateContainerd.start({ repoRoot: root, logLevel: 'info', namespace, env: { SMOLVM_CONFIG: config } });
}

async function main(): Promise<number> {
  const options = parseArgs(process.argv.slice(2));
  const root = repoRoot();
  const image = busyboxImage();
  const containerd = await PrivateContainerd.start({ repoRoot: root, logLevel: 'info', namespace: 'smolvm-bench' });
  let pooled: PrivateContainerd | null = null;
  const lanes: Lane[] = options.runtimes.map((runtime) => ({ label: runtime, runtime, containerd, pool: 0 }));
  const samples = new Map<string, number[]>();
  const failures = new Map<string, RunResult[]>();
  const unavailable = new Map<string, string>();
  let runCounter = 0;
  const poolPaths = (lane: Lane): Paths => smolvmPaths({ SMOLVM_ROOT: lane.containerd.smolvmRoot });

  const runOnce = async (lane: Lane, waitForPool = true): Promise<RunResult> => {
    runCounter += 1;
    const id = `bench-${lane.runtime.split('.').slice(-2).join('-')}-${process.pid}-${runCounter}`;
    // A warm pool is measured full (a burst larger than the pool pays cold starts again), and
    // no lane is measured while a refill runs in the background.
    for (const pooledLane of waitForPool ? lanes.filter((l) => l.pool > 0) : []) {
      if (!(await waitForReady(poolPaths(pooledLane), pooledLane.pool, POOL_READY_TIMEOUT_MS))) {
        throw new Error(`${pooledLane.label}: the warm pool did not fill within ${POOL_READY_TIMEOUT_MS / 1000} s`);
      }
    }
    return lane.containerd.ctr(['run', '--rm', '--runtime', lane.runtime, image.ref, id, ...options.command], {
      timeoutMs: RUN_TIMEOUT_MS,
    });
  };

  try {
    await importImage(containerd, image);
    if (options.pool > 0 && options.runtimes.includes(SMOLVM_RUNTIME)) {
      pooled = await startContainerd(root, 'smolvm-bench-pool', options.pool);
      await importImage(pooled, image);
      lanes.push({ label: `${SMOLVM_RUNTIME} pool=${options.pool}`, runtime: SMOLVM_RUNTIME, containerd: pooled, pool: options.pool });
    }
    const active: Lane[] = [];
    for (const lane of lanes) {
      samples.set(lane.label, []);
      failures.set(lane.label, []);
      if (lane.runtime === SMOLVM_RUNTIME && !fs.existsSync(path.join(root, 'bin', SMOLVM_SHIM_BINARY))) {
        unavailable.set(lane.label, `${path.join(root, 'bin', SMOLVM_SHIM_BINARY)} does not exist`);
        continue;
      }
      // Warm-up: page cache, image conversion caches, kernel build cache lookups; for a pool
      // lane also its first fill (the daemon of the warm-up run tops the pool up).
      let warmup = await runOnce(lane, false);
      if (lane.pool > 0 && warmup.exitCode === 0) warmup = await runOnce(lane);
      if (warmup.exitCode !== 0) {
        unavailable.set(lane.label, `warm-up run failed:\n${describeResult(warmup, 600)}`);
        continue;
      }
      active.push(lane);
    }

    for (let round = 0; round < options.n; round++) {
      const order = round % 2 === 0 ? active : [...active].reverse();
      for (const lane of order) {
        const result = await runOnce(lane);
        if (result.exitCode === 0 && !result.timedOut) samples.get(lane.label)?.push(result.durationMs);
        else failures.get(lane.label)?.push(result);
        if (!options.json) process.stderr.write(`round ${round + 1}/${options.n} ${lane.label}: ${result.durationMs.toFixed(1)} ms${result.exitCode === 0 ? '' : ` (exit ${result.exitCode})`}\n`);
      }
    }

    const leftovers = await waitForNoLeaks({ containerd, containerIds: [] });
    if (pooled) {
      // The spares are the pool's, not leaks: let the last refill finish, stop them, then
      // nothing may be left.
      await waitForReady(smolvmPaths({ SMOLVM_ROOT: pooled.smolvmRoot }), options.pool, POOL_READY_TIMEOUT_MS);
      await drainPool(smolvmPaths({ SMOLVM_ROOT: pooled.smolvmRoot }));
      leftovers.push(...await waitForNoLeaks({ containerd: pooled, containerIds: [] }));
    }
    const stats = lanes.map((lane) =>
      ({ ...summarize(lane.runtime, samples.get(lane.label) ?? [], failures.get(lane.label) ?? [], unavailable.get(lane.label)), runtime: lane.label }),
    );
    const runc = stats.find((s) => s.runtime === RUNC_RUNTIME);
    const ratio = (a: number | undefined, b: number | undefined): number | undefined =>
      a !== undefined && b !== undefined && b > 0 ? a / b : undefined;
    const ratios = stats.filter((s) => s.runtime !== RUNC_RUNTIME).map((s) => ({
      runtime: s.runtime, median: ratio(s.medianMs, runc?.medianMs), p90: ratio(s.p90Ms, runc?.p90Ms),
    }));

    if (options.json) {
      console.log(JSON.stringify({ command: options.command, n: options.n, stats, ratios, leftovers }, null, 2));
    } else {
      console.log(`\nctr run --rm ${image.ref} ID ${options.command.join(' ')}   (n=${options.n} per runtime, interleaved, after 1 warm-up each)`);
      console.log(`${'runtime'.padEnd(32)} ${'ok'.padStart(4)} ${'fail'.padStart(4)} ${'median'.padStart(11)} ${'p90'.padStart(11)} ${'min'.padStart(11)} ${'max'.padStart(11)}`);
      for (const s of stats) {
        if (s.unavailable) {
          console.log(`${s.runtime.padEnd(32)} unavailable: ${s.unavailable}`);
          continue;
        }
        console.log(
          `${s.runtime.padEnd(32)} ${String(s.ok).padStart(4)} ${String(s.failed).padStart(4)} ${fmt(s.medianMs).padStart(11)} ${fmt(s.p90Ms).padStart(11)} ${fmt(s.minMs).padStart(11)} ${fmt(s.maxMs).padStart(11)}`,
        );
        if (s.firstError) console.log(`  first failure:\n${s.firstError}`);
      }
      for (const r of ratios) {
        console.log(
          r.median === undefined
            ? `ratio ${r.runtime} / runc: n/a (one side has no successful runs)`
            : `ratio ${r.runtime} / runc: median ${r.median.toFixed(2)}x, p90 ${(r.p90 ?? NaN).toFixed(2)}x`,
        );
      }
      if (pooled) console.log(`(pool=${options.pool}: every run, of any lane, starts with ${options.pool} warm spare(s) ready: refills never overlap a measurement)`);
      if (leftovers.length > 0) console.log(`LEFT BEHIND after the runs:\n  ${leftovers.join('\n  ')}`);
    }
    const complete = stats.every((s) => !s.unavailable && s.failed === 0) && leftovers.length === 0;
    return complete ? 0 : 1;
  } finally {
    if (pooled) {
      await drainPool(smolvmPaths({ SMOLVM_ROOT: pooled.smolvmRoot })).catch(() => undefined);
      await pooled.stop();
    }
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
