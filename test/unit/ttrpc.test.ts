import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { Code, RpcError, notFound } from '../../shim/src/errdefs';
import { TaskDefinition } from '../../shim/src/gen/containerd/task/v2/shim';
import { Request, Response } from '../../shim/src/gen/ttrpc/ttrpc';
import type { Logger } from '../../shim/src/log';
import {
  encodeFrame,
  Frame,
  FrameDecoder,
  FrameType,
  MAX_FRAME_PAYLOAD,
  TtrpcClient,
  TtrpcServer,
  type CallContext,
  type ServiceImpl,
} from '../../shim/src/ttrpc';

/** Collects log lines so tests can assert that failures were logged clearly. */
class MemoryLogger implements Logger {
  readonly lines: string[] = [];
  debug(): void {}
  info(msg: string): void { this.lines.push(`info ${msg}`); }
  warn(msg: string): void { this.lines.push(`warn ${msg}`); }
  error(msg: string): void { this.lines.push(`error ${msg}`); }
  child(): Logger { return this; }
}

/** A hand-driven peer for sending arbitrary bytes and reading raw frames back. */
class RawPeer {
  private readonly decoder = new FrameDecoder();
  private readonly queue: Frame[] = [];
  private waiters: Array<(f: Frame) => void> = [];
  readonly closed: Promise<void>;

  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      for (const item of this.decoder.push(chunk)) {
        if (item.kind !== 'frame') continue;
        const waiter = this.waiters.shift();
        if (waiter) waiter(item.frame);
        else this.queue.push(item.frame);
      }
    });
    this.closed = new Promise((resolve) => socket.on('close', () => resolve()));
    socket.on('error', () => undefined);
  }

  static connect(socketPath: string): Promise<RawPeer> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(socketPath, () => resolve(new RawPeer(socket)));
      socket.once('error', reject);
    });
  }

  write(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  request(streamId: number, service: string, method: string, payload: Uint8Array = Buffer.alloc(0)): void {
    const body = Request.encode({ service, method, payload: Buffer.from(payload), timeoutNano: 0, metadata: [] }).finish();
    this.write(encodeFrame(streamId, FrameType.Request, 0, body));
  }

  next(timeoutMs = 2000): Promise<Frame> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no frame arrived')), timeoutMs);
      this.waiters.push((f) => {
        clearTimeout(timer);
        resolve(f);
      });
    });
  }

  async nextResponse(): Promise<{ streamId: number; code: number; message: string; payload: Buffer }> {
    const frame = await this.next();
    assert.equal(frame.type, FrameType.Response);
    const response = Response.decode(frame.payload);
    return { streamId: frame.streamId, code: response.status?.code ?? 0, message: response.status?.message ?? '', payload: response.payload };
  }
}

const statePayload = (id: string): Uint8Array => TaskDefinition.methods.state.requestType.encode({ id, execId: '' }).finish();

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

async function rejectsWithCode(promise: Promise<unknown>, code: Code, message?: RegExp): Promise<RpcError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof RpcError, `expected RpcError, got ${String(err)}`);
    assert.equal(err.code, code, `code ${err.code} (${err.message})`);
    if (message) assert.match(err.message, message);
    return err;
  }
  assert.fail('expected a rejection');
}

describe('ttrpc server and client', function () {
  this.timeout(10_000);
  let dir: string;
  let socketPath: string;
  let server: TtrpcServer;
  let logger: MemoryLogger;
  let clients: TtrpcClient[];
  let waitRelease: { promise: Promise<void>; resolve: () => void };
  let lastCtx: CallContext | undefined;

  const impl: Partial<ServiceImpl<typeof TaskDefinition>> = {
    async state(req, ctx) {
      lastCtx = ctx;
      if (req.id === 'missing') throw notFound(`container ${req.id}: not found`);
      if (req.id === 'boom') throw new Error('kaboom');
      if (req.id === 'big') {
        return TaskDefinition.methods.state.responseType.fromPartial({ id: 'x'.repeat(MAX_FRAME_PAYLOAD) });
      }
      if (req.id === 'slow') {
        // Waits for its deadline and reports it, as a Go handler returning ctx.Err() would.
        await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve, { once: true }));
        throw ctx.signal.reason;
      }
      return TaskDefinition.methods.state.responseType.fromPartial({ id: req.id, pid: 42, bundle: `/b/${req.id}` });
    },
    async wait() {
      await waitRelease.promise;
      return { exitStatus: 7, exitedAt: { seconds: 1_700_000_000, nanos: 5 } };
    },
    async kill(req) {
      if (req.signal === 9) waitRelease.resolve();
      return {};
    },
    async connect(req, ctx) {
      lastCtx = ctx;
      return { shimPid: process.pid, taskPid: 1, version: req.id };
    },
  };

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ttrpc-test-'));
    socketPath = path.join(dir, 's.sock');
    logger = new MemoryLogger();
    server = new TtrpcServer({ logger });
    server.register(TaskDefinition, impl);
    await server.listen(socketPath);
    clients = [];
    waitRelease = deferred();
    lastCtx = undefined;
  });

  afterEach(async () => {
    for (const client of clients) client.close();
    await server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  async function client(): Promise<TtrpcClient> {
    const c = await TtrpcClient.connect(socketPath, { logger });
    clients.push(c);
    return c;
  }

  it('creates the socket with mode 0600', () => {
    assert.equal(fs.statSync(socketPath).mode & 0o777, 0o600);
  });

  it('answers typed calls', async () => {
    const c = await client();
    const state = await c.call(TaskDefinition, 'state', { id: 'c1', execId: '' });
    assert.equal(state.id, 'c1');
    assert.equal(state.pid, 42);
    assert.equal(state.bundle, '/b/c1');
  });

  it('answers out of order: a blocked Wait does not hold up Kill', async () => {
    const c = await client();
    const order: string[] = [];
    const wait = c.call(TaskDefinition, 'wait', { id: 'c1', execId: '' }).then((r) => {
      order.push('wait');
      return r;
    });
    await new Promise((r) => setTimeout(r, 50));
    const state = await c.call(TaskDefinition, 'state', { id: 'c1', execId: '' });
    order.push('state');
    assert.equal(state.id, 'c1');
    await c.call(TaskDefinition, 'kill', { id: 'c1', execId: '', signal: 9, all: false });
    order.push('kill');
    const exit = await wait;
    assert.deepEqual(order, ['state', 'kill', 'wait']);
    assert.equal(exit.exitStatus, 7);
    assert.deepEqual(exit.exitedAt, { seconds: 1_700_000_000, nanos: 5 });
  });

  it('runs many calls concurrently on one connection', async () => {
    const c = await client();
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => c.call(TaskDefinition, 'state', { id: `c${i}`, execId: '' })));
    results.forEach((r, i) => assert.equal(r.id, `c${i}`));
  });

  it('answers an unknown service or method with Unimplemented (12)', async () => {
    const c = await client();
    await rejectsWithCode(c.callRaw('containerd.task.v3.Task', 'State', statePayload('x')), Code.Unimplemented, /^service containerd\.task\.v3\.Task$/);
    await rejectsWithCode(c.call(TaskDefinition, 'pause', { id: 'x' }), Code.Unimplemented, /^method Pause$/);
  });

  it('maps handler failures: RpcError keeps its code, anything else is Unknown (2)', async () => {
    const c = await client();
    await rejectsWithCode(c.call(TaskDefinition, 'state', { id: 'missing', execId: '' }), Code.NotFound, /^container missing: not found$/);
    await rejectsWithCode(c.call(TaskDefinition, 'state', { id: 'boom', execId: '' }), Code.Unknown, /^kaboom$/);
  });

  it('passes metadata and the timeout to the handler', async () => {
    const c = await client();
    const before = Date.now();
    await c.call(TaskDefinition, 'connect', { id: 'v' }, { timeoutMs: 5000, metadata: { 'containerd-namespace': 'default', multi: ['a', 'b'] } });
    assert.ok(lastCtx);
    assert.deepEqual(lastCtx.metadata.get('containerd-namespace'), ['default']);
    assert.deepEqual(lastCtx.metadata.get('multi'), ['a', 'b']);
    assert.equal(lastCtx.method, 'Connect');
    assert.equal(lastCtx.service, 'containerd.task.v2.Task');
    assert.ok(lastCtx.deadline !== undefined && lastCtx.deadline >= before + 4900 && lastCtx.deadline <= Date.now() + 5000);
    await c.call(TaskDefinition, 'connect', { id: 'v' });
    assert.equal(lastCtx.deadline, undefined);
    assert.equal(lastCtx.signal.aborted, false);
  });

  it('honours request timeouts on both ends', async () => {
    const c = await client();
    // Client side: gives up and reports DeadlineExceeded.
    await rejectsWithCode(c.call(TaskDefinition, 'state', { id: 'slow', execId: '' }, { timeoutMs: 100 }), Code.DeadlineExceeded, /no answer within 100ms/);
    // Server side: the handler's signal fired with a DeadlineExceeded reason, answered as code 4.
    const peer = await RawPeer.connect(socketPath);
    const body = Request.encode({ service: 'containerd.task.v2.Task', method: 'State', payload: Buffer.from(statePayload('slow')), timeoutNano: 50e6, metadata: [] }).finish();
    peer.write(encodeFrame(1, FrameType.Request, 0, body));
    const answer = await peer.nextResponse();
    assert.equal(answer.code, Code.DeadlineExceeded);
    assert.match(answer.message, /deadline of 50ms exceeded/);
    peer.socket.destroy();
  });

  it('rejects even and reused stream ids with InvalidArgument (3), as upstream', async () => {
    const peer = await RawPeer.connect(socketPath);
    peer.request(2, 'containerd.task.v2.Task', 'State', statePayload('a'));
    let r = await peer.nextResponse();
    assert.deepEqual([r.streamId, r.code, r.message], [2, Code.InvalidArgument, 'StreamID must be odd for client initiated streams']);
    peer.request(5, 'containerd.task.v2.Task', 'State', statePayload('a'));
    r = await peer.nextResponse();
    assert.deepEqual([r.streamId, r.code], [5, Code.OK]);
    peer.request(5, 'containerd.task.v2.Task', 'State', statePayload('a'));
    r = await peer.nextResponse();
    assert.deepEqual([r.streamId, r.code, r.message], [5, Code.InvalidArgument, 'StreamID cannot be re-used and must increment']);
    peer.request(3, 'containerd.task.v2.Task', 'State', statePayload('a'));
    r = await peer.nextResponse();
    assert.equal(r.code, Code.InvalidArgument);
    peer.request(7, 'containerd.task.v2.Task', 'State', statePayload('a'));
    r = await peer.nextResponse();
    assert.deepEqual([r.streamId, r.code], [7, Code.OK]);
    peer.socket.destroy();
  });

  it('answers an undecodable request envelope with InvalidArgument and keeps the connection', async () => {
    const peer = await RawPeer.connect(socketPath);
    peer.write(encodeFrame(1, FrameType.Request, 0, Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])));
    let r = await peer.nextResponse();
    assert.equal(r.code, Code.InvalidArgument);
    assert.match(r.message, /^unmarshal request error/);
    peer.request(3, 'containerd.task.v2.Task', 'State', statePayload('still'));
    r = await peer.nextResponse();
    assert.equal(r.code, Code.OK);
    peer.socket.destroy();
  });

  it('answers an oversized frame with ResourceExhausted (8) on its stream; the connection keeps working', async () => {
    const peer = await RawPeer.connect(socketPath);
    const header = Buffer.alloc(10);
    header.writeUInt32BE(MAX_FRAME_PAYLOAD + 1, 0);
    header.writeUInt32BE(1, 4);
    header.writeUInt8(FrameType.Request, 8);
    peer.write(header);
    // The oversized payload streams through in pieces and is discarded.
    const piece = Buffer.alloc(1 << 20, 0x41);
    for (let i = 0; i < 4; i++) peer.write(piece);
    peer.write(Buffer.alloc(1, 0x41));
    let r = await peer.nextResponse();
    assert.deepEqual([r.streamId, r.code], [1, Code.ResourceExhausted]);
    assert.match(r.message, /message length 4194305 exceed maximum message size of 4194304/);
    peer.request(3, 'containerd.task.v2.Task', 'State', statePayload('after'));
    r = await peer.nextResponse();
    assert.deepEqual([r.streamId, r.code], [3, Code.OK]);
    peer.socket.destroy();
    assert.ok(logger.lines.some((l) => /exceed maximum message size/.test(l)));
  });

  it('refuses to send an oversized response and says so (8)', async () => {
    const c = await client();
    await rejectsWithCode(c.call(TaskDefinition, 'state', { id: 'big', execId: '' }), Code.ResourceExhausted, /response: message length \d+ exceed/);
    const state = await c.call(TaskDefinition, 'state', { id: 'ok', execId: '' });
    assert.equal(state.id, 'ok');
  });

  it('rejects an oversized request on the client before sending it', async () => {
    const c = await client();
    await rejectsWithCode(c.callRaw('containerd.task.v2.Task', 'State', Buffer.alloc(MAX_FRAME_PAYLOAD)), Code.ResourceExhausted);
    assert.equal((await c.call(TaskDefinition, 'state', { id: 'ok', execId: '' })).id, 'ok');
  });

  it('closes only a connection sending garbage, logs why, and keeps serving the others', async () => {
    const good = await client();
    const bad = await RawPeer.connect(socketPath);
    bad.write(Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'));
    await bad.closed;
    assert.ok(logger.lines.some((l) => /^error ttrpc: closing connection: malformed frame: unknown type/.test(l)), logger.lines.join('\n'));
    assert.equal((await good.call(TaskDefinition, 'state', { id: 'alive', execId: '' })).id, 'alive');
    const fresh = await client();
    assert.equal((await fresh.call(TaskDefinition, 'state', { id: 'new', execId: '' })).id, 'new');
  });

  it('survives truncated frames: the half-sent connection is closed and logged', async () => {
    const truncated = await RawPeer.connect(socketPath);
    const frame = encodeFrame(1, FrameType.Request, 0, Request.encode({ service: 'a', method: 'b', payload: Buffer.alloc(10), timeoutNano: 0, metadata: [] }).finish());
    truncated.socket.end(frame.subarray(0, frame.length - 3));
    await truncated.closed;
    assert.ok(logger.lines.some((l) => /truncated frame/.test(l)), logger.lines.join('\n'));
    const c = await client();
    assert.equal((await c.call(TaskDefinition, 'state', { id: 'x', execId: '' })).id, 'x');
  });

  it('rejects every pending call with Unavailable when the connection is lost', async () => {
    const c = await client();
    const closed = new Promise<void>((resolve) => c.once('close', () => resolve()));
    const waits = [c.call(TaskDefinition, 'wait', { id: 'a', execId: '' }), c.call(TaskDefinition, 'wait', { id: 'b', execId: '' })];
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(server.inFlightCount, 2);
    await server.close();
    for (const wait of waits) await rejectsWithCode(wait, Code.Unavailable, /Wait: ttrpc: connection closed/);
    await closed;
    await rejectsWithCode(c.call(TaskDefinition, 'state', { id: 'x', execId: '' }), Code.Unavailable);
  });

  it('rejects a call whose signal aborts with Canceled; a late answer is ignored', async () => {
    const c = await client();
    const controller = new AbortController();
    const wait = c.call(TaskDefinition, 'wait', { id: 'a', execId: '' }, { signal: controller.signal });
    controller.abort();
    await rejectsWithCode(wait, Code.Canceled);
    waitRelease.resolve();
    assert.equal((await c.call(TaskDefinition, 'state', { id: 'x', execId: '' })).id, 'x');
    assert.equal(c.pendingCount, 0);
  });

  it('uses odd stream ids from 1 in steps of 2', async () => {
    const seen: number[] = [];
    const listener = net.createServer((socket) => {
      const decoder = new FrameDecoder();
      socket.on('data', (chunk: Buffer) => {
        for (const item of decoder.push(chunk)) {
          if (item.kind !== 'frame') continue;
          seen.push(item.frame.streamId);
          socket.write(encodeFrame(item.frame.streamId, FrameType.Response, 0, Response.encode({ status: undefined, payload: Buffer.alloc(0) }).finish()));
        }
      });
    });
    const other = path.join(dir, 'other.sock');
    await new Promise<void>((resolve) => listener.listen(other, resolve));
    const c = await TtrpcClient.connect(other, { logger });
    for (let i = 0; i < 3; i++) await c.callRaw('s', 'm', Buffer.alloc(0));
    c.close();
    await new Promise<void>((resolve) => listener.close(() => resolve()));
    assert.deepEqual(seen, [1, 3, 5]);
  });

  it('connect() fails fast with Unavailable when nothing listens', async () => {
    await rejectsWithCode(TtrpcClient.connect(path.join(dir, 'nobody.sock'), { logger }), Code.Unavailable, /cannot connect .*ENOENT/);
  });

  it('close({ waitForCalls }) lets calls in flight answer, then reports all connections gone', async () => {
    const c = await client();
    const wait = c.call(TaskDefinition, 'wait', { id: 'a', execId: '' });
    await new Promise((r) => setTimeout(r, 50));
    const closing = server.close({ waitForCalls: true, timeoutMs: 5000 });
    // No new connections are accepted while draining.
    await assert.rejects(TtrpcClient.connect(socketPath, { logger }));
    waitRelease.resolve();
    assert.equal((await wait).exitStatus, 7);
    await closing;
    assert.equal(server.connectionCount, 0);
    await server.allConnectionsClosed();
    assert.ok(!fs.existsSync(socketPath), 'the socket file is removed');
  });

  it('refuses to listen on a path that is taken, with a clear error', async () => {
    const second = new TtrpcServer({ logger });
    await assert.rejects(second.listen(socketPath), /cannot listen on .*s\.sock: EADDRINUSE/);
    await second.close();
  });

  it('refuses a second registration of the same service', () => {
    assert.throws(() => server.register(TaskDefinition, {}), /duplicate service containerd\.task\.v2\.Task/);
  });
});
