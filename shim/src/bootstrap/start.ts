// `containerd-shim-smolvm-v1 start`: find or spawn the shim daemon for this container's group
// and answer containerd with its address, in the form this containerd version reads (a bare
// address, JSON, or a BootstrapResult: see negotiate.ts). This path must stay light (it runs on
// every container start): no generated protobuf code, no gRPC, no VM code. It reads only
// config.json's annotations; the 2.3+ bootstrap codec and the containerd version probe are
// loaded only when the caller is one that needs them.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { fromAddress, removeStaleSocket, socketAnswers, socketPath, toAddress, SOCKET_DIR } from './address';
import type { ShimFlags } from './flags';
import { chooseAnswer, needsContainerdMajor, parseMaxShimVersion, parsePreferredProtocol, renderTextAnswer } from './negotiate';
import type { BootstrapExtension, BootstrapParams } from './wire';
import { validateIdentifier } from '../util/identifiers';

/** Annotations that put several containers in one daemon (one VM per pod). */
const GROUP_ANNOTATIONS = ['io.kubernetes.cri.sandbox-id', 'io.containerd.runc.v2.group'];

export function groupOf(bundle: string, id: string): string {
  try {
    const spec = JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8')) as { annotations?: Record<string, string> };
    for (const key of GROUP_ANNOTATIONS) {
      const group = spec.annotations?.[key];
      if (group) return group;
    }
  } catch {
    // Create reports a bad config.json with a proper error; here the id is the group.
  }
  return id;
}

function readStdin(): Buffer {
  // containerd writes the runtime options (an Any, maybe empty), or from 2.3 on BootstrapParams,
  // and closes the pipe.
  try {
    if (process.stdin.isTTY) return Buffer.alloc(0);
    return fs.readFileSync(0);
  } catch {
    return Buffer.alloc(0);
  }
}

export interface StartResult {
  /** The shim's socket address (unix://…), as written to the bundle's `address` file. */
  address: string;
  /** What `start` prints for containerd: the bare address, a JSON answer or a BootstrapResult. */
  answer: Buffer;
}

/** How long the daemon has to answer on its ready pipe (fd 3), as the launcher's spawn.c. */
const READY_TIMEOUT_MS = 10_000;
/** After EOF without a word, how long to wait for the exit status of a daemon that just died;
 *  after its exit, how long to wait for EOF on a pipe something it started may hold. */
const EXIT_GRACE_MS = 200;

/**
 * The daemon's answer on fd 3: "ok", or "error: …", then EOF. Its exit may be noticed before
 * that EOF (a race, or something it started holds the pipe); what it wrote is in the pipe by
 * then, so the answer is decided by the text either way and the exit only explains silence,
 * as in the launcher (launcher/src/spawn.c). `why` is undefined when it is ready.
 */
function readyAnswer(child: ChildProcess): Promise<{ why: string | undefined }> {
  const ready = child.stdio[3] as Readable;
  return new Promise((resolve) => {
    let text = '';
    let exit: string | undefined;
    let settled = false;
    const settle = (timedOut: boolean): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      ready.destroy(); // a holder's end of the pipe must not keep `start` alive
      const message = text.trim();
      if (timedOut) resolve({ why: `not ready within ${READY_TIMEOUT_MS / 1000} s` });
      else if (message === 'ok') resolve({ why: undefined });
      else if (message) resolve({ why: message });
      else resolve({ why: exit ? `exited during start (${exit}) without a word` : 'no reason given' });
    };
    const timer = setTimeout(() => settle(true), READY_TIMEOUT_MS);
    ready.setEncoding('utf8');
    ready.on('data', (chunk: string) => { text += chunk; });
    ready.on('end', () => {
      // Closed without a word: most likely it died; a moment to say how, if it did.
      if (text.trim() === '' && exit === undefined) setTimeout(() => settle(false), EXIT_GRACE_MS);
      else settle(false);
    });
    child.once('exit', (code, signal) => {
      exit = signal ? `signal ${signal}` : `exit code ${code}`;
      // What it wrote and its EOF were in the pipe before its exit was signalled: wait for that
      // EOF, or, while something it started holds the pipe, briefly, then one more poll phase
      // (setImmediate) so that what is in the pipe has been read.
      setTimeout(() => setImmediate(() => settle(false)), EXIT_GRACE_MS);
    });
    child.once('error', (err) => {
      exit = `not started: ${err.message}`;
      settle(false);
    });
  });
}

/** The runtime options among the 2.3+ bootstrap extensions (what older containerd sent alone). */
const RUNTIME_OPTIONS_TYPE = /(^|[/.])runtimeoptions\.v1\.Options$/;

function runtimeOptionsOf(params: BootstrapParams): BootstrapExtension | undefined {
  return params.extensions.find((ext) => RUNTIME_OPTIONS_TYPE.test(ext.typeUrl));
}

export async function startShim(flags: ShimFlags, entry: string, env: NodeJS.ProcessEnv = process.env): Promise<StartResult> {
  // First of all: the id, namespace and group name sockets, files and claims.
  validateIdentifier('container id', flags.id, 'start');
  validateIdentifier('namespace', flags.namespace, 'start');
  const bundle = process.cwd();
  const maxShimVersion = parseMaxShimVersion(env);
  const preferred = parsePreferredProtocol(env);
  const stdin = readStdin();

  // containerd 2.3+ writes BootstrapParams on stdin, older ones the runtime options (maybe none).
  const wire = stdin.length > 0 ? await import('./wire') : undefined;
  const bootstrap = wire?.readBootstrapParams(stdin, flags.id, flags.namespace);
  let options = stdin;
  if (wire && bootstrap) {
    const runtimeOptions = runtimeOptionsOf(bootstrap);
    options = runtimeOptions ? wire.encodeAny(runtimeOptions) : Buffer.alloc(0);
  }
  const publishBinary = flags.publishBinary || bootstrap?.containerdBinary || '';
  const profile = { bootstrap, maxShimVersion, preferred };
  const containerdMajor = needsContainerdMajor(profile)
    ? (await import('./containerd-version')).containerdMajorFromBinary(publishBinary)
    : undefined;
  const answer = chooseAnswer({ ...profile, containerdMajor });

  const containerdAddress = flags.address || fromAddress(bootstrap?.containerdGrpcAddress ?? '');
  const socketDir = bootstrap?.socketDir || SOCKET_DIR;
  if (!path.isAbsolute(socketDir)) throw new Error(`start: bootstrap socket_dir ${JSON.stringify(socketDir)} is not an absolute path`);
  const ttrpcAddress = bootstrap?.containerdTtrpcAddress || env.TTRPC_ADDRESS;
  const debug = flags.debug || (wire !== undefined && bootstrap !== undefined && bootstrap.logLevel <= wire.LOG_LEVEL_DEBUG);

  const group = groupOf(bundle, flags.id);
  // An annotation's group joins the socket hash: "../ns2/g" would reach another namespace's daemon.
  if (group !== flags.id) validateIdentifier(`group (config.json annotation ${GROUP_ANNOTATIONS.join(' or ')})`, group, 'start');
  const socket = socketPath(containerdAddress, flags.namespace, group, socketDir);
  fs.mkdirSync(socketDir, { recursive: true, mode: 0o711 });
  const address = toAddress(socket);
  const result = (served = address): StartResult => ({
    address: served,
    answer: answer.format === 'protobuf'
      ? wire!.encodeBootstrapResult({ version: answer.version, address: served, protocol: answer.protocol, metadata: {} })
      : Buffer.from(renderTextAnswer(answer, served)),
  });

  // A live daemon serves every transport on its one socket: reuse it whatever it was started for.
  if (await socketAnswers(socket)) {
    fs.writeFileSync(path.join(bundle, 'address'), address);
    return result();
  }
  removeStaleSocket(socket);

  // A warm-pool spare (pool/) already runs a daemon with a ready VM: claim it. Only without
  // runtime options (a spare cannot take another config file from them).
  if (options.length === 0) {
    const { claimSpare } = await import('../pool/claim');
    const { smolvmEnv } = await import('../pool/protocol');
    const { smolvmPaths } = await import('../config/paths');
    const claimed = await claimSpare(path.join(smolvmPaths(env).stateDir, 'pool'), {
      namespace: flags.namespace, id: flags.id, bundle, group, address: containerdAddress, publishBinary,
      ttrpcAddress: ttrpcAddress ?? '', socketDir, debug, env: smolvmEnv(env),
    });
    if (claimed) {
      fs.writeFileSync(path.join(bundle, 'address'), claimed.address);
      return result(claimed.address);
    }
  }

  // The daemon gets the options through a file in the bundle, not its stdin: its stdio is
  // closed so that containerd, which reads our stdout+stderr to EOF, does not wait for it.
  if (options.length > 0) fs.writeFileSync(path.join(bundle, 'options.pb'), options, { mode: 0o600 });
  const args = [entry, '-namespace', flags.namespace, '-id', flags.id, '-address', containerdAddress,
    '-publish-binary', publishBinary, ...(debug ? ['-debug'] : []), 'daemon'];
  const child = spawn(process.execPath, args, {
    cwd: bundle,
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
    env: {
      ...env,
      SMOLVM_SHIM_SOCKET: socket,
      SMOLVM_SHIM_GROUP: group,
      ...(ttrpcAddress ? { TTRPC_ADDRESS: ttrpcAddress } : {}),
    },
  });
  const outcome = await readyAnswer(child);
  if (outcome.why !== undefined) {
    // Its process group too (detached: it leads one): what it started goes with it.
    try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* already gone */ }
    await cleanAfterFailedStart(child, flags, bundle);
    throw new Error(`shim daemon failed to start: ${outcome.why}`);
  }
  child.unref();
  fs.writeFileSync(path.join(bundle, 'address'), address);
  return result();
}

/**
 * The daemon died (or was killed) before it served. containerd runs no `delete` for a shim it
 * never reached, so what the daemon left (its state file, an early VM's directory; its VMM
 * died with it) is cleaned here as `delete` would, once the daemon is gone (the sweep leaves a
 * VM directory alone while its owner lives). Best effort: the start fails either way.
 */
async function cleanAfterFailedStart(child: ChildProcess, flags: ShimFlags, bundle: string): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 2_000);
      child.once('exit', () => { clearTimeout(timer); resolve(); });
    });
  }
  try {
    const { deleteShim } = await import('./delete');
    await deleteShim({ ...flags, bundle });
  } catch (err) {
    process.stderr.write(`start: cleaning up after the daemon: ${(err as Error).message}\n`);
  }
}
