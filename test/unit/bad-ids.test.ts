// A container id or namespace that is not a containerd identifier is refused at every entry
// point before any path is built: the launcher's start and delete, node's start, delete and
// daemon, the task API (a real daemon over ttrpc), the warm pool's claim. The review's attack:
// `-id ../../victim delete` removed <stateDir>/victim.json. Each case plants valid state files
// where the bad ids would lead (and outside the state dir), and checks that nothing under the
// test's root changed: not a byte, not a timestamp.
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Code, RpcError } from '../../shim/src/errdefs';
import { TaskDefinition } from '../../shim/src/gen/containerd/task/v2/shim';
import { decodeClaim, encodeClaim, type ClaimRequest } from '../../shim/src/pool/protocol';
import { TtrpcClient } from '../../shim/src/ttrpc/client';
import { identifierProblem } from '../../shim/src/util/identifiers';

const repo = path.resolve(__dirname, '..', '..', '..');
const launcher = process.env.SMOLVM_LAUNCHER_BIN || path.join(repo, 'bin', 'containerd-shim-smolvm-v1');
const mainJs = path.join(repo, 'bin', 'containerd-shim-smolvm-v1.js');
const PROG = 'containerd-shim-smolvm-v1';

const LONG = 'a'.repeat(300);
/** The brief's four, and the review's own. */
const BAD_IDS = ['../x', '/abs', '', LONG, '../../victim'];
/** An empty namespace is "default" for delete (containerd's and runc's rule), an error for start. */
const BAD_NAMESPACES = ['../x', '/abs', LONG];

/** Every file and directory under dir: type, mode, size, mtime and content hash. */
function snapshot(dir: string, skip: ReadonlySet<string> = new Set()): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string): void => {
    for (const name of fs.readdirSync(d).sort()) {
      const p = path.join(d, name);
      if (skip.has(p)) continue;
      const st = fs.lstatSync(p);
      const hash = st.isFile() ? createHash('sha256').update(fs.readFileSync(p)).digest('hex') : '';
      out.set(path.relative(dir, p), `${st.mode.toString(8)} ${st.size} ${st.mtimeMs} ${hash}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

interface Layout {
  root: string;
  smolvmRoot: string;
  stateDir: string;
  bundle: string;
  /** Where a fake `node` records that it ran (outside the snapshot). */
  fakeOut: string;
  fakeBin: string;
  /** The state files the bad ids lead to, by what led there. */
  victims: string[];
}

/** A state file as StateStore writes it (vm: null, so that node's delete would just remove it). */
function plantState(file: string, id: string, namespace: string, bundle: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify({ version: 1, id, namespace, bundle, status: 'stopped', shimPid: 0, vm: null }));
}

function makeLayout(): Layout {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-bad-ids-'));
  const smolvmRoot = path.join(root, 'smolvm');
  const stateDir = path.join(smolvmRoot, 'run');
  const bundle = path.join(root, 'bundle');
  fs.mkdirSync(bundle, { recursive: true });
  fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', annotations: { a: 'b' } }));
  // Runtime options (an Any with type url "x") that delete must not remove for a bad id.
  fs.writeFileSync(path.join(bundle, 'options.pb'), Buffer.from('0a0178', 'hex'));
  const tasks = path.join(stateDir, 'tasks');
  const victims = [
    path.join(stateDir, 'victim.json'), // -namespace default -id ../../victim
    path.join(tasks, 'x.json'), // -namespace default -id ../x
    path.join(tasks, 'default', 'abs.json'), // -namespace default -id /abs: another container's state
    path.join(stateDir, 'x', 'c1.json'), // -namespace ../x -id c1
    path.join(tasks, 'abs', 'c1.json'), // -namespace /abs -id c1
    path.join(root, 'victim.json'), // outside SMOLVM_ROOT altogether
  ];
  for (const v of victims) plantState(v, path.basename(v, '.json'), 'default', bundle);
  const fakeOut = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-bad-ids-out-'));
  const fakeBin = path.join(fakeOut, 'bin');
  fs.mkdirSync(fakeBin);
  // A `node` that only records that it ran: the launcher must refuse without handing over.
  fs.writeFileSync(path.join(fakeBin, 'node'), `#!/bin/sh\nprintf '%s\\0' "$@" > "${fakeOut}/node-ran"\nexit 3\n`, { mode: 0o755 });
  return { root, smolvmRoot, stateDir, bundle, fakeOut, fakeBin, victims };
}

interface Run {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

function runSync(file: string, args: string[], cwd: string, env: NodeJS.ProcessEnv): Run {
  const r = spawnSync(file, args, { cwd, env, input: Buffer.alloc(0), timeout: 20_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

/** The cases of one entry point: [what, namespace, id] with the field named in the error. */
function cases(emptyNamespaceIsBad: boolean): Array<[what: 'container id' | 'namespace', namespace: string, id: string]> {
  return [
    ...BAD_IDS.map((id) => ['container id', 'default', id] as ['container id', string, string]),
    ...[...BAD_NAMESPACES, ...(emptyNamespaceIsBad ? [''] : [])].map((ns) => ['namespace', ns, 'c1'] as ['namespace', string, string]),
  ];
}

describe('bad container ids and namespaces are refused at every entry point, touching nothing', function () {
  this.timeout(120_000);
  let l: Layout;
  let before: Map<string, string>;

  beforeEach(() => {
    l = makeLayout();
    before = snapshot(l.root);
  });

  afterEach(() => {
    fs.rmSync(l.root, { recursive: true, force: true });
    fs.rmSync(l.fakeOut, { recursive: true, force: true });
  });

  const assertUntouched = (label: string): void => {
    assert.deepEqual(snapshot(l.root), before, `${label}: nothing under the test root changed`);
    for (const v of l.victims) assert.ok(fs.existsSync(v), `${label}: ${v} is still there`);
  };
  const fakeNodeEnv = (): NodeJS.ProcessEnv => ({ PATH: `${l.fakeBin}:/usr/bin:/bin`, SMOLVM_ROOT: l.smolvmRoot });
  /** Real node; a config file that does not exist, so that a daemon started by mistake dies at once. */
  const realNodeEnv = (): NodeJS.ProcessEnv => ({
    PATH: `${path.dirname(process.execPath)}:/usr/bin:/bin`, SMOLVM_ROOT: l.smolvmRoot,
    SMOLVM_CONFIG: path.join(l.fakeOut, 'no-such-config.toml'),
  });
  const startArgs = (namespace: string, id: string): string[] =>
    ['-namespace', namespace, '-address', path.join(l.fakeOut, 'containerd.sock'), '-publish-binary', '/bin/false', '-id', id, 'start'];
  const deleteArgs = (namespace: string, id: string): string[] => ['-namespace', namespace, '-id', id, '-bundle', l.bundle, 'delete'];

  const expectRefused = (r: Run, action: string, what: string, value: string, label: string): void => {
    assert.equal(r.code, 1, `${label}: exit 1 (${r.stderr})`);
    assert.equal(r.stdout.length, 0, `${label}: nothing on stdout`);
    assert.equal(r.stderr, `${PROG}: ${action}: ${identifierProblem(what, value)}\n`, label);
  };

  it('the launcher refuses them itself for delete (node never runs)', () => {
    for (const [what, ns, id] of cases(false)) {
      const label = `launcher -namespace ${JSON.stringify(ns)} -id ${JSON.stringify(id.slice(0, 20))} delete`;
      expectRefused(runSync(launcher, deleteArgs(ns, id), l.bundle, fakeNodeEnv()), 'delete', what, what === 'namespace' ? ns : id, label);
      assert.equal(fs.existsSync(path.join(l.fakeOut, 'node-ran')), false, `${label}: node was not run`);
      assertUntouched(label);
    }
  });

  it('the launcher refuses them itself for start (node never runs, no daemon, no claim)', () => {
    for (const [what, ns, id] of cases(true)) {
      const label = `launcher -namespace ${JSON.stringify(ns)} -id ${JSON.stringify(id.slice(0, 20))} start`;
      expectRefused(runSync(launcher, startArgs(ns, id), l.bundle, fakeNodeEnv()), 'start', what, what === 'namespace' ? ns : id, label);
      assert.equal(fs.existsSync(path.join(l.fakeOut, 'node-ran')), false, `${label}: node was not run`);
      assertUntouched(label);
    }
  });

  it('node\'s delete refuses them (InvalidArgument, the launcher\'s words)', () => {
    for (const [what, ns, id] of cases(false)) {
      const label = `node -namespace ${JSON.stringify(ns)} -id ${JSON.stringify(id.slice(0, 20))} delete`;
      expectRefused(runSync(process.execPath, [mainJs, ...deleteArgs(ns, id)], l.bundle, realNodeEnv()), 'delete', what, what === 'namespace' ? ns : id, label);
      assertUntouched(label);
    }
  });

  it('node\'s delete refuses a bundle that is not an absolute path without . or ..', () => {
    for (const bundle of ['bundle', '../bundle', `${l.bundle}/../bundle`]) {
      const r = runSync(process.execPath, [mainJs, '-namespace', 'default', '-id', 'c1', '-bundle', bundle, 'delete'], l.bundle, realNodeEnv());
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stderr, `${PROG}: delete: invalid bundle ${JSON.stringify(bundle)}: containerd passes an absolute path without . or .. components\n`);
      // Through the launcher (which hands such a bundle to node): the same answer.
      const viaLauncher = runSync(launcher, ['-namespace', 'default', '-id', 'c1', '-bundle', bundle, 'delete'], l.bundle, realNodeEnv());
      assert.equal(viaLauncher.code, 1);
      assert.equal(viaLauncher.stderr, r.stderr);
      assertUntouched(`-bundle ${bundle}`);
    }
  });

  it('node\'s start refuses them, and a group annotation that is not an identifier', () => {
    for (const [what, ns, id] of cases(true)) {
      const label = `node -namespace ${JSON.stringify(ns)} -id ${JSON.stringify(id.slice(0, 20))} start`;
      expectRefused(runSync(process.execPath, [mainJs, ...startArgs(ns, id)], l.bundle, realNodeEnv()), 'start', what, what === 'namespace' ? ns : id, label);
      assertUntouched(label);
    }
    // "../other/g" would hash to the socket of group g in namespace "other".
    for (const key of ['io.kubernetes.cri.sandbox-id', 'io.containerd.runc.v2.group']) {
      for (const group of ['../other/g', '/abs', LONG]) {
        fs.writeFileSync(path.join(l.bundle, 'config.json'), JSON.stringify({ ociVersion: '1.0.2', annotations: { [key]: group } }));
        before = snapshot(l.root);
        // Through the launcher, which leaves grouped specs to node.
        const r = runSync(launcher, startArgs('default', 'c1'), l.bundle, realNodeEnv());
        const what = 'group (config.json annotation io.kubernetes.cri.sandbox-id or io.containerd.runc.v2.group)';
        expectRefused(r, 'start', what, group, `${key}=${group.slice(0, 20)}`);
        assertUntouched(`${key}=${group.slice(0, 20)}`);
      }
    }
  });

  it('node\'s daemon refuses them: the error on the ready pipe, exit 1', async () => {
    for (const [what, ns, id] of cases(true)) {
      const label = `daemon -namespace ${JSON.stringify(ns)} -id ${JSON.stringify(id.slice(0, 20))}`;
      const socket = path.join(l.fakeOut, 'daemon.sock');
      const child = spawn(process.execPath, [mainJs, '-namespace', ns, '-id', id, '-address', path.join(l.fakeOut, 'c.sock'),
        '-publish-binary', '/bin/false', 'daemon'], {
        cwd: l.bundle, detached: true, stdio: ['ignore', 'ignore', 'pipe', 'pipe'],
        env: { ...realNodeEnv(), SMOLVM_SHIM_SOCKET: socket, SMOLVM_SHIM_GROUP: id },
      });
      try {
        let ready = '';
        (child.stdio[3] as NodeJS.ReadableStream).on('data', (b: Buffer) => { ready += b.toString(); });
        const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
        assert.equal(code, 1, label);
        assert.equal(ready, `error: daemon: ${identifierProblem(what, what === 'namespace' ? ns : id)}`, label);
        assert.equal(fs.existsSync(socket), false, `${label}: never listened`);
        assertUntouched(label);
      } finally {
        try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone, as it should be */ }
      }
    }
  });

  describe('the task API of a real daemon, over ttrpc', () => {
    let daemonPid = 0;
    let client: TtrpcClient | undefined;

    beforeEach(async () => {
      const config = path.join(l.fakeOut, 'config.toml');
      // No early VM, no pool: the daemon serves without starting anything.
      fs.writeFileSync(config, 'backend = "tcg"\ntemplates = false\npool_size = 0\n');
      const socket = path.join(l.fakeOut, 'shim.sock');
      const child = spawn(process.execPath, [mainJs, '-namespace', 'default', '-id', 'c0', '-address', path.join(l.fakeOut, 'c.sock'),
        '-publish-binary', '/bin/false', 'daemon'], {
        cwd: l.bundle, detached: true, stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
        env: { ...realNodeEnv(), SMOLVM_CONFIG: config, SMOLVM_SHIM_SOCKET: socket, SMOLVM_SHIM_GROUP: 'c0',
          TTRPC_ADDRESS: path.join(l.fakeOut, 'c.sock.ttrpc') },
      });
      daemonPid = child.pid!;
      client = undefined;
      const ready = await new Promise<string>((resolve) => {
        let text = '';
        const pipe = child.stdio[3] as NodeJS.ReadableStream;
        pipe.on('data', (b: Buffer) => { text += b.toString(); });
        pipe.on('end', () => resolve(text));
      });
      child.unref();
      assert.equal(ready, 'ok');
      client = await TtrpcClient.connect(socket);
      before = snapshot(l.root);
    });

    afterEach(async () => {
      if (client) {
        try {
          await client.call(TaskDefinition, 'shutdown', { id: 'c0', now: false });
        } catch { /* already gone */ }
        client.close();
      }
      for (let i = 0; i < 100 && isAlive(daemonPid); i++) await new Promise((resolve) => setTimeout(resolve, 20));
      if (isAlive(daemonPid)) {
        process.kill(-daemonPid, 'SIGKILL');
        assert.fail('the daemon did not exit after Shutdown');
      }
    });

    const isInvalid = (what: string, value: string) => (err: unknown): boolean =>
      err instanceof RpcError && err.code === Code.InvalidArgument && err.message.includes(identifierProblem(what, value)!);

    it('answers InvalidArgument naming the id for every request, before any path is built', async () => {
      const api = client;
      assert.ok(api, 'connected');
      for (const id of BAD_IDS) {
        const label = `id ${JSON.stringify(id.slice(0, 20))}`;
        await assert.rejects(api.call(TaskDefinition, 'create', {
          id, bundle: l.bundle, rootfs: [], terminal: false, stdin: '', stdout: '', stderr: '', checkpoint: '', parentCheckpoint: '', options: undefined,
        }), isInvalid('container id', id), `create ${label}`);
        const calls: Array<[string, () => Promise<unknown>]> = [
          ['state', () => api.call(TaskDefinition, 'state', { id, execId: '' })],
          ['start', () => api.call(TaskDefinition, 'start', { id, execId: '' })],
          ['kill', () => api.call(TaskDefinition, 'kill', { id, execId: '', signal: 15, all: false })],
          ['wait', () => api.call(TaskDefinition, 'wait', { id, execId: '' })],
          ['delete', () => api.call(TaskDefinition, 'delete', { id, execId: '' })],
          ['pids', () => api.call(TaskDefinition, 'pids', { id })],
          ['closeIO', () => api.call(TaskDefinition, 'closeIO', { id, execId: '', stdin: true })],
          ['resizePty', () => api.call(TaskDefinition, 'resizePty', { id, execId: '', width: 80, height: 24 })],
          ['pause', () => api.call(TaskDefinition, 'pause', { id })],
          ['resume', () => api.call(TaskDefinition, 'resume', { id })],
          ['stats', () => api.call(TaskDefinition, 'stats', { id })],
          ['update', () => api.call(TaskDefinition, 'update', { id, resources: undefined, annotations: {} })],
          ['exec', () => api.call(TaskDefinition, 'exec', { id, execId: 'e1', terminal: false, stdin: '', stdout: '', stderr: '', spec: undefined })],
        ];
        for (const [name, call] of calls) await assert.rejects(call(), isInvalid('container id', id), `${name} ${label}`);
        // An exec id is checked as well, before the container is even looked up.
        await assert.rejects(api.call(TaskDefinition, 'exec', {
          id: 'c1', execId: id, terminal: false, stdin: '', stdout: '', stderr: '', spec: undefined,
        }), isInvalid('exec id', id), `exec id ${label}`);
      }
      assertUntouched('task API');
    });
  });

  it('the warm pool\'s claim refuses them (a spare would write state and bind a socket for them)', () => {
    const good: ClaimRequest = {
      namespace: 'default', id: 'c1', bundle: '/b', group: 'c1', address: '/c.sock', publishBinary: '', ttrpcAddress: '',
      socketDir: '', debug: false, env: {},
    };
    assert.deepEqual(decodeClaim(encodeClaim(good)), good);
    for (const [key, what] of [['namespace', 'namespace'], ['id', 'container id'], ['group', 'group']] as const) {
      for (const value of BAD_IDS.filter((v) => v !== '')) {
        assert.throws(() => decodeClaim(encodeClaim({ ...good, [key]: value })), { message: `claim: ${identifierProblem(what, value)}` }, `${key} ${value.slice(0, 20)}`);
      }
      assert.throws(() => decodeClaim(encodeClaim({ ...good, [key]: '' })), { message: `claim: ${key} is required` });
    }
  });
});

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return false;
  }
}
