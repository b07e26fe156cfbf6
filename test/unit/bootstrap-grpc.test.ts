// The daemon's one socket for every containerd version: task v3 over gRPC (grpc-js) and task
// v2/v3 over ttrpc, told apart by the first byte, all served by one handler object.
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { socketAnswers } from '../../shim/src/bootstrap/address';
import { Code, RpcError, notFound } from '../../shim/src/errdefs';
import { TaskDefinition } from '../../shim/src/gen/containerd/task/v2/shim';
import { TaskDefinition as TaskV3Definition } from '../../shim/src/gen/containerd/task/v3/shim';
import { Status } from '../../shim/src/gen/containerd/types/task/task';
import { GrpcClient } from '../../shim/src/grpc/client';
import { TaskEndpoint, type TaskHandlers } from '../../shim/src/grpc/endpoint';
import { nullLogger } from '../../shim/src/log';
import { TtrpcClient } from '../../shim/src/ttrpc/client';
import type { CallContext } from '../../shim/src/ttrpc/service';

describe('task endpoint: ttrpc and gRPC on one socket', () => {
  let dir: string;
  let socket: string;
  let endpoint: TaskEndpoint;
  let contexts: CallContext[];
  let waitCanceled: Promise<unknown>;
  let releaseWait: () => void;

  const handlers: TaskHandlers = {
    connect: async (req, ctx) => { contexts.push(ctx); return { shimPid: process.pid, taskPid: 7, version: `${ctx.service} ${req.id}` }; },
    state: async (req) => {
      if (req.id !== 'c1') throw notFound(`container ${req.id} not found`);
      return { id: 'c1', bundle: '/b', pid: 7, status: Status.RUNNING, stdin: '', stdout: '', stderr: '', terminal: false, exitStatus: 0, exitedAt: undefined, execId: req.execId };
    },
    kill: async () => { throw new Error('plain failure'); },
    wait: (req, ctx) => {
      contexts.push(ctx);
      waitCanceled = new Promise((resolve) => ctx.signal.addEventListener('abort', () => resolve(ctx.signal.reason), { once: true }));
      return new Promise((resolve) => { releaseWait = () => resolve({ exitStatus: req.id.length, exitedAt: { seconds: 1, nanos: 2 } }); });
    },
  };

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-ep-'));
    socket = path.join(dir, 's');
    contexts = [];
    endpoint = new TaskEndpoint({ logger: nullLogger });
    endpoint.registerTask(handlers);
    await endpoint.listen(socket);
  });

  afterEach(async () => {
    await endpoint.close({ timeoutMs: 100 });
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('serves task v3 over gRPC and task v2/v3 over ttrpc, from the same handlers, mode 0600', async () => {
    assert.equal(fs.statSync(socket).mode & 0o777, 0o600);
    const grpc = await GrpcClient.connect(socket);
    const ttrpc = await TtrpcClient.connect(socket);
    try {
      assert.equal((await grpc.call(TaskV3Definition, 'connect', { id: 'a' })).version, 'containerd.task.v3.Task a');
      assert.equal((await ttrpc.call(TaskDefinition, 'connect', { id: 'b' })).version, 'containerd.task.v2.Task b');
      assert.equal((await ttrpc.call(TaskV3Definition, 'connect', { id: 'c' })).version, 'containerd.task.v3.Task c');
      const state = await grpc.call(TaskV3Definition, 'state', { id: 'c1', execId: 'e' });
      assert.equal(state.status, Status.RUNNING);
      assert.equal(state.execId, 'e');
      // Many calls at once on one HTTP/2 connection.
      const many = await Promise.all(Array.from({ length: 50 }, (_, i) => grpc.call(TaskV3Definition, 'connect', { id: String(i) })));
      assert.deepEqual(many.map((r) => r.version.split(' ')[1]), Array.from({ length: 50 }, (_, i) => String(i)));
    } finally {
      grpc.close();
      ttrpc.close();
    }
  });

  it('carries errdefs codes as gRPC status codes, and answers Unimplemented for the rest', async () => {
    const grpc = await GrpcClient.connect(socket);
    try {
      await assert.rejects(grpc.call(TaskV3Definition, 'state', { id: 'nope', execId: '' }), (err: unknown) =>
        err instanceof RpcError && err.code === Code.NotFound && err.message === 'container nope not found');
      await assert.rejects(grpc.call(TaskV3Definition, 'kill', { id: 'c1', execId: '', signal: 9, all: false }), (err: unknown) =>
        err instanceof RpcError && err.code === Code.Unknown && /plain failure/.test(err.message));
      await assert.rejects(grpc.call(TaskV3Definition, 'pids', { id: 'c1' }), (err: unknown) =>
        err instanceof RpcError && err.code === Code.Unimplemented);
    } finally {
      grpc.close();
    }
  });

  it('gives handlers the deadline and metadata, and aborts them when the client gives up', async () => {
    const grpc = await GrpcClient.connect(socket);
    try {
      const before = Date.now();
      await grpc.call(TaskV3Definition, 'connect', { id: 'x' }, { timeoutMs: 60_000, metadata: { 'containerd-namespace': 'k8s.io' } });
      const ctx = contexts.at(-1)!;
      assert.ok(ctx.deadline !== undefined && ctx.deadline >= before + 59_000 && ctx.deadline <= Date.now() + 60_000, 'deadline');
      assert.deepEqual(ctx.metadata.get('containerd-namespace'), ['k8s.io']);
      await assert.rejects(grpc.call(TaskV3Definition, 'wait', { id: 'c1', execId: '' }, { timeoutMs: 200 }), (err: unknown) =>
        err instanceof RpcError && err.code === Code.DeadlineExceeded);
      const reason = await waitCanceled;
      assert.ok(reason instanceof RpcError && reason.code === Code.Canceled);
      releaseWait();
    } finally {
      grpc.close();
    }
  });

  it('shrugs off probes and garbage: a connect without data, a reset, a bogus frame', async () => {
    assert.equal(await socketAnswers(socket), true);
    const garbage = net.connect(socket);
    await new Promise((resolve) => garbage.once('connect', resolve));
    garbage.write(Buffer.alloc(16, 0xff));
    await new Promise((resolve) => setTimeout(resolve, 50));
    garbage.resetAndDestroy();
    const grpc = await GrpcClient.connect(socket);
    try {
      assert.equal((await grpc.call(TaskV3Definition, 'connect', { id: 'still' })).taskPid, 7);
    } finally {
      grpc.close();
    }
  });

  it('close() ends calls in flight after the grace period, stops accepting and removes the socket', async () => {
    const grpc = await GrpcClient.connect(socket);
    try {
      const waiting = grpc.call(TaskV3Definition, 'wait', { id: 'c1', execId: '' }).then(() => undefined, (err: unknown) => err);
      await new Promise((resolve) => setTimeout(resolve, 50));
      const started = Date.now();
      await endpoint.close({ timeoutMs: 200 });
      assert.ok(Date.now() - started < 2000, 'close does not hang on a Wait');
      const err = await waiting;
      assert.ok(err instanceof RpcError && (err.code === Code.Unavailable || err.code === Code.Canceled), String(err));
      assert.equal(fs.existsSync(socket), false);
      assert.equal(await socketAnswers(socket), false);
      releaseWait();
    } finally {
      grpc.close();
    }
  });

  it('loads grpc-js only when a gRPC client connects', () => {
    const dist = path.resolve(__dirname, '..', '..');
    const script = `
      const { TaskEndpoint } = require(${JSON.stringify(path.join(dist, 'shim/src/grpc/endpoint.js'))});
      const e = new TaskEndpoint(); e.registerTask({});
      console.log(JSON.stringify(Object.keys(require.cache).filter((f) => f.includes('@grpc'))));`;
    assert.deepEqual(JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })), []);
  });
});
