// The warm pool's claim protocol. A spare is an idle shim daemon that already holds a VM
// restored up to "agent ready" (vm/pod.ts's shape: disks are attached when a container
// arrives). `start` (this TypeScript one, or the C launcher in launcher/) claims a spare
// instead of spawning a daemon and waiting for a VM: the spare takes the container's place
// (namespace, id, bundle, containerd's addresses), binds the shim socket and answers.
//
// Layout, all under <stateDir>/pool (stateDir: $SMOLVM_ROOT/run, else /run/smolvm):
//   fill.lock           held (O_EXCL, {pid,startTime}) by whoever is topping the pool up
//   <spareId>/          one spare; spareId sorts by age ("<ms since epoch>-<pid>")
//     owner.json        {"pid":N,"startTime":"…"}: the spare daemon (dead owner: stale entry)
//     vm.json           {"pid":N,"startTime":"…","dir":"…","dataDir":"…"}: its VMM and VM dirs, for the sweep after a crash
//     claim.sock        exists only while the spare takes claims (its VM is ready)
//
// A claim is one connection to claim.sock. The claimer writes, in UTF-8:
//   smolvm-claim 1\n
//   key=value\n             (each of the keys below once, `env` any number of times)
//   \n                      (an empty line ends the request)
// Keys:
//   namespace        containerd namespace                 (required)
//   id               container id                         (required)
//   bundle           absolute bundle path                 (required)
//   group            the shim group (id unless the spec's annotations group it) (required)
//   address          containerd's gRPC address (-address)
//   publish_binary   -publish-binary
//   ttrpc_address    TTRPC_ADDRESS from the environment
//   socket_dir       where the shim socket goes (default /run/containerd/s)
//   debug            0 or 1
//   env              NAME=VALUE for every SMOLVM_* variable in the claimer's environment
// No value may hold a newline or a NUL; a request over 64 KiB is refused.
// The spare answers one line and closes:
//   ok unix:///run/containerd/s/<sha256>\n   claimed: that socket serves the task API now
//   busy\n                                   claimed by someone else: try the next spare
//   refused <reason>\n                       this spare cannot serve this claimer (another
//                                            SMOLVM_* environment, a changed config or guest):
//                                            try the next, then start a daemon as usual
// The claimer writes the bundle's `address` file and prints the address as its start answer.
// A spare that answered `ok` has removed its pool entry (it is not counted any more).

import { identifierProblem } from '../util/identifiers';

export const CLAIM_MAGIC = 'smolvm-claim 1';
export const MAX_CLAIM_BYTES = 64 * 1024;
/** A spare answers within milliseconds; past this the claimer moves on. */
export const CLAIM_TIMEOUT_MS = 2_000;
/** Environment that is the daemon's own wiring, not configuration: never compared. */
export const INTERNAL_ENV = new Set(['SMOLVM_SHIM_SOCKET', 'SMOLVM_SHIM_GROUP', 'SMOLVM_SPARE_DIR']);

export interface ClaimRequest {
  namespace: string;
  id: string;
  bundle: string;
  group: string;
  address: string;
  publishBinary: string;
  ttrpcAddress: string;
  socketDir: string;
  debug: boolean;
  /** SMOLVM_* variables of the claimer (internal ones left out). */
  env: Record<string, string>;
}

const UNSAFE = /[\n\0]/;

/** The SMOLVM_* configuration variables of an environment, internal wiring left out. */
export function smolvmEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (k.startsWith('SMOLVM_') && !INTERNAL_ENV.has(k) && v !== undefined) out[k] = v;
  }
  return out;
}

export function encodeClaim(req: ClaimRequest): Buffer {
  const lines = [CLAIM_MAGIC];
  const put = (key: string, value: string): void => {
    if (UNSAFE.test(value)) throw new Error(`claim: ${key} holds a newline or NUL`);
    lines.push(`${key}=${value}`);
  };
  put('namespace', req.namespace);
  put('id', req.id);
  put('bundle', req.bundle);
  put('group', req.group);
  put('address', req.address);
  put('publish_binary', req.publishBinary);
  put('ttrpc_address', req.ttrpcAddress);
  put('socket_dir', req.socketDir);
  put('debug', req.debug ? '1' : '0');
  for (const [k, v] of Object.entries(req.env).sort(([a], [b]) => a.localeCompare(b))) put('env', `${k}=${v}`);
  return Buffer.from(lines.join('\n') + '\n\n');
}

const KEYS: Record<string, keyof Omit<ClaimRequest, 'env' | 'debug'>> = {
  namespace: 'namespace', id: 'id', bundle: 'bundle', group: 'group', address: 'address',
  publish_binary: 'publishBinary', ttrpc_address: 'ttrpcAddress', socket_dir: 'socketDir',
};

/**
 * Parses a complete request (through its empty line). Throws naming what is wrong: unknown or
 * repeated keys, a missing required key, a relative bundle or socket dir.
 */
export function decodeClaim(raw: Buffer): ClaimRequest {
  if (raw.length > MAX_CLAIM_BYTES) throw new Error(`claim: over ${MAX_CLAIM_BYTES} bytes`);
  const text = raw.toString('utf8');
  const end = text.indexOf('\n\n');
  if (end < 0) throw new Error('claim: no empty line ends the request');
  if (text.includes('\0')) throw new Error('claim: holds a NUL');
  const [magic, ...lines] = text.slice(0, end).split('\n');
  if (magic !== CLAIM_MAGIC) throw new Error(`claim: expected ${JSON.stringify(CLAIM_MAGIC)}, got ${JSON.stringify(magic)}`);
  const req: ClaimRequest = {
    namespace: '', id: '', bundle: '', group: '', address: '', publishBinary: '', ttrpcAddress: '',
    socketDir: '', debug: false, env: {},
  };
  const seen = new Set<string>();
  for (const line of lines) {
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Error(`claim: line ${JSON.stringify(line)} is not key=value`);
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    if (key === 'env') {
      const e = value.indexOf('=');
      const name = e > 0 ? value.slice(0, e) : '';
      if (!name.startsWith('SMOLVM_')) throw new Error(`claim: env ${JSON.stringify(value)} is not SMOLVM_NAME=value`);
      if (!INTERNAL_ENV.has(name)) req.env[name] = value.slice(e + 1);
      continue;
    }
    if (seen.has(key)) throw new Error(`claim: ${key} given twice`);
    seen.add(key);
    if (key === 'debug') {
      if (value !== '0' && value !== '1') throw new Error('claim: debug must be 0 or 1');
      req.debug = value === '1';
      continue;
    }
    const field = KEYS[key];
    if (!field) throw new Error(`claim: unknown key ${JSON.stringify(key)}`);
    req[field] = value;
  }
  for (const key of ['namespace', 'id', 'bundle', 'group'] as const) {
    if (!req[key]) throw new Error(`claim: ${key} is required`);
  }
  // The spare writes state files and binds the socket these name: containerd's identifiers only.
  for (const [key, what] of [['namespace', 'namespace'], ['id', 'container id'], ['group', 'group']] as const) {
    const problem = identifierProblem(what, req[key]);
    if (problem !== undefined) throw new Error(`claim: ${problem}`);
  }
  if (!req.bundle.startsWith('/')) throw new Error(`claim: bundle ${JSON.stringify(req.bundle)} is not absolute`);
  if (req.socketDir && !req.socketDir.startsWith('/')) throw new Error(`claim: socket_dir ${JSON.stringify(req.socketDir)} is not absolute`);
  return req;
}

export type ClaimAnswer = { kind: 'ok'; address: string } | { kind: 'busy' } | { kind: 'refused'; reason: string };

export function encodeAnswer(answer: ClaimAnswer): string {
  if (answer.kind === 'ok') return `ok ${answer.address}\n`;
  if (answer.kind === 'busy') return 'busy\n';
  return `refused ${answer.reason.replace(/[\n\0]/g, ' ')}\n`;
}

export function decodeAnswer(line: string): ClaimAnswer {
  const text = line.replace(/\n$/, '');
  if (text.startsWith('ok unix://')) return { kind: 'ok', address: text.slice(3) };
  if (text === 'busy') return { kind: 'busy' };
  if (text.startsWith('refused ')) return { kind: 'refused', reason: text.slice('refused '.length) };
  return { kind: 'refused', reason: `unreadable answer ${JSON.stringify(text.slice(0, 200))}` };
}
