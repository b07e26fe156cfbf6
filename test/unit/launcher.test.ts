// The launcher (launcher/, compiled to bin/containerd-shim-smolvm-v1): it answers `delete` with
// no state left and `start` for containerd 1.6 itself (the group's live daemon, a warm-pool
// spare, or a daemon it spawns as start.ts does), and hands everything else to node
// (`node bin/containerd-shim-smolvm-v1.js ARGS`) with the same arguments and stdin. These tests
// run the compiled binary with a temporary SMOLVM_ROOT.
//
// How node is observed safely: most cases put a fake `node` first on PATH (a shell script). Run
// as the fallback it records its arguments and stdin, then exits 3: that shows the launcher
// handed over, with exactly which arguments and stdin bytes, and nothing else runs. Run as the
// daemon (last argument `daemon`) it records its arguments, environment, cwd, session and fds,
// then does what FAKE_DAEMON says (write "ok" to fd 3 and exit, "error: boom", exit silently,
// never answer): no real daemon, no VM. Only `delete` with a state file uses the real node: its
// teardown, with `vm: null`, only removes files under the temporary root.
//
// /run/containerd/s: the launcher probes (and may remove a stale socket at) the hashed path of
// its group there. Every case uses a namespace of its own (pid + random bytes), so that path
// cannot be anything real; the cases that make a socket there remove it. The directory is where
// containerd 1.6's shims put their sockets (the shim library fixes it, containerd never says
// it), and the launcher creates it (mkdir -p, 0711) when missing, as start.ts and containerd's
// own shims do: the tests create it the same way first, so that they run on a fresh machine.
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { socketPath, toAddress, SOCKET_DIR } from '../../shim/src/bootstrap/address';
import { encodeDeleteResponse, EXIT_STATUS_KILLED } from '../../shim/src/bootstrap/delete';
import { DeleteResponse } from '../../shim/src/gen/containerd/task/v2/shim';
import { decodeClaim, type ClaimRequest } from '../../shim/src/pool/protocol';
import { identifierProblem } from '../../shim/src/util/identifiers';
import { skipBecause } from '../helpers/skip';

const repo = path.resolve(__dirname, '..', '..', '..');
/** SMOLVM_LAUNCHER_BIN: another build of it (`make -C launcher test` runs the ASan/UBSan one). */
const launcher = process.env.SMOLVM_LAUNCHER_BIN || path.join(repo, 'bin', 'containerd-shim-smolvm-v1');
const mainJs = path.join(repo, 'bin', 'containerd-shim-smolvm-v1.js');
/** SMOLVM_SHA256_TEST_BIN: another build of launcher/test/sha256-test.c (the ASan/UBSan one). */
const sha256Test = process.env.SMOLVM_SHA256_TEST_BIN || path.join(repo, 'launcher', 'build', 'sha256-test');
const FAKE_NODE_EXIT = 3;
const CONTAINERD = '/x/containerd.sock';

/** The fake `node`: the fallback (exit 3) or, run with `daemon` and SMOLVM_SHIM_SOCKET, the shim daemon. */
const FAKE_NODE = `#!/bin/sh
for last; do :; done
out="$FAKE_NODE_OUT"
if [ "$last" != daemon ] || [ -z "$SMOLVM_SHIM_SOCKET" ]; then
  printf '%s\\0' "$@" > "$out/args"
  cat > "$out/stdin"
  exit ${FAKE_NODE_EXIT}
fi
printf '%s\\0' "$@" > "$out/daemon-args"
env -0 > "$out/daemon-env"
pwd -P > "$out/daemon-cwd"
echo $$ $(cut -d' ' -f5,6 /proc/$$/stat) > "$out/daemon-ids"
# Copies of the /proc/$$/fd links: no redirection, which would change the shell's own fds.
for fd in 0 1 2 3 4 5; do cp -P /proc/$$/fd/$fd "$out/fd-$fd"; done
case "$FAKE_DAEMON" in
  error) printf 'error: boom' >&3; exit 1 ;;
  exit) exit 4 ;;
  hold) sleep 30 & echo $! > "$out/held-by"; exit 5 ;;
  ok-hold) sleep 3 & echo $! > "$out/held-by"; printf ok >&3; exit 0 ;;
  error-hold) sleep 3 & echo $! > "$out/held-by"; printf 'error: boom' >&3; exit 1 ;;
  hang) exec sleep 30 ;;
  *) printf ok >&3; exit 0 ;;
esac
`;

function isElf(file: string): boolean {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const magic = Buffer.alloc(4);
      fs.readSync(fd, magic, 0, 4, 0);
      return magic.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return false;
  }
}

interface RunResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
  ms: number;
}

interface RunOptions {
  cwd: string;
  env: NodeJS.ProcessEnv;
  stdin?: Buffer;
  /** Killed after this long (default 8 s). */
  timeoutMs?: number;
  /** Also give the launcher an fd 5 without O_CLOEXEC (as a careless parent might). */
  strayFd?: boolean;
}

function run(args: string[], opts: RunOptions): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const stdio: Array<'pipe' | 'ignore'> = opts.strayFd ? ['pipe', 'pipe', 'pipe', 'ignore', 'ignore', 'pipe'] : ['pipe', 'pipe', 'pipe'];
    const child = spawn(launcher, args, { cwd: opts.cwd, env: opts.env, stdio });
    const out: Buffer[] = [];
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 8_000);
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => { err += b.toString(); });
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: err, ms: Date.now() - started });
    });
    child.stdin!.on('error', () => { /* the launcher may exit before reading */ });
    child.stdin!.end(opts.stdin ?? Buffer.alloc(0));
  });
}

function isLink(file: string): boolean {
  try {
    return fs.lstatSync(file).isSymbolicLink();
  } catch {
    return false;
  }
}

/** True once the process is gone (or a zombie, i.e. dead) within 2 s. */
async function gone(pid: number): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z')) return true;
    } catch {
      return true;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  return false;
}

/** A spare of the warm pool: answers each claim with `answer` (null: never answers). */
interface FakeSpare {
  requests: ClaimRequest[];
  errors: string[];
  close(): Promise<void>;
}

async function fakeSpare(poolDir: string, name: string, answer: string | null): Promise<FakeSpare> {
  const dir = path.join(poolDir, name);
  fs.mkdirSync(dir, { recursive: true });
  const spare: FakeSpare = { requests: [], errors: [], close: async () => undefined };
  const conns = new Set<net.Socket>();
  const server = net.createServer((conn) => {
    conns.add(conn);
    conn.on('close', () => conns.delete(conn));
    conn.on('error', () => { /* the claimer gave up */ });
    let raw = Buffer.alloc(0);
    conn.on('data', (chunk: Buffer) => {
      raw = Buffer.concat([raw, chunk]);
      if (!raw.includes('\n\n')) return;
      try {
        spare.requests.push(decodeClaim(raw));
      } catch (e) {
        spare.errors.push((e as Error).message);
      }
      if (answer !== null) conn.end(answer);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path.join(dir, 'claim.sock'), resolve);
  });
  spare.close = () => new Promise((resolve) => {
    for (const c of conns) c.destroy();
    server.close(() => resolve());
  });
  return spare;
}

describe('launcher (bin/containerd-shim-smolvm-v1)', function () {
  this.timeout(10_000);
  let root: string;
  let bundle: string;
  let fakeBin: string;
  let fakeOut: string;
  let spares: FakeSpare[];
  /** This case's namespace: its sockets in /run/containerd/s cannot be anyone else's. */
  let ns: string;

  before(function () {
    if (!isElf(launcher)) skipBecause(this, { lacks: 'setup', detail: `the launcher is not built (${launcher}): run \`make -C launcher\`` });
    // What the launcher's make_socket_dir() does on a machine where no shim ran yet.
    fs.mkdirSync(SOCKET_DIR, { recursive: true, mode: 0o711 });
  });

  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-launcher-'));
    bundle = path.join(root, 'bundle');
    fs.mkdirSync(bundle);
    fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', annotations: { a: 'b' } }));
    fakeBin = path.join(root, 'fake-bin');
    fakeOut = path.join(root, 'fake-out');
    fs.mkdirSync(fakeBin);
    fs.mkdirSync(fakeOut);
    fs.writeFileSync(path.join(fakeBin, 'node'), FAKE_NODE, { mode: 0o755 });
    spares = [];
    ns = `smolvm-launcher-test-${process.pid}-${randomBytes(6).toString('hex')}`;
  });

  afterEach(async () => {
    for (const s of spares) await s.close();
    // Whatever a case may have left at its group's socket path (its own unique name).
    for (const id of ['c1', 'c2', 'c3', 'c4', 'c5', 'c6', 'c7', 'd1']) fs.rmSync(socketPath(CONTAINERD, ns, id), { force: true });
    fs.rmSync(root, { recursive: true, force: true });
  });

  const poolDir = (): string => path.join(root, 'run', 'pool');
  /** Only SMOLVM_ROOT and what a case adds: nothing from the test runner's environment. */
  const fakeNodeEnv = (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({
    PATH: `${fakeBin}:/usr/bin:/bin`, SMOLVM_ROOT: root, FAKE_NODE_OUT: fakeOut, ...extra,
  });
  const realNodeEnv = (): NodeJS.ProcessEnv => ({
    PATH: `${path.dirname(process.execPath)}:/usr/bin:/bin`, SMOLVM_ROOT: root,
  });
  const fakeNodeArgs = (): string[] | null => {
    const file = path.join(fakeOut, 'args');
    return fs.existsSync(file) ? fs.readFileSync(file, 'utf8').split('\0').slice(0, -1) : null;
  };
  const addSpare = async (name: string, answer: string | null): Promise<FakeSpare> => {
    const spare = await fakeSpare(poolDir(), name, answer);
    spares.push(spare);
    return spare;
  };
  const startArgs = (id: string, ...extra: string[]): string[] => ['-namespace', ns, '-address', CONTAINERD,
    '-publish-binary', '/usr/bin/containerd', '-id', id, ...extra, 'start'];
  const fakeOutFile = (name: string): string | null => {
    const file = path.join(fakeOut, name);
    return fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : null;
  };
  const daemonArgs = (): string[] | null => fakeOutFile('daemon-args')?.split('\0').slice(0, -1) ?? null;
  const expectedDaemonArgs = (id: string, debug = false): string[] => [mainJs, '-namespace', ns, '-id', id,
    '-address', CONTAINERD, '-publish-binary', '/usr/bin/containerd', ...(debug ? ['-debug'] : []), 'daemon'];
  /** After a failed start the launcher runs node's `delete` for the id: containerd runs none
   *  for a shim it never reached, and the dead daemon may have left a state file and a VM. */
  const expectedCleanupArgs = (id: string): string[] => [mainJs, '-namespace', ns, '-id', id,
    '-address', CONTAINERD, '-publish-binary', '/usr/bin/containerd', 'delete'];
  const decodeDelete = (out: Buffer): { pid: number; exitStatus: number; ms: number } => {
    const decoded = DeleteResponse.decode(out);
    assert.ok(decoded.exitedAt, 'exited_at is set');
    return { pid: decoded.pid, exitStatus: decoded.exitStatus, ms: decoded.exitedAt.seconds * 1000 + decoded.exitedAt.nanos / 1e6 };
  };

  describe('sha256 (launcher/src/sha256.c, through launcher/test/sha256-test.c)', () => {
    before(function () {
      if (!isElf(sha256Test)) skipBecause(this, { lacks: 'setup', detail: `the SHA-256 test tool is not built (${sha256Test}): run \`make -C launcher\`` });
    });

    it('computes what node\'s crypto computes, across the padding boundaries', () => {
      const inputs: Buffer[] = [Buffer.alloc(0), Buffer.from('abc'), Buffer.from('/run/containerd/containerd.sock/default/c1'),
        Buffer.from('héllo wörld ✓', 'utf8')];
      for (const len of [1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000]) inputs.push(randomBytes(len));
      inputs.push(Buffer.alloc(1_000_000, 'a'), randomBytes(3 * 1024 * 1024 + 7));
      for (const input of inputs) {
        const r = spawnSync(sha256Test, [], { input, maxBuffer: 1024 });
        assert.equal(r.status, 0, `${input.length} bytes: ${r.stderr?.toString()}`);
        assert.equal(r.stdout.toString(), `${createHash('sha256').update(input).digest('hex')}\n`, `${input.length} bytes`);
      }
    });
  });

  describe('delete', () => {
    it('answers itself when no state file is left: DeleteResponse{0, 137, now}, options.pb removed', async () => {
      fs.writeFileSync(path.join(bundle, 'options.pb'), 'x');
      const before = Date.now();
      const r = await run(['-namespace', 'ns1', '-id', 'gone', '-bundle', bundle, 'delete'], { cwd: root, env: fakeNodeEnv() });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, '');
      assert.equal(fakeNodeArgs(), null, 'node was not run');
      const d = decodeDelete(r.stdout);
      assert.equal(d.pid, 0);
      assert.equal(d.exitStatus, EXIT_STATUS_KILLED);
      assert.ok(d.ms >= before - 1000 && d.ms <= Date.now() + 1000, `exited_at ${d.ms} is now`);
      // Byte for byte what the TypeScript delete encodes for that instant.
      assert.deepEqual(r.stdout, encodeDeleteResponse(0, EXIT_STATUS_KILLED, new Date(d.ms)));
      assert.equal(fs.existsSync(path.join(bundle, 'options.pb')), false);
    });

    it('takes the bundle from the cwd and the namespace "default" when not given', async () => {
      fs.writeFileSync(path.join(bundle, 'options.pb'), 'x');
      // A state file in another namespace does not count.
      fs.mkdirSync(path.join(root, 'run', 'tasks', 'other'), { recursive: true });
      fs.writeFileSync(path.join(root, 'run', 'tasks', 'other', 'c1.json'), '{}');
      const r = await run(['-id', 'c1', 'delete'], { cwd: bundle, env: fakeNodeEnv() });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(fakeNodeArgs(), null);
      assert.equal(decodeDelete(r.stdout).exitStatus, EXIT_STATUS_KILLED);
      assert.equal(fs.existsSync(path.join(bundle, 'options.pb')), false);
    });

    it('hands over to node when the state file exists (node tears down and removes it)', async () => {
      const tasks = path.join(root, 'run', 'tasks', 'ns1');
      fs.mkdirSync(tasks, { recursive: true });
      const stateFile = path.join(tasks, 'c1.json');
      fs.writeFileSync(stateFile, JSON.stringify({ version: 1, id: 'c1', namespace: 'ns1', bundle, status: 'stopped', shimPid: 0, vm: null }));
      fs.writeFileSync(path.join(bundle, 'options.pb'), 'x');
      const r = await run(['-namespace', 'ns1', '-id', 'c1', '-bundle', bundle, 'delete'], { cwd: root, env: realNodeEnv() });
      assert.equal(r.code, 0, r.stderr);
      // Only node's delete removes a state file: the launcher never does.
      assert.equal(fs.existsSync(stateFile), false, 'node removed the state file');
      assert.equal(fs.existsSync(path.join(bundle, 'options.pb')), false);
      const d = decodeDelete(r.stdout);
      assert.equal(d.pid, 0);
      assert.equal(d.exitStatus, EXIT_STATUS_KILLED);
    });

    it('hands over to node, with the same arguments, for command lines and bundles it does not handle', async () => {
      for (const args of [['-namespace', 'ns1', '-id', 'x', 'delete', 'extra'], ['-namespace', 'ns1', '-id'],
        ['-namespace', 'ns1', '-id', 'x', '-bundle', 'relative', 'delete'], ['-namespace', 'ns1', '-id', 'x', '-bundle', '/a/../b', 'delete']]) {
        fs.rmSync(path.join(fakeOut, 'args'), { force: true });
        const r = await run(args, { cwd: bundle, env: fakeNodeEnv() });
        assert.equal(r.code, FAKE_NODE_EXIT, `${args.join(' ')}: ${r.stderr}`);
        assert.deepEqual(fakeNodeArgs(), [mainJs, ...args]);
      }
    });

    it('refuses an id or namespace that is not a containerd identifier itself, as node would (bad-ids.test.ts has them all)', async () => {
      for (const [args, what, value] of [[['-namespace', 'ns1', '-id', '../x', 'delete'], 'container id', '../x'],
        [['-namespace', 'a/b', '-id', 'x', 'delete'], 'namespace', 'a/b'], [['-namespace', 'ns1', 'delete'], 'container id', '']] as const) {
        const r = await run([...args], { cwd: bundle, env: fakeNodeEnv() });
        assert.equal(r.code, 1, `${args.join(' ')}: ${r.stderr}`);
        assert.equal(r.stderr, `containerd-shim-smolvm-v1: delete: ${identifierProblem(what, value)}\n`);
        assert.equal(fakeNodeArgs(), null, 'node was not run');
      }
    });
  });

  describe('start', () => {
    it('claims a spare: prints its address, writes bundle/address, sends the request protocol.ts reads', async function () {
      const spare = await addSpare('1700000000000-100', 'ok unix:///run/containerd/s/abc\n');
      const env = fakeNodeEnv({
        SMOLVM_FOO: 'bar', SMOLVM_SHIM_SOCKET: '/internal', SMOLVM_SHIM_GROUP: 'g', SMOLVM_SPARE_DIR: '/d',
        TTRPC_ADDRESS: '/x/containerd.sock.ttrpc', OTHER: 'no',
      });
      const r = await run(startArgs('c1', '-unknown', 'value', '-debug'), { cwd: bundle, env });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.toString(), 'unix:///run/containerd/s/abc');
      assert.equal(fakeNodeArgs(), null, 'node was not run');
      const addressFile = path.join(bundle, 'address');
      assert.equal(fs.readFileSync(addressFile, 'utf8'), 'unix:///run/containerd/s/abc');
      assert.equal(fs.statSync(addressFile).mode & 0o133, 0, 'at most 0644');
      assert.deepEqual(spare.errors, []);
      assert.deepEqual(spare.requests, [{
        namespace: ns, id: 'c1', bundle: fs.realpathSync(bundle), group: 'c1', address: CONTAINERD,
        publishBinary: '/usr/bin/containerd', ttrpcAddress: '/x/containerd.sock.ttrpc', socketDir: '', debug: true,
        env: { SMOLVM_ROOT: root, SMOLVM_FOO: 'bar' },
      }]);
    });

    it('tries spares oldest first, skips busy ones and entries that take no claims', async function () {
      // Made newest first, so that directory order is unlikely to be name order.
      const newer = await addSpare('1700000000003-3', 'ok unix:///run/containerd/s/newer\n');
      const second = await addSpare('1700000000002-2', 'ok unix:///run/containerd/s/second\n');
      const first = await addSpare('1700000000001-1', 'busy\n');
      const hidden = await addSpare('.1000000000000-0', 'ok unix:///run/containerd/s/hidden\n');
      fs.mkdirSync(path.join(poolDir(), '1600000000000-9')); // no claim.sock: not ready
      fs.writeFileSync(path.join(poolDir(), 'fill.lock'), '{}');
      fs.writeFileSync(path.join(poolDir(), '1500000000000-8'), 'a file');
      const r = await run(startArgs('c2'), { cwd: bundle, env: fakeNodeEnv() });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.toString(), 'unix:///run/containerd/s/second');
      assert.equal(first.requests.length, 1);
      assert.equal(second.requests.length, 1);
      assert.equal(second.requests[0]!.debug, false);
      assert.equal(newer.requests.length, 0);
      assert.equal(hidden.requests.length, 0);
      assert.equal(fakeNodeArgs(), null);
    });

    it('moves on from a spare that does not answer within CLAIM_TIMEOUT_MS', async function () {
      const silent = await addSpare('1700000000001-1', null);
      await addSpare('1700000000002-2', 'ok unix:///run/containerd/s/second\n');
      const r = await run(startArgs('c3'), { cwd: bundle, env: fakeNodeEnv() });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.toString(), 'unix:///run/containerd/s/second');
      assert.equal(silent.requests.length, 1);
      assert.ok(r.ms >= 1900 && r.ms < 5000, `gave up on the silent spare after ~2 s (${r.ms} ms)`);
    });

    it('spawns the daemon when every spare is busy or refuses, or the pool is empty', async function () {
      const a = await addSpare('1700000000001-1', 'refused another SMOLVM_* environment\n');
      const b = await addSpare('1700000000002-2', 'busy\n');
      const c = await addSpare('1700000000003-3', 'ok unix://\n'); // no path: not an answer
      const args = startArgs('c4');
      const want = toAddress(socketPath(CONTAINERD, ns, 'c4'));
      const r = await run(args, { cwd: bundle, env: fakeNodeEnv() });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.toString(), want);
      assert.equal(fakeNodeArgs(), null, 'no node start');
      assert.deepEqual(daemonArgs(), expectedDaemonArgs('c4'));
      assert.deepEqual([a.requests.length, b.requests.length, c.requests.length], [1, 1, 1]);
      assert.equal(fs.readFileSync(path.join(bundle, 'address'), 'utf8'), want);

      for (const s of spares) await s.close();
      spares = [];
      fs.rmSync(poolDir(), { recursive: true });
      fs.rmSync(path.join(fakeOut, 'daemon-args'));
      const none = await run(args, { cwd: bundle, env: fakeNodeEnv() });
      assert.equal(none.code, 0, none.stderr);
      assert.equal(none.stdout.toString(), want);
      assert.deepEqual(daemonArgs(), expectedDaemonArgs('c4'));
      assert.equal(fakeNodeArgs(), null);
    });

    it('spawns the daemon as start.ts does: its socket is address.ts socketPath(), detached, ready pipe on fd 3', async function () {
      const env = fakeNodeEnv({
        SMOLVM_SHIM_SOCKET: '/stale', SMOLVM_SHIM_GROUP: 'stale', TTRPC_ADDRESS: '/x/containerd.sock.ttrpc', OTHER: 'kept',
      });
      const started = Date.now();
      const r = await run(startArgs('d1', '-debug'), { cwd: bundle, env, strayFd: true });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stderr, '');
      const socket = socketPath(CONTAINERD, ns, 'd1');
      assert.equal(r.stdout.toString(), `unix://${socket}`, 'no newline, the address node computes');
      assert.equal(fs.readFileSync(path.join(bundle, 'address'), 'utf8'), `unix://${socket}`);
      assert.equal(fakeNodeArgs(), null, 'no node start');
      assert.deepEqual(daemonArgs(), expectedDaemonArgs('d1', true));
      const daemonEnv = new Map(fakeOutFile('daemon-env')!.split('\0').slice(0, -1).map((kv) => {
        const eq = kv.indexOf('=');
        return [kv.slice(0, eq), kv.slice(eq + 1)] as [string, string];
      }));
      assert.equal(daemonEnv.get('SMOLVM_SHIM_SOCKET'), socket);
      assert.equal(daemonEnv.get('SMOLVM_SHIM_GROUP'), 'd1');
      assert.equal(daemonEnv.get('TTRPC_ADDRESS'), '/x/containerd.sock.ttrpc');
      assert.equal(daemonEnv.get('OTHER'), 'kept');
      assert.equal(daemonEnv.get('SMOLVM_ROOT'), root);
      assert.equal(fakeOutFile('daemon-cwd')!.trim(), fs.realpathSync(bundle));
      const [pid, pgrp, sid] = fakeOutFile('daemon-ids')!.trim().split(' ').map(Number);
      assert.ok(pid! > 0 && pgrp === pid && sid === pid, `its own session (pid ${pid}, pgrp ${pgrp}, sid ${sid})`);
      const fds = [0, 1, 2, 3, 4, 5].map((fd) => {
        const link = path.join(fakeOut, `fd-${fd}`);
        return isLink(link) ? fs.readlinkSync(link) : 'closed';
      });
      assert.deepEqual(fds.slice(0, 3), ['/dev/null', '/dev/null', '/dev/null']);
      assert.match(fds[3]!, /^pipe:\[\d+\]$/);
      assert.deepEqual(fds.slice(4), ['closed', 'closed'], 'no fd of the launcher\'s parent leaks into the daemon');
      assert.ok(Date.now() - started < 5_000);
    });

    it('answers with the socket of a live daemon of the group: node never runs', async function () {
      const socket = socketPath(CONTAINERD, ns, 'c2');
      const server = net.createServer((conn) => conn.destroy());
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(socket, resolve);
      });
      try {
        const spare = await addSpare('1700000000001-1', 'ok unix:///run/containerd/s/abc\n');
        const r = await run(startArgs('c2'), { cwd: bundle, env: fakeNodeEnv() });
        assert.equal(r.code, 0, r.stderr);
        assert.equal(r.stdout.toString(), `unix://${socket}`);
        assert.equal(fs.readFileSync(path.join(bundle, 'address'), 'utf8'), `unix://${socket}`);
        assert.equal(fakeNodeArgs(), null);
        assert.equal(daemonArgs(), null);
        assert.equal(spare.requests.length, 0, 'no spare claimed');
      } finally {
        await new Promise<void>((resolve) => server.close(() => resolve()));
        fs.rmSync(socket, { force: true });
      }
    });

    it('removes a stale socket of the group (nobody listens) and spawns the daemon', async function () {
      const socket = socketPath(CONTAINERD, ns, 'c3');
      // A listener killed outright leaves its socket file behind.
      const killed = spawnSync(process.execPath, ['-e',
        `require('net').createServer().listen(${JSON.stringify(socket)}, () => process.kill(process.pid, 'SIGKILL'))`]);
      assert.equal(killed.signal, 'SIGKILL');
      assert.ok(fs.lstatSync(socket).isSocket(), 'a stale socket is there');
      const r = await run(startArgs('c3'), { cwd: bundle, env: fakeNodeEnv() });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.toString(), `unix://${socket}`);
      assert.equal(fs.existsSync(socket), false, 'removed (the daemon binds it anew)');
      assert.deepEqual(daemonArgs(), expectedDaemonArgs('c3'));
    });

    it('reports a daemon that fails to start: exit 1 with its message, nothing on stdout', async function () {
      const r = await run(startArgs('c5'), { cwd: bundle, env: fakeNodeEnv({ FAKE_DAEMON: 'error' }) });
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'containerd-shim-smolvm-v1: shim daemon failed to start: error: boom\n');
      assert.equal(r.stdout.length, 0);
      assert.equal(fs.existsSync(path.join(bundle, 'address')), false);
      assert.deepEqual(fakeNodeArgs(), expectedCleanupArgs('c5'), 'node cleans up with `delete` after the failure, nothing else');
    });

    it('notices a daemon that exits without a word, also while something it started holds the pipe', async function () {
      const r = await run(startArgs('c6'), { cwd: bundle, env: fakeNodeEnv({ FAKE_DAEMON: 'exit' }) });
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^containerd-shim-smolvm-v1: shim daemon failed to start: exited during start \(exit code 4\) without a word\n$/);
      assert.ok(r.ms < 2_000, `promptly (${r.ms} ms)`);

      const held = await run(startArgs('c6'), { cwd: bundle, env: fakeNodeEnv({ FAKE_DAEMON: 'hold' }) });
      assert.equal(held.code, 1);
      assert.match(held.stderr, /^containerd-shim-smolvm-v1: shim daemon failed to start: exited during start \(exit code 5\) without a word\n$/);
      assert.ok(held.ms < 2_000, `promptly (${held.ms} ms)`);
      // What it left holding the pipe was in its process group: killed with it.
      const holder = Number(fakeOutFile('held-by'));
      assert.ok(await gone(holder), `the process holding the pipe (${holder}) was killed`);
      assert.deepEqual(fakeNodeArgs(), expectedCleanupArgs('c6'), 'node cleans up with `delete` after the failure, nothing else');
    });

    it('goes by what the daemon wrote before it exited, also when the exit is noticed first', async function () {
      // Something the daemon started holds the pipe: its exit is seen before EOF, every time
      // (under load, a daemon that writes and exits at once can be seen so too).
      const ok = await run(startArgs('c6'), { cwd: bundle, env: fakeNodeEnv({ FAKE_DAEMON: 'ok-hold' }) });
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(ok.stderr, '');
      assert.equal(ok.stdout.toString(), toAddress(socketPath(CONTAINERD, ns, 'c6')));
      assert.ok(ok.ms < 2_000, `without waiting for the pipe's holder (${ok.ms} ms)`);
      const holder = Number(fakeOutFile('held-by'));
      const holderStat = fs.readFileSync(`/proc/${holder}/stat`, 'utf8');
      assert.match(holderStat.slice(holderStat.lastIndexOf(')') + 2), /^[RSD]/, 'a ready daemon\'s group is left alone');
      process.kill(holder, 'SIGKILL');

      fs.rmSync(path.join(bundle, 'address'));
      const failed = await run(startArgs('c6'), { cwd: bundle, env: fakeNodeEnv({ FAKE_DAEMON: 'error-hold' }) });
      assert.equal(failed.code, 1);
      assert.equal(failed.stderr, 'containerd-shim-smolvm-v1: shim daemon failed to start: error: boom\n');
      assert.ok(await gone(Number(fakeOutFile('held-by'))), 'the failed daemon\'s group was killed');
      assert.equal(fs.existsSync(path.join(bundle, 'address')), false);
    });

    it('gives up on a daemon that never answers after 10 s and kills it', async function () {
      this.timeout(20_000);
      const r = await run(startArgs('c7'), { cwd: bundle, env: fakeNodeEnv({ FAKE_DAEMON: 'hang' }), timeoutMs: 15_000 });
      assert.equal(r.code, 1);
      assert.equal(r.stderr, 'containerd-shim-smolvm-v1: shim daemon failed to start: not ready within 10 s\n');
      assert.ok(r.ms >= 9_900 && r.ms < 12_000, `after 10 s (${r.ms} ms)`);
      const [pid] = fakeOutFile('daemon-ids')!.trim().split(' ').map(Number);
      assert.ok(await gone(pid!), `the daemon (${pid}) was killed`);
    });

    it('says what failed when node cannot be executed for the daemon', async function () {
      const r = await run(startArgs('c1'), { cwd: bundle, env: { PATH: path.join(root, 'empty'), SMOLVM_ROOT: root } });
      assert.equal(r.code, 1);
      assert.match(r.stderr, /^containerd-shim-smolvm-v1: shim daemon failed to start: error: exec node .*containerd-shim-smolvm-v1\.js: No such file or directory\n$/);
    });

    it('never claims for a spec that may group containers (node reads it)', async () => {
      const spare = await addSpare('1700000000001-1', 'ok unix:///run/containerd/s/abc\n');
      const specs = [
        { annotations: { 'io.kubernetes.cri.sandbox-id': 'pod1' } },
        { annotations: { 'io.containerd.runc.v2.group': 'g1' } },
        { annotations: { 'io.kubernetes.cri.sandbox\\u002did': 'pod1' } }, // an escape could hide a key
      ];
      for (const spec of specs) {
        fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec).replace('\\\\u', '\\u'));
        fs.rmSync(path.join(fakeOut, 'args'), { force: true });
        const r = await run(startArgs('c5'), { cwd: bundle, env: fakeNodeEnv() });
        assert.equal(r.code, FAKE_NODE_EXIT, r.stderr);
        assert.deepEqual(fakeNodeArgs(), [mainJs, ...startArgs('c5')]);
      }
      fs.rmSync(path.join(bundle, 'config.json'));
      const missing = await run(startArgs('c5'), { cwd: bundle, env: fakeNodeEnv() });
      assert.equal(missing.code, FAKE_NODE_EXIT, 'no config.json: node');
      assert.equal(spare.requests.length + spare.errors.length, 0, 'the spare was never contacted');
    });

    it('hands over to node for callers other than containerd 1.6 over ttrpc, and for unsafe values', async () => {
      const spare = await addSpare('1700000000001-1', 'ok unix:///run/containerd/s/abc\n');
      const cases: Array<{ env?: NodeJS.ProcessEnv; args?: string[] }> = [
        { env: { MAX_SHIM_VERSION: '2' } },
        { env: { SMOLVM_SHIM_PROTOCOL: 'grpc' } },
        { env: { TTRPC_ADDRESS: 'a\nb' } },
        { env: { SMOLVM_X: 'a\nb' } },
        { args: ['-namespace', ns, '-id', 'c6', '-address', 'a\nb', 'start'] },
        // Addresses node's path.join would normalize (or that are not what it hashes as is).
        ...['x/containerd.sock', '/x/', '/', '//x', '/x//y', '/x/./y', '/x/../y', '/x/é', '/x/\t', ''].map(
          (address) => ({ args: ['-namespace', ns, '-id', 'c6', '-address', address, 'start'] })),
      ];
      for (const c of cases) {
        const args = c.args ?? startArgs('c6');
        fs.rmSync(path.join(fakeOut, 'args'), { force: true });
        const r = await run(args, { cwd: bundle, env: fakeNodeEnv(c.env) });
        assert.equal(r.code, FAKE_NODE_EXIT, `${JSON.stringify(c)}: ${r.stderr}`);
        assert.deepEqual(fakeNodeArgs(), [mainJs, ...args]);
      }
      assert.equal(spare.requests.length + spare.errors.length, 0, 'the spare was never contacted');
      // Ids and namespaces that are not containerd identifiers: refused first, whoever the caller.
      for (const c of [
        { args: ['-id', 'c6', 'start'], what: 'namespace', value: '' },
        { args: ['-namespace', ns, '-id', '..', 'start'], what: 'container id', value: '..' },
        { args: ['-namespace', 'né', '-id', 'c6', '-address', CONTAINERD, 'start'], what: 'namespace', value: 'né' },
        { args: ['-namespace', ns, '-id', 'c\x01', '-address', CONTAINERD, 'start'], what: 'container id', value: 'c\x01' },
        { args: startArgs('c/6'), env: { MAX_SHIM_VERSION: '2' }, what: 'container id', value: 'c/6' },
      ]) {
        fs.rmSync(path.join(fakeOut, 'args'), { force: true });
        const r = await run(c.args, { cwd: bundle, env: fakeNodeEnv(c.env) });
        assert.equal(r.code, 1, `${JSON.stringify(c)}: ${r.stderr}`);
        assert.equal(r.stderr, `containerd-shim-smolvm-v1: start: ${identifierProblem(c.what, c.value)}\n`);
        assert.equal(fakeNodeArgs(), null, 'node was not run');
      }
      assert.equal(spare.requests.length + spare.errors.length, 0, 'the spare was never contacted');
    });

    it('passes a non-empty stdin (runtime options) through to node, byte for byte', async () => {
      const spare = await addSpare('1700000000001-1', 'ok unix:///run/containerd/s/abc\n');
      const options = Buffer.concat([Buffer.from('\x0a\x05hello\x00\xff'), Buffer.alloc(100_000, 7)]);
      const r = await run(startArgs('c7'), { cwd: bundle, env: fakeNodeEnv(), stdin: options });
      assert.equal(r.code, FAKE_NODE_EXIT, r.stderr);
      assert.deepEqual(fs.readFileSync(path.join(fakeOut, 'stdin')), options);
      assert.equal(spare.requests.length, 0);
      // Paths that never read stdin leave it to node as it was.
      const v = await run(['-v'], { cwd: bundle, env: fakeNodeEnv(), stdin: Buffer.from('abc') });
      assert.equal(v.code, FAKE_NODE_EXIT);
      assert.deepEqual(fakeNodeArgs(), [mainJs, '-v']);
      assert.equal(fs.readFileSync(path.join(fakeOut, 'stdin'), 'utf8'), 'abc');
    });
  });

  it('hands every other action to node', async () => {
    for (const args of [['-namespace', 'ns1', '-id', 'x', 'daemon'], ['-version'], ['frobnicate'], []]) {
      fs.rmSync(path.join(fakeOut, 'args'), { force: true });
      const r = await run(args, { cwd: bundle, env: fakeNodeEnv() });
      assert.equal(r.code, FAKE_NODE_EXIT, `${args.join(' ')}: ${r.stderr}`);
      assert.deepEqual(fakeNodeArgs(), [mainJs, ...args]);
    }
  });

  it('says what failed when node cannot be executed', async () => {
    const r = await run(['-v'], { cwd: bundle, env: { PATH: path.join(root, 'empty') } });
    assert.equal(r.code, 1);
    assert.match(r.stderr, /exec node .*containerd-shim-smolvm-v1\.js: No such file or directory/);
  });
});
