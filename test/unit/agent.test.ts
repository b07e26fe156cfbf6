// The host-side agent client against a fake agent built from the same ttrpc server and
// stream layer (the real agent is C in the guest; it follows the same contract).
import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough, Writable } from 'node:stream';
import { AgentClient, InboundStream, OutboundStream, StreamMux } from '../../shim/src/agent';
import { Code, RpcError, notFound } from '../../shim/src/errdefs';
import {
  CreateContainerRequest,
  ExecProcessRequest,
  HandshakeRequest,
  type Process as AgentProcess,
  StdioStreams,
  WaitProcessResponse,
} from '../../shim/src/gen/smolvm/agent';
import type { Logger } from '../../shim/src/log';
import { FrameConnection, FrameFlag, FrameType, TtrpcServer } from '../../shim/src/ttrpc';
import { FakeAgentDefinition } from '../helpers/fake-agent-definition';

class MemoryLogger implements Logger {
  readonly lines: string[] = [];
  debug(): void {}
  info(msg: string): void { this.lines.push(`info ${msg}`); }
  warn(msg: string): void { this.lines.push(`warn ${msg}`); }
  error(msg: string): void { this.lines.push(`error ${msg}`); }
  child(): Logger { return this; }
}

/** A sink that collects bytes and can stall: while stalled, write callbacks are held back. */
class StallableSink extends Writable {
  readonly chunks: Buffer[] = [];
  private held: Array<() => void> = [];
  stalled = false;

  override _write(chunk: Buffer, _enc: BufferEncoding, callback: (err?: Error | null) => void): void {
    this.chunks.push(chunk);
    if (this.stalled) this.held.push(() => callback());
    else callback();
  }

  release(): void {
    this.stalled = false;
    const held = this.held;
    this.held = [];
    for (const cb of held) cb();
  }

  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

const waitFor = async (condition: () => boolean, what: string, timeoutMs = 3000): Promise<void> => {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
};
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface FakeProcess {
  readonly request: CreateContainerRequest | ExecProcessRequest;
  readonly stdio: StdioStreams;
  /** What the "process" writes; the fake sends it as stdout / stderr. */
  readonly stdout: PassThrough;
  readonly stderr: PassThrough;
  readonly outbound: OutboundStream[];
  readonly stdinSink: StallableSink;
  stdinStream?: InboundStream;
  exit(status: number): void;
  readonly exited: Promise<number>;
}

/** Plays smolvm-init: answers the Agent service and runs the stdio streams of the contract. */
class FakeAgent {
  readonly logger = new MemoryLogger();
  readonly server = new TtrpcServer({ logger: this.logger, name: 'fake agent' });
  readonly handshakes: HandshakeRequest[] = [];
  readonly processes = new Map<string, FakeProcess>();
  readonly events: string[] = [];
  readonly dataFrameSizes: number[] = [];
  limits = { initialCredit: 65536, maxDataFrame: 16384 };
  /** What the handshake announces as the stream window, when not limits.initialCredit. */
  announcedCredit: number | undefined;
  protocolVersion = 1;
  protocolMinor = 1;
  connection: FrameConnection | undefined;
  mux: StreamMux | undefined;
  failCreate: RpcError | undefined;

  constructor() {
    this.server.on('connection', (conn) => {
      this.connection = conn;
      this.mux = new StreamMux({ sendData: (id, flags, p) => conn.send(id, FrameType.Data, flags, p) }, this.limits, this.logger);
    });
    this.server.setDataFrameHandler((_conn, frame) => {
      if (!(frame.flags & FrameFlag.Credit)) this.dataFrameSizes.push(frame.payload.length);
      if (frame.flags & FrameFlag.RemoteClosed) this.events.push(`eof ${frame.streamId}`);
      this.mux!.handleFrame(frame);
    });
    this.server.register(FakeAgentDefinition, {
      handshake: async (req) => {
        this.handshakes.push(req);
        return {
          protocolVersion: this.protocolVersion,
          agentVersion: 'fake-1',
          kernelRelease: '6.1.0-smolvm',
          initialStreamCredit: this.announcedCredit ?? this.limits.initialCredit,
          maxDataFrame: this.limits.maxDataFrame,
          protocolMinor: this.protocolMinor,
        };
      },
      createContainer: async (req) => {
        if (this.failCreate) throw this.failCreate;
        this.spawn(req.containerId, req, req.stdio!);
        return { pid: 100 };
      },
      execProcess: async (req) => {
        if (!this.processes.has(req.containerId)) throw notFound(`container ${req.containerId} not found`);
        this.events.push(`exec ${req.execId}`);
        this.spawn(`${req.containerId}/${req.execId}`, req, req.stdio!);
        return { pid: 200 };
      },
      resizePty: async (req) => {
        this.events.push(`resize ${req.execId} ${req.width}x${req.height}`);
        return {};
      },
      removeProcess: async (req) => {
        this.events.push(`remove ${req.execId}`);
        this.processes.delete(`${req.containerId}/${req.execId}`);
        return {};
      },
      startProcess: async (req) => {
        if (!this.processes.has(req.containerId)) throw notFound(`container ${req.containerId} not found`);
        return { pid: 100 };
      },
      waitProcess: async (req) => {
        const key = req.execId ? `${req.containerId}/${req.execId}` : req.containerId;
        const proc = this.processes.get(key);
        if (!proc) throw notFound(`container ${req.containerId} not found`);
        const status = await proc.exited;
        // The contract: every output stream's EOF goes out before this answer.
        await Promise.all(proc.outbound.map((o) => o.done));
        this.events.push(`wait answered ${key}`);
        return { exitStatus: status, exitedAtUnixNano: BigInt(Date.UTC(2024, 0, 2, 3, 4, 5, 678)) * 1_000_000n, oomKill: 0n };
      },
      signalProcess: async (req) => {
        this.events.push(`signal ${req.signal} ${req.all}`);
        if (req.signal === 9) this.processes.get(req.containerId)?.exit(137);
        return {};
      },
      closeStdin: async (req) => {
        this.events.push(`closeStdin ${req.containerId}`);
        return {};
      },
      listProcesses: async (req) => {
        if (!this.processes.has(req.containerId)) throw notFound(`container ${req.containerId} not found`);
        return { processes: [{ pid: 100, execId: '' }] };
      },
      removeContainer: async (req) => {
        this.processes.delete(req.containerId);
        return {};
      },
      shutdown: async () => ({}),
    });
  }

  /** A fake process with the given stdio streams, registered under `key`. */
  private spawn(key: string, request: CreateContainerRequest | ExecProcessRequest, stdio: StdioStreams): void {
    let exit!: (status: number) => void;
    const exited = new Promise<number>((resolve) => {
      exit = resolve;
    });
    const proc: FakeProcess = {
      request,
      stdio,
      stdout: new PassThrough(),
      stderr: new PassThrough(),
      outbound: [],
      stdinSink: new StallableSink(),
      exited,
      exit: (status) => {
        proc.stdout.end();
        proc.stderr.end();
        exit(status);
      },
    };
    if (stdio.stdout) proc.outbound.push(this.mux!.send(stdio.stdout, proc.stdout));
    if (stdio.stderr) proc.outbound.push(this.mux!.send(stdio.stderr, proc.stderr));
    if (stdio.stdin) proc.stdinStream = this.mux!.receive(stdio.stdin, proc.stdinSink, true);
    this.processes.set(key, proc);
  }
}


const baseCreate = (containerId: string): Omit<CreateContainerRequest, 'stdio'> => ({
  containerId,
  image: { serial: 'slot0', fsType: 'erofs', readOnly: true },
  writable: { serial: 'slot1', fsType: 'ext4', readOnly: false },
  process: { args: ['/bin/sh'], env: ['PATH=/bin'], cwd: '/', user: { uid: 0, gid: 0, additionalGids: [] }, terminal: false, rlimits: [], noNewPrivileges: true, consoleSize: undefined },
  hostname: 'h',
  readonlyRootfs: false,
});

describe('agent client', function () {
  this.timeout(15_000);
  let dir: string;
  let agent: FakeAgent;
  let hostLogger: MemoryLogger;
  let host: AgentClient | undefined;

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'agent-test-'));
    agent = new FakeAgent();
    await agent.server.listen(path.join(dir, 'agent.sock'));
    hostLogger = new MemoryLogger();
    host = undefined;
  });

  afterEach(async () => {
    host?.close();
    await agent.server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const channel = (): Promise<net.Socket> =>
    new Promise((resolve, reject) => {
      const socket = net.createConnection(path.join(dir, 'agent.sock'), () => resolve(socket));
      socket.once('error', reject);
    });

  async function connect(): Promise<AgentClient> {
    host = await AgentClient.connect(await channel(), { logger: hostLogger, timeoutMs: 5000 });
    return host;
  }

  it('handshakes with version 1, the host clock and 64 bytes of fresh entropy', async () => {
    const before = Date.now();
    const client = await connect();
    const second = await AgentClient.connect(await channel(), { logger: hostLogger });
    second.close();
    assert.equal(agent.handshakes.length, 2);
    const [first, other] = agent.handshakes as [HandshakeRequest, HandshakeRequest];
    assert.equal(first.protocolVersion, 1);
    assert.ok(Math.abs(Number(first.hostTimeUnixNano / 1_000_000n) - before) < 5000);
    assert.equal(first.entropy.length, 64);
    assert.notDeepEqual(first.entropy, other.entropy);
    assert.equal(client.info.kernelRelease, '6.1.0-smolvm');
    assert.equal(client.info.initialStreamCredit, 65536);
  });

  it('refuses an agent speaking another protocol version (FailedPrecondition) and closes the channel', async () => {
    agent.protocolVersion = 2;
    const socket = await channel();
    await assert.rejects(AgentClient.connect(socket, { logger: hostLogger }), (err: unknown) => {
      assert.ok(err instanceof RpcError);
      assert.equal(err.code, Code.FailedPrecondition);
      assert.match(err.message, /agent handshake failed: agent speaks protocol version 2, this shim speaks 1/);
      return true;
    });
    assert.ok(socket.destroyed);
  });

  it('bounds the handshake by its timeout when the agent never answers', async () => {
    const silent = net.createServer(() => undefined);
    const silentPath = path.join(dir, 'silent.sock');
    await new Promise<void>((resolve) => silent.listen(silentPath, resolve));
    const socket = await new Promise<net.Socket>((resolve) => {
      const s = net.createConnection(silentPath, () => resolve(s));
    });
    await assert.rejects(AgentClient.connect(socket, { logger: hostLogger, timeoutMs: 100 }), (err: unknown) => {
      assert.ok(err instanceof RpcError);
      assert.equal(err.code, Code.DeadlineExceeded);
      assert.match(err.message, /agent handshake failed: .*Handshake: no answer within 100ms/);
      return true;
    });
    silent.close();
  });

  it('runs a container: 1 MiB of stdout byte-exact, stderr apart, EOF before the WaitProcess answer', async () => {
    const client = await connect();
    const stdout = new StallableSink();
    const stderr = new StallableSink();
    let stdoutFinished = false;
    stdout.on('finish', () => {
      stdoutFinished = true;
    });
    const { pid, io } = await client.createContainer(baseCreate('c1'), { stdout, stderr });
    assert.equal(pid, 100);
    assert.ok(io.streams.stdout > 0 && io.streams.stdout % 2 === 0);
    assert.ok(io.streams.stderr > 0 && io.streams.stderr % 2 === 0 && io.streams.stderr !== io.streams.stdout);
    assert.equal(io.streams.stdin, 0);
    const proc = agent.processes.get('c1')!;
    assert.deepEqual(proc.stdio, io.streams);
    assert.equal(await client.startProcess('c1'), 100);

    const payload = randomBytes(1 << 20);
    for (let off = 0; off < payload.length; off += 100_000) proc.stdout.write(payload.subarray(off, off + 100_000));
    proc.stderr.write('warning: on stderr\n');
    proc.exit(3);

    const wait = await client.waitProcess('c1');
    assert.equal(wait.exitStatus, 3);
    assert.equal(wait.exitedAt.toISOString(), '2024-01-02T03:04:05.678Z');
    // The answer came after both EOFs, so every byte is already in the sinks.
    assert.equal(stdout.bytes.length, payload.length);
    assert.ok(stdout.bytes.equals(payload));
    assert.equal(stderr.bytes.toString(), 'warning: on stderr\n');
    await io.outputDone;
    assert.ok(stdoutFinished, 'stdout sink ended after EOF');
    const eofs = agent.events.filter((e) => e.startsWith('eof')).length;
    assert.equal(eofs, 0, 'the host sent no EOF (it has no stdin)');
    await client.removeContainer('c1');
  });

  it('back-pressures the guest: a stalled sink stops its stream at the credit limit, RPCs still flow', async () => {
    const client = await connect();
    const stdout = new StallableSink();
    stdout.stalled = true;
    const { io } = await client.createContainer(baseCreate('c1'), { stdout });
    const proc = agent.processes.get('c1')!;
    const payload = randomBytes(1 << 20);
    proc.stdout.write(payload);
    const [out] = proc.outbound as [OutboundStream];
    await waitFor(() => out.bytesSent === agent.limits.initialCredit, 'the sender to use its credit');
    await sleep(150);
    assert.equal(out.bytesSent, agent.limits.initialCredit, 'no byte beyond the credit');
    assert.equal(out.availableCredit, 0);
    assert.ok(stdout.bytes.length <= agent.limits.initialCredit);
    // Control traffic is not stuck behind the stalled stream.
    assert.deepEqual(await client.listProcesses('c1'), [{ pid: 100, execId: '' }]);
    await client.signalProcess('c1', '', 15);
    stdout.release();
    proc.exit(0);
    const wait = await client.waitProcess('c1');
    assert.equal(wait.exitStatus, 0);
    await io.outputDone;
    assert.ok(stdout.bytes.equals(payload), '1 MiB arrives byte-exact after the stall');
  });

  it('sends stdin under the guest credit, in frames <= max_data_frame, then EOF', async () => {
    const client = await connect();
    const stdin = new PassThrough();
    const { io } = await client.createContainer(baseCreate('c1'), { stdin });
    const proc = agent.processes.get('c1')!;
    proc.stdinSink.stalled = true;
    const payload = randomBytes(300_000);
    // In pieces, as a FIFO delivers them: the host may hold at most one piece beyond its credit.
    for (let off = 0; off < payload.length; off += 16_000) stdin.write(payload.subarray(off, off + 16_000));
    stdin.end();
    await waitFor(() => proc.stdinStream!.bytesReceived === agent.limits.initialCredit, 'the first window to arrive');
    await sleep(150);
    assert.equal(proc.stdinStream!.bytesReceived, agent.limits.initialCredit, 'the host stops at the credit limit');
    const unread = stdin.readableLength + stdin.writableLength;
    assert.ok(unread >= payload.length - agent.limits.initialCredit - 16_000, `the host stopped reading its source (${unread} left)`);
    proc.stdinSink.release();
    await io.stdinDone;
    await proc.stdinStream!.done;
    assert.ok(proc.stdinSink.bytes.equals(payload));
    assert.ok(proc.stdinSink.writableFinished, 'the guest saw EOF');
    assert.ok(Math.max(...agent.dataFrameSizes) <= agent.limits.maxDataFrame, `frames of ${Math.max(...agent.dataFrameSizes)} bytes`);
  });

  it('closeStdin sends EOF after what was sent, then the CloseStdin RPC', async () => {
    const client = await connect();
    const stdin = new PassThrough();
    const { io } = await client.createContainer(baseCreate('c1'), { stdin });
    const proc = agent.processes.get('c1')!;
    stdin.write('hello\n');
    await waitFor(() => proc.stdinSink.bytes.length === 6, 'stdin data');
    await client.closeStdin('c1');
    await io.stdinDone;
    await proc.stdinStream!.done;
    assert.equal(proc.stdinSink.bytes.toString(), 'hello\n');
    const eof = agent.events.indexOf(`eof ${io.streams.stdin}`);
    const rpc = agent.events.indexOf('closeStdin c1');
    assert.ok(eof >= 0 && rpc > eof, agent.events.join(', '));
    // The source is no longer read.
    stdin.write('late');
    await sleep(50);
    assert.equal(proc.stdinSink.bytes.toString(), 'hello\n');
  });

  it('ends a sink shared by stdout and stderr once, after both EOFs', async () => {
    const client = await connect();
    const shared = new StallableSink();
    let finishes = 0;
    shared.on('finish', () => finishes++);
    const { io } = await client.createContainer(baseCreate('c1'), { stdout: shared, stderr: shared });
    const proc = agent.processes.get('c1')!;
    proc.stdout.write('out ');
    await waitFor(() => shared.bytes.length === 4, 'stdout');
    proc.stderr.write('err');
    proc.exit(0);
    await client.waitProcess('c1');
    await io.outputDone;
    assert.equal(shared.bytes.toString(), 'out err');
    assert.equal(finishes, 1);
  });

  it('logs and drops data for unknown streams, and rejects a peer that ignores credit', async () => {
    const client = await connect();
    const stdout = new StallableSink();
    stdout.stalled = true;
    const { io } = await client.createContainer(baseCreate('c1'), { stdout });
    agent.connection!.send(1000, FrameType.Data, 0, Buffer.from('nobody listens'));
    // A hostile guest floods past its credit: the host keeps at most one window.
    for (let i = 0; i < 8; i++) agent.connection!.send(io.streams.stdout, FrameType.Data, 0, Buffer.alloc(16384, i));
    await waitFor(() => hostLogger.lines.some((l) => /peer exceeded its credit/.test(l)), 'the credit violation to be logged');
    assert.ok(hostLogger.lines.some((l) => /dropping data for unknown stream 1000/.test(l)), hostLogger.lines.join('\n'));
    assert.ok(stdout.bytes.length <= agent.limits.initialCredit);
    assert.deepEqual(await client.listProcesses('c1'), [{ pid: 100, execId: '' }]);
  });

  it('refuses an agent that announces more stream credit than the host will buffer (1 MiB)', async () => {
    agent.announcedCredit = 1024 * 1024 * 1024;
    const socket = await channel();
    await assert.rejects(AgentClient.connect(socket, { logger: hostLogger }), (err: unknown) => {
      assert.ok(err instanceof RpcError);
      assert.equal(err.code, Code.FailedPrecondition);
      assert.match(err.message, /initial_stream_credit 1073741824; must be 1\.\.1048576 bytes/);
      return true;
    });
    assert.ok(socket.destroyed);
    agent.announcedCredit = 1024 * 1024;
    (await connect()).close();
  });

  it('a peer flooding frames past its credit or to unknown streams gets a bounded number of log lines', async () => {
    const client = await connect();
    const stdout = new StallableSink();
    stdout.stalled = true;
    const { io } = await client.createContainer(baseCreate('c1'), { stdout });
    for (let i = 0; i < 2000; i++) {
      agent.connection!.send(io.streams.stdout, FrameType.Data, 0, Buffer.alloc(16384, i));
      agent.connection!.send(1000 + 2 * i, FrameType.Data, 0, Buffer.from('nobody listens'));
    }
    // Frames are handled in order: once this answers, the flood has been seen.
    assert.deepEqual(await client.listProcesses('c1'), [{ pid: 100, execId: '' }]);
    const flood = hostLogger.lines.filter((l) => /peer exceeded its credit|dropping data for unknown stream/.test(l));
    assert.ok(flood.length >= 1 && flood.length <= 12, `${flood.length} log lines for 4000 bad frames:\n${flood.slice(0, 20).join('\n')}`);
    assert.ok(stdout.bytes.length <= agent.limits.initialCredit);
  });

  it('accepts an EOF frame that carries the last bytes, and drops malformed credit frames', async () => {
    const client = await connect();
    const stdout = new StallableSink();
    const { io } = await client.createContainer(baseCreate('c1'), { stdout });
    agent.connection!.send(io.streams.stdout, FrameType.Data, 0, Buffer.from('abc'));
    agent.connection!.send(io.streams.stdout, FrameType.Data, FrameFlag.Credit, Buffer.from([1, 2]));
    agent.connection!.send(io.streams.stdout, FrameType.Data, FrameFlag.RemoteClosed, Buffer.from('def'));
    await io.outputDone;
    assert.equal(stdout.bytes.toString(), 'abcdef');
    assert.ok(hostLogger.lines.some((l) => /credit frame with 2-byte payload/.test(l)), hostLogger.lines.join('\n'));
  });

  it('a FIFO nobody reads back-pressures the guest; the reader later gets 1 MiB byte-exact', async () => {
    const client = await connect();
    const fifo = path.join(dir, 'stdout.fifo');
    execFileSync('mkfifo', [fifo]);
    // As the shim opens containerd's FIFOs: read-write (no EPIPE without a reader), non-blocking.
    const fd = fs.openSync(fifo, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    const sink = new net.Socket({ fd, readable: false, writable: true });
    const { io } = await client.createContainer(baseCreate('c1'), { stdout: sink });
    const proc = agent.processes.get('c1')!;
    const payload = randomBytes(1 << 20);
    proc.stdout.write(payload);
    const [out] = proc.outbound as [OutboundStream];
    await sleep(300);
    // At most the pipe's buffer (64 KiB) plus one credit window left the guest.
    assert.ok(out.bytesSent <= (64 << 10) + agent.limits.initialCredit, `sent ${out.bytesSent}`);
    assert.ok(out.bytesSent < payload.length);
    const reader = fs.createReadStream(fifo);
    const chunks: Buffer[] = [];
    reader.on('data', (chunk) => chunks.push(chunk as Buffer));
    proc.exit(0);
    await client.waitProcess('c1');
    await io.outputDone;
    await new Promise<void>((resolve) => reader.on('end', () => resolve()));
    assert.ok(Buffer.concat(chunks).equals(payload));
  });

  it('a failing sink neither crashes the shim nor blocks the guest: its output is discarded', async () => {
    const client = await connect();
    const broken = new Writable({ write: (_chunk, _enc, cb) => cb(new Error('EPIPE: reader gone')) });
    const { io } = await client.createContainer(baseCreate('c1'), { stdout: broken });
    const proc = agent.processes.get('c1')!;
    proc.stdout.write(randomBytes(300_000));
    proc.exit(0);
    assert.equal((await client.waitProcess('c1')).exitStatus, 0);
    await io.outputDone;
    assert.ok(hostLogger.lines.some((l) => /sink of stream \d+ failed; discarding its output: EPIPE/.test(l)), hostLogger.lines.join('\n'));
  });

  it('passes errors through with their code and the container named', async () => {
    const client = await connect();
    agent.failCreate = notFound('exec: "/bin/nope": no such file or directory');
    const stdout = new StallableSink();
    await assert.rejects(client.createContainer(baseCreate('c9'), { stdout }), (err: unknown) => {
      assert.ok(err instanceof RpcError);
      assert.equal(err.code, Code.NotFound);
      assert.equal(err.message, 'container c9: create: exec: "/bin/nope": no such file or directory');
      return true;
    });
    await assert.rejects(client.startProcess('c9'), /container c9: start: container c9 not found/);
    agent.failCreate = undefined;
    // The id can be created again once the failed attempt is gone.
    await client.createContainer(baseCreate('c9'), { stdout });
  });

  it('rejects pending calls with Unavailable and emits close when the channel is lost', async () => {
    const client = await connect();
    const stdout = new StallableSink();
    const { io } = await client.createContainer(baseCreate('c1'), { stdout });
    const closed = new Promise<void>((resolve) => client.once('close', () => resolve()));
    const wait = client.waitProcess('c1');
    await sleep(30);
    agent.connection!.close();
    await assert.rejects(wait, (err: unknown) => {
      assert.ok(err instanceof RpcError);
      assert.equal(err.code, Code.Unavailable);
      assert.match(err.message, /^container c1: wait: .*connection closed/);
      return true;
    });
    await closed;
    await io.outputDone;
    assert.ok(client.closed);
    await assert.rejects(client.createContainer(baseCreate('c2'), {}), /agent channel is closed/);
  });

  it('shutdown is answered, then the channel may go', async () => {
    const client = await connect();
    await client.shutdown();
  });

  const execProcessSpec = (terminal: boolean): AgentProcess => ({
    args: ['sh'], env: [], cwd: '/', user: { uid: 0, gid: 0, additionalGids: [] }, terminal, rlimits: [], noNewPrivileges: false,
    consoleSize: terminal ? { height: 24, width: 80 } : undefined,
  });

  it('runs an exec with its own streams; a terminal exec gets no stderr stream', async () => {
    const client = await connect();
    await client.createContainer(baseCreate('c1'), {});
    const stdout = new StallableSink();
    const stderr = new StallableSink();
    const { pid, io } = await client.execProcess('c1', 'e1', execProcessSpec(true), { stdin: new PassThrough(), stdout, stderr });
    assert.equal(pid, 200);
    assert.equal(io.streams.stderr, 0, 'a pty has one output');
    assert.ok(io.streams.stdout > 0 && io.streams.stdin > 0);
    const proc = agent.processes.get('c1/e1')!;
    assert.deepEqual((proc.request as ExecProcessRequest).process?.consoleSize, { height: 24, width: 80 });
    await client.resizePty('c1', 'e1', 132, 43);
    proc.stdout.write('tty output\r\n');
    proc.exit(5);
    const result = await client.waitProcess('c1', 'e1');
    await io.outputDone;
    assert.equal(result.exitStatus, 5);
    assert.equal(stdout.bytes.toString(), 'tty output\r\n');
    assert.equal(stderr.bytes.length, 0);
    await client.removeProcess('c1', 'e1');
    assert.deepEqual(agent.events.filter((e) => /^(exec|resize|remove)/.test(e)), ['exec e1', 'resize e1 132x43', 'remove e1']);
    await assert.rejects(client.execProcess('c1', '', execProcessSpec(false), {}), (err: unknown) =>
      err instanceof RpcError && err.code === Code.InvalidArgument);
  });

  it('refuses exec and resize on an agent older than protocol 1.1, sending nothing', async () => {
    agent.protocolMinor = 0;
    const client = await connect();
    await client.createContainer(baseCreate('c1'), {});
    for (const attempt of [
      () => client.execProcess('c1', 'e1', execProcessSpec(false), {}),
      () => client.resizePty('c1', '', 80, 24),
      () => client.removeProcess('c1', 'e1'),
    ]) {
      await assert.rejects(attempt(), (err: unknown) => {
        assert.ok(err instanceof RpcError);
        assert.equal(err.code, Code.Unimplemented);
        assert.match(err.message, /protocol 1\.0; this needs 1\.1/);
        return true;
      });
    }
    assert.deepEqual(agent.events.filter((e) => /^(exec|resize|remove)/.test(e)), []);
  });

  it('carries exited_at nanoseconds beyond 2^53 exactly (bigint codec)', () => {
    const ns = BigInt(Date.UTC(2030, 5, 6, 7, 8, 9, 123)) * 1_000_000n + 456n;
    const bytes = WaitProcessResponse.encode({ exitStatus: 130, exitedAtUnixNano: ns, oomKill: 0n }).finish();
    const decoded = WaitProcessResponse.decode(bytes);
    assert.equal(decoded.exitStatus, 130);
    assert.equal(decoded.exitedAtUnixNano, ns);
  });
});
