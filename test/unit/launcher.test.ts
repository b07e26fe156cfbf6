// The launcher (launcher/, compiled to bin/containerd-shim-smolvm-v1): it answers `delete` with
// no state left and `start` through a warm-pool spare itself, and hands everything else to node
// (`node bin/containerd-shim-smolvm-v1.js ARGS`) with the same arguments and stdin. These tests run the
// compiled binary with a temporary SMOLVM_ROOT.
//
// How the node fallback is observed safely: most cases put a fake `node` first on PATH (a shell
// script that records its arguments and stdin, then exits 3). The real `start` would create
// /run/containerd/s and spawn a shim daemon, which a unit test must never do; the fake one shows
// that the launcher handed over, with exactly which arguments and stdin bytes, and nothing else
// runs. Only `delete` with a state file uses the real node: its teardown, with `vm: null`, only
// removes files under the temporary root.
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { encodeDeleteResponse, EXIT_STATUS_KILLED } from '../../shim/src/bootstrap/delete';
import { DeleteResponse } from '../../shim/src/gen/containerd/task/v2/shim';
import { decodeClaim, type ClaimRequest } from '../../shim/src/pool/protocol';

const repo = path.resolve(__dirname, '..', '..', '..');
/** SMOLVM_LAUNCHER_BIN: another build of it (`make -C launcher test` runs the ASan/UBSan one). */
const launcher = process.env.SMOLVM_LAUNCHER_BIN || path.join(repo, 'bin', 'containerd-shim-smolvm-v1');
const mainJs = path.join(repo, 'bin', 'containerd-shim-smolvm-v1.js');
const FAKE_NODE_EXIT = 3;

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

function run(args: string[], opts: { cwd: string; env: NodeJS.ProcessEnv; stdin?: Buffer }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(launcher, args, { cwd: opts.cwd, env: opts.env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 8_000);
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => { err += b.toString(); });
    child.on('error', (e) => { clearTimeout(timer); reject(e); });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out), stderr: err, ms: Date.now() - started });
    });
    child.stdin.on('error', () => { /* the launcher may exit before reading */ });
    child.stdin.end(opts.stdin ?? Buffer.alloc(0));
  });
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

  before(function () {
    if (!isElf(launcher)) {
      console.warn(`    skipped: the launcher is not built (${launcher}): run \`make -C launcher\``);
      this.skip();
    }
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
    fs.writeFileSync(path.join(fakeBin, 'node'),
      `#!/bin/sh\nprintf '%s\\0' "$@" > "$FAKE_NODE_OUT/args"\ncat > "$FAKE_NODE_OUT/stdin"\nexit ${FAKE_NODE_EXIT}\n`, { mode: 0o755 });
    spares = [];
  });

  afterEach(async () => {
    for (const s of spares) await s.close();
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
  const startArgs = (id: string, ...extra: string[]): string[] => ['-namespace', 'ns1', '-address', '/x/containerd.sock',
    '-publish-binary', '/usr/bin/containerd', '-id', id, ...extra, 'start'];
  const decodeDelete = (out: Buffer): { pid: number; exitStatus: number; ms: number } => {
    const decoded = DeleteResponse.decode(out);
    assert.ok(decoded.exitedAt, 'exited_at is set');
    return { pid: decoded.pid, exitStatus: decoded.exitStatus, ms: decoded.exitedAt.seconds * 1000 + decoded.exitedAt.nanos / 1e6 };
  };

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

    it('hands over to node, with the same arguments, for names it does not handle', async () => {
      for (const args of [['-namespace', 'ns1', '-id', '../x', 'delete'], ['-namespace', 'a/b', '-id', 'x', 'delete'],
        ['-namespace', 'ns1', 'delete'], ['-namespace', 'ns1', '-id', 'x', 'delete', 'extra'], ['-namespace', 'ns1', '-id']]) {
        fs.rmSync(path.join(fakeOut, 'args'), { force: true });
        const r = await run(args, { cwd: bundle, env: fakeNodeEnv() });
        assert.equal(r.code, FAKE_NODE_EXIT, `${args.join(' ')}: ${r.stderr}`);
        assert.deepEqual(fakeNodeArgs(), [mainJs, ...args]);
      }
    });
  });

  describe('start', () => {
    it('claims a spare: prints its address, writes bundle/address, sends the request protocol.ts reads', async () => {
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
        namespace: 'ns1', id: 'c1', bundle: fs.realpathSync(bundle), group: 'c1', address: '/x/containerd.sock',
        publishBinary: '/usr/bin/containerd', ttrpcAddress: '/x/containerd.sock.ttrpc', socketDir: '', debug: true,
        env: { SMOLVM_ROOT: root, SMOLVM_FOO: 'bar' },
      }]);
    });

    it('tries spares oldest first, skips busy ones and entries that take no claims', async () => {
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

    it('moves on from a spare that does not answer within CLAIM_TIMEOUT_MS', async () => {
      const silent = await addSpare('1700000000001-1', null);
      await addSpare('1700000000002-2', 'ok unix:///run/containerd/s/second\n');
      const r = await run(startArgs('c3'), { cwd: bundle, env: fakeNodeEnv() });
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.toString(), 'unix:///run/containerd/s/second');
      assert.equal(silent.requests.length, 1);
      assert.ok(r.ms >= 1900 && r.ms < 5000, `gave up on the silent spare after ~2 s (${r.ms} ms)`);
    });

    it('hands over to node when every spare is busy or refuses, or the pool is empty', async () => {
      const a = await addSpare('1700000000001-1', 'refused another SMOLVM_* environment\n');
      const b = await addSpare('1700000000002-2', 'busy\n');
      const c = await addSpare('1700000000003-3', 'ok unix://\n'); // no path: not an answer
      const args = startArgs('c4');
      const r = await run(args, { cwd: bundle, env: fakeNodeEnv() });
      assert.equal(r.code, FAKE_NODE_EXIT, r.stderr);
      assert.deepEqual(fakeNodeArgs(), [mainJs, ...args]);
      assert.deepEqual([a.requests.length, b.requests.length, c.requests.length], [1, 1, 1]);
      assert.equal(fs.existsSync(path.join(bundle, 'address')), false);

      for (const s of spares) await s.close();
      spares = [];
      fs.rmSync(poolDir(), { recursive: true });
      fs.rmSync(path.join(fakeOut, 'args'));
      const none = await run(args, { cwd: bundle, env: fakeNodeEnv() });
      assert.equal(none.code, FAKE_NODE_EXIT, none.stderr);
      assert.deepEqual(fakeNodeArgs(), [mainJs, ...args]);
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
        { args: ['-namespace', 'ns1', '-id', 'c6', '-address', 'a\nb', 'start'] },
        { args: ['-id', 'c6', 'start'] }, // no namespace
        { args: ['-namespace', 'ns1', '-id', '..', 'start'] },
      ];
      for (const c of cases) {
        const args = c.args ?? startArgs('c6');
        fs.rmSync(path.join(fakeOut, 'args'), { force: true });
        const r = await run(args, { cwd: bundle, env: fakeNodeEnv(c.env) });
        assert.equal(r.code, FAKE_NODE_EXIT, `${JSON.stringify(c)}: ${r.stderr}`);
        assert.deepEqual(fakeNodeArgs(), [mainJs, ...args]);
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
