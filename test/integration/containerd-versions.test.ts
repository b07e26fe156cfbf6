// The shim binary bootstrapped the way containerd 1.7, 2.0-2.2 and 2.3+ do it (only 1.6 runs
// on this machine, see shim.test.ts), then driven over the transport each answer selects:
// task v2 over ttrpc (1.7), task v3 over gRPC (2.x). A real container in a real tcg VM each
// time, events to a fake containerd's ttrpc Events/Forward, and nothing left behind.
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fromAddress } from '../../shim/src/bootstrap/address';
import { TaskExit } from '../../shim/src/gen/containerd/events/task';
import { BootstrapResult } from '../../shim/src/gen/containerd/bootstrap/v1/bootstrap';
import { EventsDefinition, type Envelope } from '../../shim/src/gen/containerd/services/events/events';
import { Status } from '../../shim/src/gen/containerd/types/task/task';
import { nullLogger } from '../../shim/src/log';
import { TtrpcServer } from '../../shim/src/ttrpc/server';
import { isSameProcessAlive, processStartTime } from '../../shim/src/util/proc';
import {
  connectTask, makeFakeContainerdBinary, startAs, type ContainerdVersion, type ShimConnection, type StartCall,
} from '../helpers/containerd-caller';
import { defaultProcessSpec, makeBusyboxRootfs } from '../helpers/rootfs';
import { checkDaemonLogs } from '../helpers/daemon-log';
import { removeWorkDir } from '../helpers/work-dir';

const repo = path.resolve(__dirname, '..', '..', '..');
const shimBin = path.join(repo, 'bin', 'containerd-shim-smolvm-v1');

describe('containerd 1.7 and 2.x bootstraps, then the task API over their transport (tcg)', function () {
  this.timeout(180_000);
  // A daemon that logged an uncaught exception or unhandled rejection fails its test.
  const daemonLogs = checkDaemonLogs();
  let work: string;
  let events: Envelope[];
  let containerd: TtrpcServer;
  let containerd1: string;
  let containerd2: string;
  const readers = new Set<net.Socket>();
  const ttrpcAddress = (): string => path.join(work, 'containerd.sock.ttrpc');
  const vmDirs = (): string[] => {
    const dir = path.join(work, 'smolvm', 'run', 'vms');
    return fs.existsSync(dir) ? fs.readdirSync(dir) : [];
  };

  before(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-ver-'));
    events = [];
    containerd = new TtrpcServer({ logger: nullLogger });
    containerd.register(EventsDefinition, { forward: async (req) => { events.push(req.envelope!); return {}; } });
    await containerd.listen(ttrpcAddress());
    // Stand-ins for containerd's binary (-publish-binary): `start` reads their Go build info.
    containerd1 = path.join(work, 'containerd-1.7');
    containerd2 = path.join(work, 'containerd-2.1');
    makeFakeContainerdBinary(containerd1, 'github.com/containerd/containerd/cmd/containerd');
    makeFakeContainerdBinary(containerd2, 'github.com/containerd/containerd/v2/cmd/containerd');
  });

  afterEach(() => {
    for (const sock of readers) sock.destroy();
    readers.clear();
  });

  after(async () => {
    for (const pid of shimDaemonsOf(work)) {
      try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
    }
    await containerd.close();
    await removeWorkDir(work);
  });

  function makeBundle(id: string, args: string[], annotations: Record<string, string> = {}): { bundle: string; stdout: string } {
    const bundle = path.join(work, id);
    fs.mkdirSync(bundle);
    fs.renameSync(makeBusyboxRootfs(work), path.join(bundle, 'rootfs'));
    fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ ...defaultProcessSpec(args), annotations }));
    execFileSync('mkfifo', [path.join(bundle, 'log'), path.join(bundle, 'stdout')]);
    daemonLogs.watch(path.join(bundle, 'log'));
    return { bundle, stdout: path.join(bundle, 'stdout') };
  }

  function readAll(fifo: string): Promise<Buffer> {
    const fd = fs.openSync(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    const sock = new net.Socket({ fd, readable: true, writable: false });
    readers.add(sock);
    const chunks: Buffer[] = [];
    sock.on('data', (c: Buffer) => chunks.push(c));
    return new Promise((resolve) => sock.once('end', () => { sock.destroy(); resolve(Buffer.concat(chunks)); }));
  }

  function call(id: string, bundle: string, publishBinary: string, extra: Partial<StartCall> = {}): StartCall {
    return {
      shimBin, id, namespace: 'ns1', bundle, containerdAddress: path.join(work, 'containerd.sock'),
      ttrpcAddress: ttrpcAddress(), publishBinary, env: { SMOLVM_ROOT: path.join(work, 'smolvm') }, ...extra,
    };
  }

  /** Create → State → Start → Wait → Delete → Shutdown, as containerd's task manager does. */
  async function runLifecycle(version: ContainerdVersion, id: string, bundle: string, stdoutFifo: string, connection: ShimConnection, transport: string): Promise<void> {
    const before = events.length;
    const stdout = readAll(stdoutFifo);
    const client = await connectTask(connection);
    assert.equal(client.description, transport);
    try {
      const created = await client.call('create', {
        id, bundle, rootfs: [], terminal: false, stdin: '', stdout: stdoutFifo, stderr: '',
        checkpoint: '', parentCheckpoint: '', options: undefined,
      });
      assert.ok(processStartTime(created.pid) !== null, 'the pid is the live VMM');
      assert.equal((await client.call('state', { id, execId: '' })).status, Status.CREATED);
      await client.call('start', { id, execId: '' });
      const waited = await client.call('wait', { id, execId: '' });
      assert.equal(waited.exitStatus, 3);
      const deleted = await client.call('delete', { id, execId: '' }, { timeoutMs: 30_000 });
      assert.equal(deleted.exitStatus, 3);
      assert.equal(isSameProcessAlive({ pid: created.pid, startTime: processStartTime(created.pid) ?? 'gone' }), false, 'VMM gone');
      assert.equal((await stdout).toString(), `out from ${version}\n`);
      await client.call('shutdown', { id, now: false }, { timeoutMs: 10_000 });
    } finally {
      client.close();
    }
    await waitFor(() => !fs.existsSync(fromAddress(connection.address)), 10_000);
    await waitFor(() => events.length - before >= 4, 10_000);
    const mine = events.slice(before);
    assert.deepEqual(mine.map((e) => e.topic), ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete']);
    assert.ok(mine.every((e) => e.namespace === 'ns1' && (e.timestamp?.seconds ?? 0) > 0));
    const exit = TaskExit.decode(mine[2]!.event!.value);
    assert.deepEqual([exit.containerId, exit.id, exit.exitStatus], [id, id, 3]);
    assert.deepEqual(vmDirs(), [], 'no VM directory left');
    // The daemon exits once Shutdown has been answered and its connections are closed.
    await waitFor(() => shimDaemonsOf(work).filter((pid) => isDaemonFor(pid, id)).length === 0, 5000);
  }

  it('1.7: answers {"version":2,"protocol":"ttrpc"} and serves task v2 over ttrpc', async () => {
    const id = 'v17';
    const { bundle, stdout } = makeBundle(id, ['sh', '-c', 'echo out from 1.7; exit 3']);
    const started = startAs('1.7', call(id, bundle, containerd1));
    assert.deepEqual(JSON.parse(started.output.toString()), { version: 2, address: started.connection.address, protocol: 'ttrpc' });
    assert.match(started.connection.address, /^unix:\/\/\/run\/containerd\/s\/[0-9a-f]{64}$/);
    assert.equal(fs.readFileSync(path.join(bundle, 'address'), 'utf8'), started.connection.address);
    await runLifecycle('1.7', id, bundle, stdout, started.connection, 'containerd.task.v2.Task over ttrpc');
  });

  it('2.0-2.2: answers {"version":3,"protocol":"grpc"} and serves task v3 over gRPC; a 1.7-style start reuses the daemon over ttrpc', async () => {
    const id = 'v20';
    const group = 'pod-v20';
    const { bundle, stdout } = makeBundle(id, ['sh', '-c', 'echo out from 2.0; exit 3'], { 'io.kubernetes.cri.sandbox-id': group });
    const started = startAs('2.0', call(id, bundle, containerd2));
    assert.deepEqual(JSON.parse(started.output.toString()), { version: 3, address: started.connection.address, protocol: 'grpc' });

    // Another container of the pod, started by a caller that only takes version 2: same daemon.
    const sibling = makeBundle('v20-sibling', ['true'], { 'io.kubernetes.cri.sandbox-id': group });
    const again = startAs('1.7', call('v20-sibling', sibling.bundle, containerd1));
    assert.deepEqual(again.connection, { version: 2, address: started.connection.address, protocol: 'ttrpc' });
    const overTtrpc = await connectTask(again.connection);
    try {
      const connected = await overTtrpc.call('connect', { id });
      assert.ok(connected.shimPid > 0);
      await assert.rejects(overTtrpc.call('state', { id, execId: '' }), /not found|no such/i);
    } finally {
      overTtrpc.close();
    }

    await runLifecycle('2.0', id, bundle, stdout, started.connection, 'containerd.task.v3.Task over grpc');
  });

  it('2.3+: reads BootstrapParams on stdin, answers a BootstrapResult, serves task v3 over gRPC in socket_dir', async () => {
    const id = 'v23';
    const { bundle, stdout } = makeBundle(id, ['sh', '-c', 'echo out from 2.3; exit 3']);
    const socketDir = path.join(work, 's');
    const started = startAs('2.3', call(id, bundle, containerd2, {
      socketDir,
      runtimeOptions: { typeUrl: 'runtimeoptions.v1.Options', value: Buffer.alloc(0) },
    }));
    const result = BootstrapResult.decode(started.output);
    assert.deepEqual(result, { version: 3, address: started.connection.address, protocol: 'grpc', capabilities: [], metadata: {} });
    assert.equal(path.dirname(fromAddress(result.address)), socketDir, 'the socket is in socket_dir');
    assert.equal(fs.statSync(fromAddress(result.address)).mode & 0o777, 0o600);
    await runLifecycle('2.3', id, bundle, stdout, started.connection, 'containerd.task.v3.Task over grpc');
  });

  it('fails fast with a clear error, leaving nothing behind, on a malformed SMOLVM_SHIM_PROTOCOL', () => {
    const id = 'bad-env';
    const { bundle } = makeBundle(id, ['true']);
    assert.throws(() => startAs('1.7', call(id, bundle, containerd1, { env: { SMOLVM_ROOT: path.join(work, 'smolvm'), SMOLVM_SHIM_PROTOCOL: 'quic' } })),
      /SMOLVM_SHIM_PROTOCOL="quic": want ttrpc, grpc or auto/);
    assert.equal(fs.existsSync(path.join(bundle, 'address')), false);
    assert.deepEqual(shimDaemonsOf(work).filter((pid) => isDaemonFor(pid, id)), []);
  });
});

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

function isDaemonFor(pid: number, id: string): boolean {
  try {
    const argv = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return argv.includes('daemon') && argv[argv.indexOf('-id') + 1] === id;
  } catch {
    return false;
  }
}

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}
