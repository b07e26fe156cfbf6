// A warm-pool spare (`containerd-shim-smolvm-v1 spare`, spawned by pool.ts): a shim daemon
// that starts before its container exists. It boots a VM up to "agent ready" (restored from
// the pod template when one is valid, reseeded as every restore is), then waits on its claim
// socket. The first `start` that claims it (protocol.ts) makes it that container's daemon: it
// binds the shim socket, logs to the bundle's FIFO, and its first Create takes the VM (hot-
// adding the container's disks) instead of booting one. Config, environment or guest changed
// since it booted: it refuses the claim and leaves the pool (a wrong guest is never served).
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { fromAddress, removeStaleSocket, socketAnswers, socketPath, toAddress, SOCKET_DIR } from '../bootstrap/address';
import { loadConfig, type SmolvmConfig } from '../config/config';
import { smolvmPaths, type Paths } from '../config/paths';
import { keepServingOnErrors, serveShim } from '../daemon';
import { openLogFifo, retargetableLogger, type Logger, type LogTarget } from '../log';
import type { Backend } from '../vm/backend';
import { guestArtifacts } from '../vm/guest';
import { VmBuilder } from '../vm/builder';
import { PodVm } from '../vm/pod-vm';
import { podVmShape } from '../vm/shape';
import { createBackend } from '../vm/backends';
import { killTrackedVmmsSync } from '../vm/vmm-exec';
import { writeFileAtomic, removeQuietly } from '../util/fsutil';
import { liveProcessStartTime } from '../util/proc';
import { CLAIM_SOCKET, poolDir, reniceProcess, VM_FILE } from './pool';
import { WarmVm } from './warm-vm';
import { decodeClaim, encodeAnswer, MAX_CLAIM_BYTES, smolvmEnv, type ClaimAnswer, type ClaimRequest } from './protocol';

/** A claimed spare refills the pool this long after its container's Create (or at its exit). */
const SPARE_REFILL_DELAY_MS = 1_000;
/** A claimer sends its request at once; a connection that does not is dropped. */
const REQUEST_TIMEOUT_MS = 2_000;

interface SpareState {
  name: string;
  dir: string;
  paths: Paths;
  config: SmolvmConfig;
  backend: Backend;
  log: Logger;
  target: LogTarget;
  /** What the VM was booted from: a claim compares the guest of now. */
  guest: { kernel: string; initramfs: string };
  env: string;
  pod: PodVm;
}

const envFingerprint = (env: Record<string, string>): string =>
  JSON.stringify(Object.entries(env).sort(([a], [b]) => a.localeCompare(b)));

/** Why this spare must not serve `req`, or null. `stale` reasons also retire the spare. */
async function refusal(state: SpareState, req: ClaimRequest): Promise<{ reason: string; stale: boolean } | null> {
  if (!state.pod.alive) return { reason: 'its VM is gone', stale: true };
  if (envFingerprint(req.env) !== state.env) return { reason: 'another SMOLVM_* environment', stale: false };
  let config: SmolvmConfig;
  try {
    config = loadConfig();
  } catch (err) {
    return { reason: `config unreadable now: ${(err as Error).message}`, stale: true };
  }
  if (JSON.stringify(config) !== JSON.stringify(state.config)) return { reason: 'the config changed since it booted', stale: true };
  const guest = await guestArtifacts(state.paths.cacheDir).catch(() => null);
  if (!guest || guest.kernel.vmlinux !== state.guest.kernel || guest.initramfs !== state.guest.initramfs) {
    return { reason: 'the guest kernel or initramfs changed since it booted', stale: true };
  }
  return null;
}

/**
 * Leaves the pool for good: the VM torn down, the entry removed. A VM still booting (drain's
 * SIGTERM during a refill: `pod` is null while it restores) is killed synchronously, right
 * before the exit: its VMM and directory go first, and no failure handling of the boot runs
 * (it would blame the template). The entry goes only after its VMM.
 */
async function retire(state: Pick<SpareState, 'dir' | 'log'> & { pod: PodVm | null }, why: string): Promise<never> {
  state.log.info('pool spare leaving', { why });
  await state.pod?.destroy().catch(() => undefined);
  const killed = killTrackedVmmsSync();
  if (killed.length > 0) state.log.info('pool spare: killed the VM it was booting', { vm_pids: killed.join(' ') });
  removeQuietly(state.dir);
  process.exit(0);
}

/** Reads one request (through its empty line), bounded in size and time. */
function readRequest(conn: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const timer = setTimeout(() => fail(new Error(`no complete request within ${REQUEST_TIMEOUT_MS} ms`)), REQUEST_TIMEOUT_MS);
    const fail = (err: Error): void => { clearTimeout(timer); conn.removeAllListeners('data'); reject(err); };
    conn.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      size += chunk.length;
      const all = Buffer.concat(chunks, size);
      if (all.includes('\n\n')) {
        clearTimeout(timer);
        conn.removeAllListeners('data');
        resolve(all);
      } else if (size > MAX_CLAIM_BYTES) {
        fail(new Error(`request over ${MAX_CLAIM_BYTES} bytes`));
      }
    });
    conn.on('error', (err) => fail(err));
    conn.on('end', () => fail(new Error('closed before the request ended')));
  });
}

/** The claimed spare becomes the container's daemon: socket, logs, priority, task API. */
async function becomeDaemon(state: SpareState, req: ClaimRequest, socket: string): Promise<void> {
  process.chdir(req.bundle);
  const fifo = openLogFifo(path.join(req.bundle, 'log'));
  const logFile = state.target.fd;
  state.target.fd = fifo ?? 2;
  if (req.debug || state.config.logLevel === 'debug') state.target.min = 'debug';
  fs.closeSync(logFile);
  // Back to normal priority: it runs a container now, not a refill.
  reniceProcess(process.pid, 0);
  reniceProcess(state.pod.vm.vmm.identity.pid, 0);
  await serveShim({
    wiring: {
      namespace: req.namespace, address: req.address, publishBinary: req.publishBinary,
      ttrpcAddress: req.ttrpcAddress || undefined, socket,
    },
    config: state.config,
    backend: state.backend,
    log: state.log,
    // The pool is one short now: a niced refill, once this container has had the CPU.
    poolRefillDelayMs: SPARE_REFILL_DELAY_MS,
    // Taken or torn down, the VM is no longer the pool's: its entry goes.
    warm: new WarmVm(Promise.resolve(state.pod), state.config, state.log, 'warm vm', () => removeQuietly(state.dir)),
  });
}

/** Whether a claim was taken (or is being decided); `close` stops taking connections. */
interface ClaimSlot {
  done: boolean;
  close: () => void;
}

async function answerClaim(state: SpareState, conn: net.Socket, claimed: ClaimSlot): Promise<void> {
  const reply = (answer: ClaimAnswer): Promise<void> => new Promise((resolve) => conn.end(encodeAnswer(answer), () => resolve()));
  let req: ClaimRequest;
  try {
    req = decodeClaim(await readRequest(conn));
  } catch (err) {
    state.log.warn('pool spare: bad claim', { error: (err as Error).message });
    await reply({ kind: 'refused', reason: (err as Error).message });
    return;
  }
  if (claimed.done) return reply({ kind: 'busy' });
  claimed.done = true; // synchronously: a second claim meanwhile is `busy`
  const no = await refusal(state, req);
  if (no) {
    state.log.info('pool spare refused a claim', { id: req.id, reason: no.reason });
    await reply({ kind: 'refused', reason: no.reason });
    if (no.stale) await retire(state, no.reason);
    claimed.done = false;
    return;
  }
  const socket = socketPath(fromAddress(req.address), req.namespace, req.group, req.socketDir || SOCKET_DIR);
  if (await socketAnswers(socket)) {
    claimed.done = false;
    return reply({ kind: 'refused', reason: `a shim already serves ${socket}` });
  }
  fs.rmSync(path.join(state.dir, CLAIM_SOCKET), { force: true });
  claimed.close();
  removeStaleSocket(socket);
  fs.mkdirSync(path.dirname(socket), { recursive: true, mode: 0o711 });
  try {
    await becomeDaemon(state, req, socket);
  } catch (err) {
    state.log.error('claimed spare could not serve', { id: req.id, error: String(err) });
    await reply({ kind: 'refused', reason: `could not serve: ${(err as Error).message}` });
    await retire(state, 'failed to serve its claim');
  }
  state.log.info('claimed from the warm pool', { id: req.id, spare: state.name, vm_pid: state.pod.vm.vmm.identity.pid });
  await reply({ kind: 'ok', address: toAddress(socket) });
}

export async function runSpare(): Promise<void> {
  const dir = process.env.SMOLVM_SPARE_DIR ?? '';
  const paths = smolvmPaths();
  if (!dir || path.dirname(path.resolve(dir)) !== poolDir(paths)) {
    throw new Error(`spare: SMOLVM_SPARE_DIR ${JSON.stringify(dir)} is not an entry of ${poolDir(paths)} (spares are started by the pool)`);
  }
  const name = path.basename(dir);
  process.umask(0o077);
  const target: LogTarget = { fd: fs.openSync(path.join(dir, 'spare.log'), 'a', 0o600), min: 'info' };
  const log = retargetableLogger(target, { runtime: 'smolvm', pid: process.pid });
  keepServingOnErrors(() => log);
  let pod: PodVm | null = null;
  const early = { dir, log, pod: null as PodVm | null };
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => void retire({ ...early, pod }, sig));
  try {
    const config = loadConfig();
    if (config.poolSize === 0) await retire(early, 'pool_size is 0');
    if (config.logLevel === 'debug') target.min = 'debug';
    const backend = createBackend(config.backend);
    const guest = await guestArtifacts(paths.cacheDir);
    pod = await PodVm.start(VmBuilder.fromConfig(config, backend, paths), {
      podId: `spare-${name}`, log, maxContainers: config.podMaxContainers,
      shape: podVmShape(backend, config.memoryMiB, config.vcpus, config.podMaxContainers),
      onVmm: (vmm, dirs) => {
        // Before the guest runs: a spare that dies from here on leaves a VM the sweep can find.
        writeFileAtomic(path.join(dir, VM_FILE), JSON.stringify({ pid: vmm.identity.pid, startTime: vmm.identity.startTime ?? liveProcessStartTime(vmm.identity.pid), dir: dirs.dir, dataDir: dirs.dataDir }));
      },
    });
    // The container's writable disk is the same for every container: attached now, not then.
    await pod.prepareWritable(config.writableDiskMiB * 1024 * 1024, paths.cacheDir);
    const state: SpareState = {
      name, dir, paths, config, backend, log, target,
      guest: { kernel: guest.kernel.vmlinux, initramfs: guest.initramfs }, env: envFingerprint(smolvmEnv(process.env)), pod,
    };
    const ready = pod;
    const claimed: ClaimSlot = { done: false, close: () => server.close() };
    void ready.vm.vmm.exited.then(() => {
      if (!claimed.done) void retire(state, 'its VM exited while idle');
    });
    const server = net.createServer((conn) => {
      conn.on('error', () => undefined);
      void answerClaim(state, conn, claimed).catch((err: unknown) => log.error('pool spare: claim failed', { error: String(err) }));
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(path.join(dir, CLAIM_SOCKET), () => resolve());
    });
    log.info('pool spare ready', { spare: name, vm_pid: ready.vm.vmm.identity.pid, restored_from: ready.vm.restoredFrom ?? 'cold boot' });
  } catch (err) {
    await retire({ ...early, pod }, `failed to start: ${(err as Error).message}`);
  }
}
