// The long-running shim daemon: serves the task API (v2 over ttrpc, v3 over ttrpc or gRPC) on
// the socket that `start` chose, publishes events, owns the containers (VMs) of its group.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ShimFlags } from './bootstrap/flags';
import { loadConfig, type SmolvmConfig } from './config/config';
import { smolvmPaths } from './config/paths';
import { EventPublisher } from './events/publisher';
import { Any } from './gen/google/protobuf/any';
import { Options as RuntimeOptions } from './gen/runtimeoptions/runtimeoptions';
import { fdLogger, openLogFifo, type Logger } from './log';
import type { Backend } from './vm/backend';
import { createBackend } from './vm/backends';
import { startEarlyVm } from './pool/early-vm';
import { topUpPool } from './pool/pool';
import { killTrackedVmmsSync } from './vm/vmm-exec';
import { sweepOrphanedVmms, type VmmSweepResult } from './vm/vmm-sweep';
import { StateStore, STATE_VERSION, validateId } from './state/store';
import { containerSizing } from './task/container';
import { VmBuilder, templatesEnabled } from './vm/builder';
import { VmPlacer, type WarmVmSource } from './vm/placement';
import { TaskService } from './task/service';
import { TaskEndpoint } from './grpc/endpoint';

const READY_FD = 3;

function signalReady(message: string): void {
  try {
    fs.writeSync(READY_FD, message);
    fs.closeSync(READY_FD);
  } catch {
    // started by hand without a ready pipe
  }
}

/** ConfigPath from the runtime options containerd passed to `start` (CRI's runtimeoptions). */
function configPathFromOptions(bundle: string): string | undefined {
  const file = path.join(bundle, 'options.pb');
  let raw: Buffer;
  try {
    raw = fs.readFileSync(file);
  } catch {
    return undefined;
  }
  const any = Any.decode(raw);
  if (!any.typeUrl.endsWith('runtimeoptions.v1.Options')) return undefined;
  return RuntimeOptions.decode(any.value).configPath || undefined;
}

/** What a shim daemon serves for: containerd's side of it. */
export interface ShimWiring {
  namespace: string;
  /** containerd's gRPC address (-address). */
  address: string;
  publishBinary: string;
  /** TTRPC_ADDRESS (events), when containerd gave one. */
  ttrpcAddress: string | undefined;
  /** The shim socket to listen on. */
  socket: string;
}

export interface ServeOptions {
  wiring: ShimWiring;
  config: SmolvmConfig;
  backend: Backend;
  log: Logger;
  /** A warm-pool spare's VM, for the first Create that fits it; released (destroyed if
   *  nobody took it) when the daemon exits. */
  warm?: WarmVmSource & { release(): Promise<void> };
  /** How long after its first Create the daemon tops the warm pool up (config pool_size);
   *  at the latest when it exits. A claimed spare waits a moment: the refill must not take
   *  the CPU from the container that just started. */
  poolRefillDelayMs?: number;
}

/**
 * Serves the task API on `wiring.socket` until the last container is gone (or SIGTERM).
 * Resolves once listening. After its first Create the daemon tops the warm pool up (config
 * pool_size): the refill never competes with that Create.
 */
export async function serveShim(opts: ServeOptions): Promise<void> {
  const { wiring, config, backend } = opts;
  const log = opts.log;
  const { socket } = wiring;
  const paths = smolvmPaths();
  const publisher = new EventPublisher({
    namespace: wiring.namespace,
    ttrpcAddress: wiring.ttrpcAddress ?? `${wiring.address}.ttrpc`,
    containerdAddress: wiring.address,
    publishBinary: wiring.publishBinary,
    log,
  });
  // One socket for every containerd version: task v2/v3 over ttrpc, task v3 over gRPC.
  const server = new TaskEndpoint({ logger: log });
  let exiting = false;
  /** The socket file this daemon listens on (dev:ino), so that it never unlinks a successor's. */
  let listening: { dev: number; ino: number } | null = null;
  const unlinkOwnSocket = (): void => {
    const st = fs.statSync(socket, { throwIfNoEntry: false });
    if (listening && st && st.dev === listening.dev && st.ino === listening.ino) fs.rmSync(socket, { force: true });
    listening = null;
  };
  const exit = async (code: number): Promise<void> => {
    if (exiting) return;
    exiting = true;
    // First of all: a `start` for another container of this group must no longer find this
    // daemon (it spawns a new one instead of handing containerd a daemon that is leaving).
    unlinkOwnSocket();
    await refillPool();
    await opts.warm?.release().catch(() => undefined);
    await publisher.close().catch(() => undefined);
    await server.close({ timeoutMs: 2000 }).catch(() => undefined);
    // What dead shims of this state root left: VMMs whose parent is gone, their directories.
    await sweepOrphanedVmms(paths).then(
      (swept) => logSweep(log, swept),
      (err: unknown) => log.warn('could not sweep orphaned VMMs', { error: String(err) }),
    );
    exitNow(log, code);
  };
  let poolRefill: { timer: NodeJS.Timeout | null; done: boolean } = { timer: null, done: false };
  let refilling: Promise<void> = Promise.resolve();
  const refillPool = (): Promise<void> => {
    if (poolRefill.done || config.poolSize === 0) return refilling;
    if (poolRefill.timer) clearTimeout(poolRefill.timer);
    poolRefill = { timer: null, done: true };
    refilling = topUpPool(paths, config.poolSize).then(
      (spawned) => { if (spawned.length > 0) log.info('warm pool topped up', { spawned: spawned.length, pool_size: config.poolSize }); },
      (err: unknown) => log.warn('could not top the warm pool up', { error: String(err) }),
    );
    return refilling;
  };
  const placer = new VmPlacer(VmBuilder.fromConfig(config, backend, paths), { podMaxContainers: config.podMaxContainers, warm: opts.warm });
  const service = new TaskService({
    namespace: wiring.namespace,
    paths,
    publisher,
    log,
    placer,
    sizing: containerSizing(config),
    onCreated: async () => {
      if (!poolRefill.done && !poolRefill.timer && config.poolSize > 0) {
        poolRefill.timer = setTimeout(() => void refillPool(), opts.poolRefillDelayMs ?? 0);
        poolRefill.timer.unref();
      }
      // A VM started ahead that the first Create did not take has no use any more.
      await opts.warm?.release().catch((err: unknown) => log.warn('could not tear down an unused warm vm', { error: String(err) }));
    },
    onShutdownAccepted: () => unlinkOwnSocket(),
    onShutdown: () => void exit(0),
  });
  server.registerTask({
    create: (req) => service.create(req),
    start: (req) => service.start(req),
    state: (req) => service.state(req),
    wait: (req) => service.wait(req),
    kill: (req) => service.kill(req),
    delete: (req) => service.delete(req),
    pids: (req) => service.pids(req),
    closeIO: (req) => service.closeIO(req),
    connect: (req) => service.connect(req),
    shutdown: (req) => service.shutdown(req),
    pause: (req) => service.pause(req),
    resume: (req) => service.resume(req),
    checkpoint: () => service.checkpoint(),
    exec: (req) => service.exec(req),
    resizePty: (req) => service.resizePty(req),
    update: (req) => service.update(req),
    stats: (req) => service.stats(req),
  });
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.removeAllListeners(sig);
    process.on(sig, () => {
      log.info(`${sig}: tearing down every VM of this shim`);
      unlinkOwnSocket();
      void service.destroyAll().finally(() => exit(0));
    });
  }
  // containerd does not read our stdio, and a write to a closed pipe must not kill us.
  process.on('SIGPIPE', () => undefined);
  await server.listen(socket);
  const bound = fs.statSync(socket);
  listening = { dev: bound.dev, ino: bound.ino };
  log.info('shim daemon serving', { socket, backend: backend.name, since_exec_ms: Math.round(process.uptime() * 1000) });
}

/** An id or namespace that is safe as a file name (checked again at the entry points). */
function isPlainIdentifier(value: string): boolean {
  try {
    validateId(value);
    return true;
  } catch {
    return false;
  }
}

/** Whether a state file exists for the container (one this smolvm cannot read counts). */
function hasStateFile(store: StateStore, namespace: string, id: string): boolean {
  try {
    return store.read(namespace, id) !== null;
  } catch {
    return true;
  }
}

function logSweep(log: Logger, swept: VmmSweepResult): void {
  if (swept.killed.length > 0 || swept.removedDirs.length > 0) {
    log.info('swept orphaned VMMs', { killed: swept.killed.map((v) => v.pid).join(' '), dirs: swept.removedDirs.join(' ') });
  }
  for (const problem of swept.problems) log.warn('orphaned VMM sweep', { problem });
}

/**
 * Ends the process. A VMM of ours still running here (a VM still booting: nobody holds it
 * yet) is killed first, synchronously, so that it is gone with its directory before we are
 * (PDEATHSIG would kill it too, but leave the directory).
 */
function exitNow(log: Logger, code: number): never {
  const killed = killTrackedVmmsSync();
  if (killed.length > 0) log.warn('killed VMMs still running at exit', { pids: killed.join(' ') });
  log.info('shim daemon exiting');
  process.exit(code);
}

/** Logs the daemon's failures instead of dying of them. */
export function keepServingOnErrors(log: () => Logger): void {
  process.on('uncaughtException', (err) => log().error('uncaught exception (daemon keeps serving)', { error: err.stack ?? String(err) }));
  process.on('unhandledRejection', (err) => log().error('unhandled rejection (daemon keeps serving)', { error: String(err) }));
}

export async function runDaemon(flags: ShimFlags): Promise<void> {
  const bundle = process.cwd();
  const socket = process.env.SMOLVM_SHIM_SOCKET;
  const logFd = openLogFifo(path.join(bundle, 'log'));
  let log: Logger = fdLogger(logFd ?? 2, flags.debug ? 'debug' : 'info', { runtime: 'smolvm', pid: process.pid });
  keepServingOnErrors(() => log);
  try {
    if (!socket) throw new Error('SMOLVM_SHIM_SOCKET is not set: the daemon is started by `start`');
    process.umask(0o077);
    const config = loadConfig(configPathFromOptions(bundle));
    if (config.logLevel === 'debug' && !flags.debug) log = fdLogger(logFd ?? 2, 'debug', { runtime: 'smolvm', pid: process.pid });
    const backend = createBackend(config.backend);
    // The VM restores while containerd sends its Create (pool/early-vm.ts).
    const paths = smolvmPaths();
    const store = new StateStore(paths.stateDir);
    const startEarly = templatesEnabled(config.templates);
    if (startEarly && isPlainIdentifier(flags.id) && isPlainIdentifier(flags.namespace) && !hasStateFile(store, flags.namespace, flags.id)) {
      // Before its VMM exists: a daemon killed while it restores (before the Create's own
      // record) leaves a state file, so `delete` goes through node and sweeps its VM
      // directory (the launcher answers a delete without state file by itself).
      store.write({ version: STATE_VERSION, id: flags.id, namespace: flags.namespace, bundle, status: 'creating', shimPid: process.pid, vm: null });
    }
    const early = startEarly
      ? startEarlyVm({
        builder: VmBuilder.fromConfig(config, backend, paths), config, log,
        record: (vm) => {
          try {
            store.write({ version: STATE_VERSION, id: flags.id, namespace: flags.namespace, bundle, status: 'creating', shimPid: process.pid, vm });
          } catch (err) {
            log.warn('early vm: could not record it in the state file', { error: String(err) });
          }
        },
      })
      : undefined;
    await serveShim({
      wiring: {
        namespace: flags.namespace, address: flags.address, publishBinary: flags.publishBinary,
        ttrpcAddress: process.env.TTRPC_ADDRESS, socket,
      },
      config, backend, log, warm: early,
    });
    signalReady('ok');
  } catch (err) {
    log.error('shim daemon failed to start', { error: String(err) });
    signalReady(`error: ${(err as Error).message}`);
    // The early VM may be restoring: it goes (with its directory) before we do.
    exitNow(log, 1);
  }
}
