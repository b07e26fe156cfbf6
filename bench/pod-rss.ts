// The shim daemon's memory per container, side by side in one run on one private containerd:
//   pod    N containers of one Kubernetes pod (io.kubernetes.cri.sandbox-id): one daemon, one VM
//   group  N containers in one daemon (io.containerd.runc.v2.group), each in a VM of its own
// For N = 1..max it starts one more detached container (`sleep`), waits until it runs, lets the
// daemon settle and takes the daemon's RSS (median of several samples of /proc/PID/status
// VmRSS). Prints RSS at N, the step from N-1, and the mean growth per extra container against
// the design's budget (≤ 2 MiB). A pod holds as many containers as its backend has disk slot
// pairs (tcg: 3, QEMU microvm's 8 virtio-mmio transports); rows beyond that say so.
//
// usage: node dist/bench/pod-rss.js [--max 5] [--json]
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PrivateContainerd, lines } from '../conformance/harness/containerd';
import { describeResult, sleep } from '../conformance/harness/exec';
import { busyboxImage, importImage } from '../conformance/harness/image';
import { waitForNoLeaks } from '../conformance/harness/leaks';
import { SMOLVM_RUNTIME, SMOLVM_SHIM_BINARY, repoRoot } from '../conformance/harness/suite';

const BUDGET_MIB = 2;
const SAMPLES = 7;
const SAMPLE_GAP_MS = 150;
const SETTLE_MS = 3000;

type Mode = 'pod' | 'group';
const ANNOTATION: Record<Mode, string> = {
  pod: 'io.kubernetes.cri.sandbox-id',
  group: 'io.containerd.runc.v2.group',
};

interface Row {
  n: number;
  rssKiB?: number;
  unavailable?: string;
}

function parseArgs(argv: readonly string[]): { max: number; json: boolean } {
  let max = 5;
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg === '--max') {
      const raw = argv[++i];
      max = Number(raw);
      if (!Number.isInteger(max) || max < 2 || max > 16) throw new Error(`--max must be an integer from 2 to 16, got "${raw}"`);
    } else if (arg === '--json') {
      json = true;
    } else {
      throw new Error(`unknown argument ${arg}\nusage: node dist/bench/pod-rss.js [--max 5] [--json]`);
    }
  }
  return { max, json };
}

function rssKiB(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const match = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!match) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(match[1]);
}

async function medianRss(pid: number): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < SAMPLES; i++) {
    samples.push(rssKiB(pid));
    await sleep(SAMPLE_GAP_MS);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)]!;
}

/** The daemon serving `id`, from smolvm's state file. */
function shimPidOf(containerd: PrivateContainerd, id: string): number {
  const file = path.join(containerd.smolvmRoot, 'run', 'tasks', containerd.namespace, `${id}.json`);
  const state = JSON.parse(fs.readFileSync(file, 'utf8')) as { shimPid?: number };
  if (!state.shimPid) throw new Error(`${file} names no shim pid`);
  return state.shimPid;
}

async function measure(containerd: PrivateContainerd, image: string, mode: Mode, max: number): Promise<Row[]> {
  const group = `bench-${mode}-${process.pid}`;
  const rows: Row[] = [];
  const ids: string[] = [];
  let shimPid = 0;
  try {
    for (let n = 1; n <= max; n++) {
      const id = `${group}-${n}`;
      const started = await containerd.ctr(
        ['run', '-d', '--runtime', SMOLVM_RUNTIME, '--annotation', `${ANNOTATION[mode]}=${group}`, image, id, 'sleep', '100000'],
        { timeoutMs: 120_000 },
      );
      if (started.exitCode !== 0) {
        const why = started.stderr.toString();
        const full = /is full: its VM holds (\d+) containers/.exec(why);
        if (mode === 'pod' && full) {
          for (let rest = n; rest <= max; rest++) rows.push({ n: rest, unavailable: `full (${full[1]} per pod VM here)` });
          await containerd.ctr(['containers', 'rm', id], { timeoutMs: 30_000 });
          break;
        }
        throw new Error(`${mode} container ${n}: ${describeResult(started)}`);
      }
      ids.push(id);
      const pid = shimPidOf(containerd, id);
      if (shimPid && pid !== shimPid) throw new Error(`${mode}: container ${n} went to daemon ${pid}, not ${shimPid}`);
      shimPid = pid;
      await sleep(SETTLE_MS);
      rows.push({ n, rssKiB: await medianRss(shimPid) });
    }
  } finally {
    for (const id of ids.reverse()) {
      await containerd.ctr(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 30_000 });
    }
    for (const id of ids) {
      for (let i = 0; i < 50; i++) {
        const ls = await containerd.ctr(['tasks', 'ls'], { timeoutMs: 15_000 });
        if (!lines(ls.stdout).some((row) => row.startsWith(`${id} `) && /RUNNING/.test(row))) break;
        await sleep(100);
      }
      await containerd.ctr(['tasks', 'rm', '-f', id], { timeoutMs: 60_000 });
      await containerd.ctr(['containers', 'rm', id], { timeoutMs: 60_000 });
    }
  }
  return rows;
}

/**
 * RSS growth per extra container in MiB: the least-squares slope over every measured N (one
 * sample is noisy: V8 returns freed heap to the OS when it likes).
 */
function growthPerContainer(rows: Row[]): number | undefined {
  const points = rows.filter((r) => r.rssKiB !== undefined).map((r) => [r.n, r.rssKiB! / 1024] as const);
  if (points.length < 2) return undefined;
  const meanX = points.reduce((sum, [x]) => sum + x, 0) / points.length;
  const meanY = points.reduce((sum, [, y]) => sum + y, 0) / points.length;
  const sxy = points.reduce((sum, [x, y]) => sum + (x - meanX) * (y - meanY), 0);
  const sxx = points.reduce((sum, [x]) => sum + (x - meanX) ** 2, 0);
  return sxy / sxx;
}

const mib = (kib: number): string => (kib / 1024).toFixed(1);

async function main(): Promise<void> {
  const { max, json } = parseArgs(process.argv.slice(2));
  const root = repoRoot();
  if (!fs.existsSync(path.join(root, 'bin', SMOLVM_SHIM_BINARY))) throw new Error(`build the shim first: ${path.join(root, 'bin', SMOLVM_SHIM_BINARY)} is missing`);
  const containerd = await PrivateContainerd.start({ repoRoot: root });
  try {
    const image = busyboxImage();
    await importImage(containerd, image);
    const result: Record<Mode, Row[]> = { pod: [], group: [] };
    for (const mode of ['pod', 'group'] as const) result[mode] = await measure(containerd, image.ref, mode, max);
    const leaks = await waitForNoLeaks({ containerd, containerIds: [] }, 20_000);
    const growth = { pod: growthPerContainer(result.pod), group: growthPerContainer(result.group) };
    if (json) {
      console.log(JSON.stringify({ budgetMiB: BUDGET_MIB, rows: result, growthMiBPerContainer: growth, leaks }, null, 2));
      return;
    }
    console.log('shim daemon RSS (MiB) by containers in it; step = growth from N-1');
    console.log(`${'N'.padStart(2)}  ${'pod: one VM'.padEnd(26)}  ${'group: one VM each'.padEnd(26)}`);
    for (let n = 1; n <= max; n++) {
      const cell = (rows: Row[]): string => {
        const row = rows.find((r) => r.n === n);
        if (!row || row.rssKiB === undefined) return (row?.unavailable ?? 'n/a').padEnd(26);
        const prev = rows.find((r) => r.n === n - 1)?.rssKiB;
        const step = prev === undefined ? '' : ` (step ${row.rssKiB - prev >= 0 ? '+' : ''}${mib(row.rssKiB - prev)})`;
        return `${mib(row.rssKiB)}${step}`.padEnd(26);
      };
      console.log(`${String(n).padStart(2)}  ${cell(result.pod)}  ${cell(result.group)}`);
    }
    for (const mode of ['pod', 'group'] as const) {
      const g = growth[mode];
      const verdict = g === undefined ? 'not measured' : `${g.toFixed(2)} MiB per extra container (least-squares slope; budget ≤ ${BUDGET_MIB} MiB: ${g <= BUDGET_MIB ? 'within' : 'OVER'})`;
      console.log(`${mode.padEnd(5)}: ${verdict}`);
    }
    if (leaks.length > 0) console.log(`left behind:\n  ${leaks.join('\n  ')}`);
  } finally {
    await containerd.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
