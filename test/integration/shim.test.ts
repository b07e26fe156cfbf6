// The shim binary driven the way containerd 1.6 drives it (start → ttrpc Task API → delete),
// with a real guest on the tcg backend. A fake containerd receives the events.
import * as assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fromAddress } from '../../shim/src/bootstrap/address';
import { TaskExecAdded, TaskExecStarted, TaskExit } from '../../shim/src/gen/containerd/events/task';
import { EventsDefinition, type Envelope } from '../../shim/src/gen/containerd/services/events/events';
import { DeleteResponse, TaskDefinition } from '../../shim/src/gen/containerd/task/v2/shim';
import { Status } from '../../shim/src/gen/containerd/types/task/task';
import { nullLogger } from '../../shim/src/log';
import { parseCgroupMounts } from '../../shim/src/vm/host-cgroup';
import { isSameProcessAlive, processStartTime } from '../../shim/src/util/proc';
import { TtrpcClient } from '../../shim/src/ttrpc/client';
import { TtrpcServer } from '../../shim/src/ttrpc/server';
import { defaultProcessSpec, makeBusyboxRootfs } from '../helpers/rootfs';
import { checkDaemonLogs } from '../helpers/daemon-log';
import { removeWorkDir } from '../helpers/work-dir';

const repo = path.resolve(__dirname, '..', '..', '..');
const shimBin = path.join(repo, 'bin', 'containerd-shim-smolvm-v1');

describe('shim binary with a real guest (tcg)', function () {
  this.timeout(120_000);
  // A daemon that logged an uncaught exception or unhandled rejection fails its test.
  const daemonLogs = checkDaemonLogs();
  let work: string;
  let events: Envelope[];
  let containerd: TtrpcServer;
  let env: NodeJS.ProcessEnv;
  const containerdAddress = () => path.join(work, 'containerd.sock');
  const vmDirs = (): string[] => {
    const dir = path.join(work, 'smolvm', 'run', 'vms');
    return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
  };

  before(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-shim-'));
    events = [];
    containerd = new TtrpcServer({ logger: nullLogger });
    containerd.register(EventsDefinition, { forward: async (req) => { events.push(req.envelope!); return {}; } });
    await containerd.listen(path.join(work, 'containerd.sock.ttrpc'));
    env = { ...process.env, TTRPC_ADDRESS: path.join(work, 'containerd.sock.ttrpc'), SMOLVM_ROOT: path.join(work, 'smolvm') };
  });

  after(async () => {
    // A failed test may leave its daemon waiting for a Shutdown that never came.
    for (const pid of shimDaemonsOf(work)) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    await containerd.close();
    await removeWorkDir(work);
  });

  function makeBundle(id: string, args: string[]): { bundle: string; fifos: Record<'stdin' | 'stdout' | 'stderr', string> } {
    const bundle = path.join(work, id);
    fs.mkdirSync(bundle);
    const rootfs = makeBusyboxRootfs(work);
    fs.renameSync(rootfs, path.join(bundle, 'rootfs'));
    fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(defaultProcessSpec(args)));
    execFileSync('mkfifo', [path.join(bundle, 'log')]);
    daemonLogs.watch(path.join(bundle, 'log'));
    const fifos = { stdin: path.join(bundle, 'stdin'), stdout: path.join(bundle, 'stdout'), stderr: path.join(bundle, 'stderr') };
    for (const f of Object.values(fifos)) execFileSync('mkfifo', [f]);
    return { bundle, fifos };
  }

  function startShim(id: string, bundle: string): string {
    const r = spawnSync(shimBin, ['-namespace', 'test', '-address', containerdAddress(), '-publish-binary', '/bin/false', '-id', id, 'start'],
      { cwd: bundle, env, input: Buffer.alloc(0), timeout: 15_000 });
    const out = Buffer.concat([r.stdout, r.stderr]).toString();
    assert.equal(r.status, 0, `start failed: ${out}`);
    assert.match(out, /^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/, 'start prints only the address');
    assert.equal(fs.readFileSync(path.join(bundle, 'address'), 'utf8'), out);
    const mode = fs.statSync(fromAddress(out)).mode & 0o777;
    assert.equal(mode, 0o600, 'socket mode');
    return out;
  }

  // FIFO readers still open when a test fails; closed afterwards so mocha can exit.
  const readers = new Set<net.Socket>();
  afterEach(() => {
    for (const sock of readers) sock.destroy();
    readers.clear();
  });

  function readAll(fifo: string): Promise<Buffer> {
    const fd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const sock = new net.Socket({ fd, readable: true, writable: false });
    readers.add(sock);
    const chunks: Buffer[] = [];
    sock.on('data', (c: Buffer) => chunks.push(c));
    return new Promise((resolve) => sock.once('end', () => { sock.destroy(); resolve(Buffer.concat(chunks)); }));
  }

  it('creates, starts, waits and deletes a container, with events in order', async () => {
    const id = 'c1';
    const { bundle, fifos } = makeBundle(id, ['sh', '-c', 'echo out; echo err >&2; uname -r; exit 7']);
    const address = startShim(id, bundle);
    const client = await TtrpcClient.connect(fromAddress(address));
    try {
      const stdout = readAll(fifos.stdout);
      const stderr = readAll(fifos.stderr);
      const created = await client.call(TaskDefinition, 'create', {
        id, bundle, rootfs: [], terminal: false, stdin: '', stdout: fifos.stdout, stderr: fifos.stderr,
        checkpoint: '', parentCheckpoint: '', options: undefined,
      });
      assert.ok(created.pid > 0);
      assert.ok(processStartTime(created.pid) !== null, 'the pid is a live host process (the VMM)');
      const state = await client.call(TaskDefinition, 'state', { id, execId: '' });
      assert.equal(state.status, Status.CREATED);
      await client.call(TaskDefinition, 'start', { id, execId: '' });
      const waited = await client.call(TaskDefinition, 'wait', { id, execId: '' });
      assert.equal(waited.exitStatus, 7);
      assert.ok((waited.exitedAt?.seconds ?? 0) > 0);
      const deleted = await client.call(TaskDefinition, 'delete', { id, execId: '' });
      assert.equal(deleted.exitStatus, 7);
      assert.equal(isSameProcessAlive({ pid: created.pid, startTime: processStartTime(created.pid) ?? 'gone' }), false, 'VMM gone after delete');
      // The daemon still holds the FIFOs' write ends until delete: now both streams end.
      const [out, err] = await Promise.all([stdout, stderr]);
      const lines = out.toString().trim().split('\n');
      assert.equal(lines[0], 'out');
      assert.notEqual(lines[1], os.release(), 'the guest kernel is not the host kernel');
      assert.equal(err.toString(), 'err\n');
      await client.call(TaskDefinition, 'shutdown', { id, now: false });
    } finally {
      client.close();
    }
    await waitFor(() => events.some((e) => e.topic === '/tasks/delete'), 5000);
    const topics = events.map((e) => e.topic);
    assert.deepEqual(topics, ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
    const exit = TaskExit.decode(events[2]!.event!.value);
    assert.equal(exit.id, id);
    assert.equal(exit.containerId, id);
    assert.equal(exit.exitStatus, 7);
    assert.equal(events[2]!.event!.typeUrl, 'containerd.events.TaskExit');
    assert.deepEqual(vmDirs(), [], 'no VM directory left');
    events.length = 0;
  });

  function readStreaming(fifo: string): { text: () => string; done: Promise<Buffer> } {
    const fd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const sock = new net.Socket({ fd, readable: true, writable: false });
    readers.add(sock);
    const chunks: Buffer[] = [];
    sock.on('data', (c: Buffer) => chunks.push(c));
    const done = new Promise<Buffer>((resolve) => sock.once('end', () => { sock.destroy(); resolve(Buffer.concat(chunks)); }));
    return { text: () => Buffer.concat(chunks).toString(), done };
  }

  function execFifos(bundle: string, execId: string): Record<'stdin' | 'stdout' | 'stderr', string> {
    const fifos = {
      stdin: path.join(bundle, `${execId}-stdin`), stdout: path.join(bundle, `${execId}-stdout`), stderr: path.join(bundle, `${execId}-stderr`),
    };
    for (const f of Object.values(fifos)) execFileSync('mkfifo', [f]);
    return fifos;
  }

  function processSpec(args: string[], extra: Record<string, unknown> = {}): { typeUrl: string; value: Buffer } {
    const spec = { args, env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin'], cwd: '/', user: { uid: 0, gid: 0 }, ...extra };
    return { typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/Process', value: Buffer.from(JSON.stringify(spec)) };
  }

  async function startedContainer(id: string, args: string[]): Promise<{ client: TtrpcClient; bundle: string; pid: number }> {
    const { bundle, fifos } = makeBundle(id, args);
    const address = startShim(id, bundle);
    const client = await TtrpcClient.connect(fromAddress(address));
    const created = await client.call(TaskDefinition, 'create', {
      id, bundle, rootfs: [], terminal: false, stdin: '', stdout: fifos.stdout, stderr: '',
      checkpoint: '', parentCheckpoint: '', options: undefined,
    });
    await client.call(TaskDefinition, 'start', { id, execId: '' });
    return { client, bundle, pid: created.pid };
  }

  async function finish(client: TtrpcClient, id: string): Promise<void> {
    try {
      const waiting = client.call(TaskDefinition, 'wait', { id, execId: '' });
      await client.call(TaskDefinition, 'kill', { id, execId: '', signal: 9, all: true }).catch(() => undefined);
      await waiting;
      await client.call(TaskDefinition, 'delete', { id, execId: '' });
      await client.call(TaskDefinition, 'shutdown', { id, now: false });
    } finally {
      client.close();
    }
  }

  it('execs into a running container: Exec, Start, Wait, State, Delete, with events in order', async () => {
    const id = 'cx';
    events.length = 0;
    const { client, bundle, pid } = await startedContainer(id, ['sleep', '1000']);
    try {
      const fifos = execFifos(bundle, 'x1');
      const stdout = readAll(fifos.stdout);
      const stderr = readAll(fifos.stderr);
      await client.call(TaskDefinition, 'exec', {
        id, execId: 'x1', terminal: false, stdin: '', stdout: fifos.stdout, stderr: fifos.stderr,
        spec: processSpec(['sh', '-c', 'echo "in $(hostname) as $FOO"; echo oops >&2; exit 4'], { env: ['FOO=x1', 'PATH=/bin'] }),
      });
      assert.equal((await client.call(TaskDefinition, 'state', { id, execId: 'x1' })).status, Status.CREATED);
      const started = await client.call(TaskDefinition, 'start', { id, execId: 'x1' });
      assert.equal(started.pid, pid, 'an exec reports the VMM pid too');
      const waited = await client.call(TaskDefinition, 'wait', { id, execId: 'x1' });
      assert.equal(waited.exitStatus, 4);
      const state = await client.call(TaskDefinition, 'state', { id, execId: 'x1' });
      assert.equal(state.status, Status.STOPPED);
      assert.equal(state.exitStatus, 4);
      assert.equal(state.execId, 'x1');
      const deleted = await client.call(TaskDefinition, 'delete', { id, execId: 'x1' });
      assert.equal(deleted.exitStatus, 4);
      assert.equal(deleted.pid, pid);
      const [out, err] = await Promise.all([stdout, stderr]);
      assert.equal(out.toString(), 'in test as x1\n');
      assert.equal(err.toString(), 'oops\n');
      await assert.rejects(client.call(TaskDefinition, 'state', { id, execId: 'x1' }), /not found/);
      // The container (and its VM) is untouched by the exec's delete.
      assert.equal((await client.call(TaskDefinition, 'state', { id, execId: '' })).status, Status.RUNNING);
      assert.equal(vmDirs().length, 1);
      // A bad spec, a duplicate, a missing binary: clear errors, nothing left.
      await assert.rejects(client.call(TaskDefinition, 'exec', {
        id, execId: 'bad', terminal: false, stdin: '', stdout: '', stderr: '', spec: { typeUrl: 'x', value: Buffer.from('{}') },
      }), (e: Error & { code?: number }) => e.code === 3 && /runtime-spec\/1\/Process/.test(e.message));
      await assert.rejects(client.call(TaskDefinition, 'exec', {
        id, execId: 'nobin', terminal: false, stdin: '', stdout: '', stderr: '', spec: processSpec(['/no/such/binary']),
      }), (e: Error & { code?: number }) => e.code === 5 && /no\/such\/binary/.test(e.message));
      await assert.rejects(client.call(TaskDefinition, 'state', { id, execId: 'nobin' }), /not found/);
    } finally {
      await finish(client, id);
    }
    await waitFor(() => events.some((e) => e.topic === '/tasks/delete'), 5000);
    const topics = events.map((e) => e.topic);
    assert.deepEqual(topics, ['/tasks/create', '/tasks/start', '/tasks/exec-added', '/tasks/exec-started', '/tasks/exit', '/tasks/exit', '/tasks/delete']);
    const added = TaskExecAdded.decode(events[2]!.event!.value);
    assert.deepEqual({ ...added }, { containerId: id, execId: 'x1' });
    const execStarted = TaskExecStarted.decode(events[3]!.event!.value);
    assert.equal(execStarted.pid, pid);
    const execExit = TaskExit.decode(events[4]!.event!.value);
    assert.equal(execExit.id, 'x1');
    assert.equal(execExit.containerId, id);
    assert.equal(execExit.exitStatus, 4);
    assert.equal(TaskExit.decode(events[5]!.event!.value).id, id);
    assert.deepEqual(vmDirs(), []);
    events.length = 0;
  });

  it('runs two execs at once with separate output and exit codes; Pids lists them; Kill all', async () => {
    const id = 'cx2';
    const { client, bundle } = await startedContainer(id, ['sleep', '1000']);
    try {
      const ids = ['a', 'b'];
      const fifos = ids.map((x) => execFifos(bundle, x));
      const outputs = fifos.map((f) => readAll(f.stdout));
      for (const [i, x] of ids.entries()) {
        await client.call(TaskDefinition, 'exec', {
          id, execId: x, terminal: false, stdin: '', stdout: fifos[i]!.stdout, stderr: '',
          spec: processSpec(['sh', '-c', `sleep 1; echo from-${x}; exit ${20 + i}`]),
        });
      }
      await Promise.all(ids.map((x) => client.call(TaskDefinition, 'start', { id, execId: x })));
      const pids = await client.call(TaskDefinition, 'pids', { id });
      assert.ok(pids.processes.length >= 3, `init + 2 execs: ${JSON.stringify(pids.processes)}`);
      const waited = await Promise.all(ids.map((x) => client.call(TaskDefinition, 'wait', { id, execId: x })));
      assert.deepEqual(waited.map((w) => w.exitStatus), [20, 21]);
      for (const x of ids) await client.call(TaskDefinition, 'delete', { id, execId: x });
      const texts = (await Promise.all(outputs)).map((b) => b.toString());
      assert.deepEqual(texts, ['from-a\n', 'from-b\n']);

      // Kill all: an exec still running dies with the container.
      await client.call(TaskDefinition, 'exec', {
        id, execId: 'long', terminal: false, stdin: '', stdout: '', stderr: '', spec: processSpec(['sleep', '1000']),
      });
      await client.call(TaskDefinition, 'start', { id, execId: 'long' });
      await assert.rejects(client.call(TaskDefinition, 'delete', { id, execId: 'long' }), /kill it first/);
      const execWait = client.call(TaskDefinition, 'wait', { id, execId: 'long' });
      const initWait = client.call(TaskDefinition, 'wait', { id, execId: '' });
      await client.call(TaskDefinition, 'kill', { id, execId: '', signal: 9, all: true });
      assert.equal((await execWait).exitStatus, 137);
      assert.equal((await initWait).exitStatus, 137);
      await assert.rejects(client.call(TaskDefinition, 'exec', {
        id, execId: 'late', terminal: false, stdin: '', stdout: '', stderr: '', spec: processSpec(['true']),
      }), (e: Error & { code?: number }) => e.code === 9 && /stopped/.test(e.message));
    } finally {
      await finish(client, id);
    }
  });

  it('feeds an exec its own stdin; CloseIO with the exec id ends it', async () => {
    const id = 'cxi';
    const { client, bundle } = await startedContainer(id, ['sleep', '1000']);
    try {
      const fifos = execFifos(bundle, 'cat');
      const stdout = readAll(fifos.stdout);
      const stdinWriter = fs.openSync(fifos.stdin, fs.constants.O_RDWR);
      await client.call(TaskDefinition, 'exec', {
        id, execId: 'cat', terminal: false, stdin: fifos.stdin, stdout: fifos.stdout, stderr: '',
        spec: processSpec(['sh', '-c', 'cat; echo "eof seen"']),
      });
      await client.call(TaskDefinition, 'start', { id, execId: 'cat' });
      fs.writeSync(stdinWriter, 'line for the exec\n');
      await new Promise((r) => setTimeout(r, 500));
      await client.call(TaskDefinition, 'closeIO', { id, execId: 'cat', stdin: true });
      const waited = await client.call(TaskDefinition, 'wait', { id, execId: 'cat' });
      assert.equal(waited.exitStatus, 0);
      await client.call(TaskDefinition, 'delete', { id, execId: 'cat' });
      fs.closeSync(stdinWriter);
      assert.equal((await stdout).toString(), 'line for the exec\neof seen\n');
    } finally {
      await finish(client, id);
    }
  });

  it('gives a terminal exec a pty (stderr empty) and resizes it', async () => {
    const id = 'cxt';
    const { client, bundle } = await startedContainer(id, ['sleep', '1000']);
    try {
      const fifos = execFifos(bundle, 't');
      const stdout = readStreaming(fifos.stdout);
      const stdinWriter = fs.openSync(fifos.stdin, fs.constants.O_RDWR);
      await client.call(TaskDefinition, 'exec', {
        id, execId: 't', terminal: true, stdin: fifos.stdin, stdout: fifos.stdout, stderr: '',
        spec: processSpec(['sh', '-c', 'stty size; read line; stty size; echo err >&2; exit 6'], { terminal: true, consoleSize: { height: 25, width: 81 } }),
      });
      await client.call(TaskDefinition, 'start', { id, execId: 't' });
      await waitFor(() => /25 81\r\n/.test(stdout.text()), 20_000);
      await client.call(TaskDefinition, 'resizePty', { id, execId: 't', width: 132, height: 43 });
      fs.writeSync(stdinWriter, 'go\n');
      const waited = await client.call(TaskDefinition, 'wait', { id, execId: 't' });
      assert.equal(waited.exitStatus, 6);
      await client.call(TaskDefinition, 'delete', { id, execId: 't' });
      fs.closeSync(stdinWriter);
      const text = (await stdout.done).toString();
      assert.match(text, /^25 81\r\n/);
      assert.match(text, /43 132\r\n/);
      assert.match(text, /err\r\n/, 'stderr goes to the pty');
      await assert.rejects(client.call(TaskDefinition, 'resizePty', { id, execId: '', width: 1, height: 1 }),
        (e: Error & { code?: number }) => e.code === 9 && /no terminal/.test(e.message));
    } finally {
      await finish(client, id);
    }
  });

  it('kills a running container: Wait reports 128+signal', async () => {
    const id = 'ck';
    const { bundle, fifos } = makeBundle(id, ['sleep', '1000']);
    const address = startShim(id, bundle);
    const client = await TtrpcClient.connect(fromAddress(address));
    try {
      await client.call(TaskDefinition, 'create', {
        id, bundle, rootfs: [], terminal: false, stdin: '', stdout: fifos.stdout, stderr: '',
        checkpoint: '', parentCheckpoint: '', options: undefined,
      });
      await client.call(TaskDefinition, 'start', { id, execId: '' });
      await assert.rejects(client.call(TaskDefinition, 'delete', { id, execId: '' }), /running/);
      const waiting = client.call(TaskDefinition, 'wait', { id, execId: '' });
      await client.call(TaskDefinition, 'kill', { id, execId: '', signal: 9, all: false });
      assert.equal((await waiting).exitStatus, 137);
      const state = await client.call(TaskDefinition, 'state', { id, execId: '' });
      assert.equal(state.status, Status.STOPPED);
      await client.call(TaskDefinition, 'delete', { id, execId: '' });
      await assert.rejects(client.call(TaskDefinition, 'state', { id, execId: '' }), /not found/);
      await client.call(TaskDefinition, 'shutdown', { id, now: false });
    } finally {
      client.close();
    }
  });

  it('delete tears the VM down from disk state after the daemon was killed', async () => {
    const id = 'c2';
    const { bundle, fifos } = makeBundle(id, ['sleep', '1000']);
    // The VMM goes into the spec's host cgroup; delete must remove it from the state file too.
    const cgroupParent = `smolvm-shimtest-${process.pid}`;
    const spec = JSON.parse(fs.readFileSync(path.join(bundle, 'config.json'), 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ ...spec, linux: { cgroupsPath: `/${cgroupParent}/${id}` } }));
    const cgroupDirs = parseCgroupMounts(fs.readFileSync('/proc/self/mountinfo', 'utf8')).map((m) => path.join(m.mountPoint, cgroupParent));
    const address = startShim(id, bundle);
    const client = await TtrpcClient.connect(fromAddress(address));
    const created = await client.call(TaskDefinition, 'create', {
      id, bundle, rootfs: [], terminal: false, stdin: '', stdout: fifos.stdout, stderr: '',
      checkpoint: '', parentCheckpoint: '', options: undefined,
    });
    await client.call(TaskDefinition, 'start', { id, execId: '' });
    const connect = await client.call(TaskDefinition, 'connect', { id });
    client.close();
    const vmm = { pid: created.pid, startTime: processStartTime(created.pid)! };
    assert.match(fs.readFileSync(`/proc/${created.pid}/cgroup`, 'utf8'), new RegExp(`/${cgroupParent}/${id}$`, 'm'), 'the VMM is in the spec cgroup');
    process.kill(connect.shimPid, 'SIGKILL');
    const r = spawnSync(shimBin, ['-namespace', 'test', '-address', containerdAddress(), '-publish-binary', '/bin/false', '-id', id, '-bundle', bundle, 'delete'],
      { cwd: bundle, env, timeout: 15_000 });
    assert.equal(r.status, 0, r.stderr.toString());
    const resp = DeleteResponse.decode(r.stdout);
    assert.equal(resp.exitStatus, 137);
    assert.equal(resp.pid, created.pid);
    assert.ok((resp.exitedAt?.seconds ?? 0) > 0);
    assert.equal(isSameProcessAlive(vmm), false, 'VMM killed by delete');
    assert.deepEqual(cgroupDirs.filter((d) => fs.existsSync(d)), [], 'host cgroups removed by delete');
    assert.deepEqual(vmDirs(), []);
    assert.deepEqual(fs.readdirSync(path.join(work, 'smolvm', 'run', 'tasks', 'test')), []);
  });

  it('rejects a malformed config.json with InvalidArgument and leaves nothing behind', async () => {
    const id = 'cbad';
    const { bundle, fifos } = makeBundle(id, ['true']);
    fs.writeFileSync(path.join(bundle, 'config.json'), '{"ociVersion": "1.0.2", "process": {"args": []');
    const address = startShim(id, bundle);
    const client = await TtrpcClient.connect(fromAddress(address));
    try {
      await assert.rejects(client.call(TaskDefinition, 'create', {
        id, bundle, rootfs: [], terminal: false, stdin: '', stdout: fifos.stdout, stderr: '',
        checkpoint: '', parentCheckpoint: '', options: undefined,
      }), (err: Error & { code?: number }) => err.code === 3 && /config\.json is not valid JSON/.test(err.message));
      assert.deepEqual(vmDirs(), []);
      assert.equal(fs.existsSync(path.join(work, 'smolvm', 'run', 'tasks', 'test', `${id}.json`)), false);
      await client.call(TaskDefinition, 'shutdown', { id, now: false });
    } finally {
      client.close();
    }
  });

  it('rejects an unsupported rootfs mount type, naming it', async () => {
    const id = 'cmnt';
    const { bundle, fifos } = makeBundle(id, ['true']);
    const address = startShim(id, bundle);
    const client = await TtrpcClient.connect(fromAddress(address));
    try {
      await assert.rejects(client.call(TaskDefinition, 'create', {
        id, bundle, rootfs: [{ type: 'nfs', source: 'x:/y', target: '', options: [] }], terminal: false, stdin: '',
        stdout: fifos.stdout, stderr: '', checkpoint: '', parentCheckpoint: '', options: undefined,
      }), (err: Error & { code?: number }) => err.code === 3 && /nfs/.test(err.message));
      assert.deepEqual(vmDirs(), []);
      await client.call(TaskDefinition, 'shutdown', { id, now: false });
    } finally {
      client.close();
    }
  });

  it('fails Create clearly for a missing binary and leaves nothing behind', async () => {
    const id = 'c3';
    const { bundle, fifos } = makeBundle(id, ['/no/such/binary']);
    const address = startShim(id, bundle);
    const client = await TtrpcClient.connect(fromAddress(address));
    try {
      const started = Date.now();
      await assert.rejects(client.call(TaskDefinition, 'create', {
        id, bundle, rootfs: [], terminal: false, stdin: '', stdout: fifos.stdout, stderr: fifos.stderr,
        checkpoint: '', parentCheckpoint: '', options: undefined,
      }), /no\/such\/binary/);
      assert.ok(Date.now() - started < 30_000);
      assert.deepEqual(vmDirs(), []);
      await client.call(TaskDefinition, 'shutdown', { id, now: false });
    } finally {
      client.close();
    }
  });
});

/** Shim daemons whose -address lies in `dir` (this test run's fake containerd). */
function shimDaemonsOf(dir: string): number[] {
  return fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p)).flatMap((p) => {
    try {
      const argv = fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      return argv.some((a) => a.includes('containerd-shim-smolvm-v1')) && argv.some((a) => a.startsWith(dir)) ? [Number(p)] : [];
    } catch {
      return [];
    }
  });
}

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
