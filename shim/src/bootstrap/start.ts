// `containerd-shim-smolvm-v1 start`: find or spawn the shim daemon for this container's group
// and answer containerd with its address, in the form this containerd version reads (a bare
// address, JSON, or a BootstrapResult: see negotiate.ts). This path must stay light (it runs on
// every container start): no generated protobuf code, no gRPC, no VM code. It reads only
// config.json's annotations; the 2.3+ bootstrap codec and the containerd version probe are
// loaded only when the caller is one that needs them.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
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
  const ready = child.stdio[3] as NodeJS.ReadableStream;
  const message = await new Promise<string>((resolve, reject) => {
    let text = '';
    const timer = setTimeout(() => reject(new Error('shim daemon did not become ready within 10s')), 10_000);
    ready.setEncoding('utf8');
    ready.on('data', (chunk: string) => { text += chunk; });
    ready.on('end', () => { clearTimeout(timer); resolve(text); });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`shim daemon exited during start (code ${code}, signal ${signal}): ${text.trim()}`));
    });
  });
  if (message.trim() !== 'ok') {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
    throw new Error(`shim daemon failed to start: ${message.trim() || 'no reason given'}`);
  }
  child.unref();
  fs.writeFileSync(path.join(bundle, 'address'), address);
  return result();
}
