// Round trips of the host→guest agent calls on a real VM (the backend `auto` picks; tcg here),
// measured where the shim makes them (AgentClient), optionally with CPU hogs beside the guest:
// the evidence behind the deadline table (shim/src/agent/deadlines.ts). Each container runs in
// a pod VM, so CreateContainer includes the hot-added disks the agent waits for.
//
// usage: node dist/bench/agent-rtt.js [--rounds 10] [--hogs 2] [--json]
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { AgentClient } from '../shim/src/agent/client';
import { AGENT_CALL_DEADLINES_MS } from '../shim/src/agent/deadlines';
import { loadConfig } from '../shim/src/config/config';
import { smolvmPaths } from '../shim/src/config/paths';
import { stderrLogger } from '../shim/src/log';
import type { OciSpec } from '../shim/src/oci/spec';
import { VmBuilder } from '../shim/src/vm/builder';
import { VmPlacer } from '../shim/src/vm/placement';
import { createBackend } from '../shim/src/vm/backends';
import { Container } from '../shim/src/task/container';
import { makeBusyboxRootfs } from '../test/helpers/rootfs';

const TIMED = ['createContainer', 'execProcess', 'startProcess', 'signalProcess', 'closeStdin', 'listProcesses',
  'statsContainer', 'updateContainer', 'removeProcess', 'removeContainer'] as const;
type Timed = typeof TIMED[number];

function parseArgs(argv: readonly string[]): { rounds: number; hogs: number; json: boolean } {
  const usage = 'usage: node dist/bench/agent-rtt.js [--rounds 10] [--hogs 2] [--json]';
  let rounds = 10;
  let hogs = 0;
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const int = (lo: number, hi: number): number => {
      const raw = argv[++i];
      const n = Number(raw);
      if (!Number.isInteger(n) || n < lo || n > hi) throw new Error(`${arg} must be an integer from ${lo} to ${hi}, got "${raw}"\n${usage}`);
      return n;
    };
    if (arg === '--rounds') rounds = int(1, 100);
    else if (arg === '--hogs') hogs = int(0, 16);
    else if (arg === '--json') json = true;
    else throw new Error(`unknown argument ${arg}\n${usage}`);
  }
  return { rounds, hogs, json };
}

/** Wraps AgentClient's methods to record how long each call took (successful ones only). */
function instrument(): Map<Timed, number[]> {
  const samples = new Map<Timed, number[]>(TIMED.map((m) => [m, []]));
  const proto = AgentClient.prototype as unknown as Record<Timed, (...args: unknown[]) => Promise<unknown>>;
  for (const method of TIMED) {
    const original = proto[method];
    proto[method] = async function (this: AgentClient, ...args: unknown[]): Promise<unknown> {
      const started = process.hrtime.bigint();
      const result = await original.apply(this, args);
      samples.get(method)!.push(Number(process.hrtime.bigint() - started) / 1e6);
      return result;
    };
  }
  return samples;
}

function spec(args: string[]): OciSpec {
  return {
    ociVersion: '1.1.0',
    process: { args, env: ['PATH=/bin:/usr/bin'], cwd: '/', user: { uid: 0, gid: 0 } },
    root: { path: 'rootfs' },
    hostname: 'rtt',
  };
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

async function main(): Promise<void> {
  const { rounds, hogs, json } = parseArgs(process.argv.slice(2));
  const samples = instrument();
  const hogProcesses: ChildProcess[] = [];
  for (let i = 0; i < hogs; i++) hogProcesses.push(spawn('sh', ['-c', 'while :; do :; done'], { stdio: 'ignore' }));
  const config = loadConfig();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-rtt-'));
  const paths = smolvmPaths({ SMOLVM_ROOT: path.join(root, 'smolvm') });
  const rootfs = makeBusyboxRootfs(root);
  const log = stderrLogger('warn', { cmd: 'agent-rtt' });
  const sink = (): PassThrough => new PassThrough().resume();
  const common = {
    rootfs: { kind: 'dir' as const, path: rootfs }, log, podId: 'rtt', record: () => undefined,
    placer: new VmPlacer(VmBuilder.fromConfig(config, createBackend(config.backend), paths), { podMaxContainers: rounds + 1 }),
    sizing: { memoryMiB: config.memoryMiB, vcpus: config.vcpus, writableDiskBytes: 64 << 20 },
  };
  try {
    // The first container boots the pod VM (not timed as a round: boot dominates it).
    const first = await Container.create({ ...common, id: 'rtt-0', spec: spec(['sleep', '3600']), stdio: { stdout: sink(), stderr: sink() } });
    await first.start();
    for (const list of samples.values()) list.length = 0;
    for (let round = 1; round <= rounds; round++) {
      const c = await Container.create({ ...common, id: `rtt-${round}`, spec: spec(['sleep', '3600']), stdio: { stdout: sink(), stderr: sink() } });
      await c.start();
      const exec = await c.exec('x', { process: spec(['sleep', '3600']).process!, terminal: false, stdio: { stdout: sink(), stderr: sink() } });
      await exec.start();
      await c.guestProcesses();
      await c.stats();
      await c.update({ pids: { limit: 100 } });
      await exec.closeStdin();
      await exec.kill(9, false);
      await exec.state.exited;
      await c.removeExec('x');
      await c.kill('', 9, false);
      await c.init.exited;
      await c.destroy();
    }
    await first.kill('', 9, false);
    await first.init.exited;
    await first.destroy();
  } finally {
    for (const hog of hogProcesses) hog.kill('SIGKILL');
    fs.rmSync(root, { recursive: true, force: true });
  }
  const rows = TIMED.map((method) => {
    const sorted = [...samples.get(method)!].sort((a, b) => a - b);
    return {
      method, n: sorted.length,
      medianMs: sorted.length ? quantile(sorted, 0.5) : NaN,
      maxMs: sorted.length ? sorted[sorted.length - 1]! : NaN,
      deadlineMs: AGENT_CALL_DEADLINES_MS[method],
    };
  });
  if (json) {
    console.log(JSON.stringify({ rounds, hogs, load: os.loadavg(), rows }, null, 2));
    return;
  }
  console.log(`agent round trips: ${rounds} rounds, ${hogs} CPU hogs, load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  console.log('call               n   median ms     max ms   deadline ms   deadline/max');
  for (const r of rows) {
    console.log(`${r.method.padEnd(17)} ${String(r.n).padStart(3)} ${r.medianMs.toFixed(1).padStart(11)} ${r.maxMs.toFixed(1).padStart(10)} ${String(r.deadlineMs).padStart(13)} ${(r.deadlineMs / r.maxMs).toFixed(0).padStart(14)}x`);
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.stack ?? err.message : String(err));
  process.exit(1);
});
