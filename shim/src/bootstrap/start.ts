// `containerd-shim-smolvm-v1 start`: find or spawn the shim daemon for this container's group
// and print its address. This path must stay light (it runs on every container start): no
// protobuf schemas, no gRPC, no VM code. It reads only config.json's annotations.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { removeStaleSocket, socketAnswers, socketPath, toAddress, SOCKET_DIR } from './address';
import type { ShimFlags } from './flags';

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
  // containerd writes the runtime options (an Any, maybe empty) and closes the pipe.
  try {
    if (process.stdin.isTTY) return Buffer.alloc(0);
    return fs.readFileSync(0);
  } catch {
    return Buffer.alloc(0);
  }
}

export interface StartResult {
  address: string;
}

export async function startShim(flags: ShimFlags, entry: string): Promise<StartResult> {
  if (!flags.id) throw new Error('start: -id is required');
  if (!flags.namespace) throw new Error('start: -namespace is required');
  const bundle = process.cwd();
  const options = readStdin();
  const group = groupOf(bundle, flags.id);
  fs.mkdirSync(SOCKET_DIR, { recursive: true, mode: 0o711 });
  const socket = socketPath(flags.address, flags.namespace, group);
  const address = toAddress(socket);

  if (await socketAnswers(socket)) {
    fs.writeFileSync(path.join(bundle, 'address'), address);
    return { address };
  }
  removeStaleSocket(socket);

  // The daemon gets the options through a file in the bundle, not its stdin: its stdio is
  // closed so that containerd, which reads our stdout+stderr to EOF, does not wait for it.
  if (options.length > 0) fs.writeFileSync(path.join(bundle, 'options.pb'), options, { mode: 0o600 });
  const args = [entry, '-namespace', flags.namespace, '-id', flags.id, '-address', flags.address,
    '-publish-binary', flags.publishBinary, ...(flags.debug ? ['-debug'] : []), 'daemon'];
  const child = spawn(process.execPath, args, {
    cwd: bundle,
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
    env: { ...process.env, SMOLVM_SHIM_SOCKET: socket, SMOLVM_SHIM_GROUP: group },
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
  return { address };
}
