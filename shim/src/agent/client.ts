// The host side of the agent API (proto/smolvm/agent.proto): a ttrpc client on the agent
// channel (vsock or virtserialport), plus each process's stdio as flow-controlled data
// streams on the same connection. The shim's task service drives containers through this.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Duplex, Writable } from 'node:stream';
import { Code, RpcError, messageOf } from '../errdefs';
import {
  AgentDefinition,
  CreateContainerRequest,
  HandshakeResponse,
  type LinuxResources as AgentLinuxResources,
  type Process as AgentProcess,
  ProcessEntry,
  type StatsContainerResponse,
  StdioStreams,
  type ReseedRequest,
  type ReseedResponse,
  type WaitProcessResponse,
  type WatchOomResponse,
} from '../gen/smolvm/agent';
import { type Logger, stderrLogger } from '../log';
import { TtrpcClient, type CallOptions } from '../ttrpc/client';
import { MAX_STREAM_ID } from '../ttrpc/frame';
import { agentCallDeadlineMs, DeadlineClock, type DeadlineCall } from './deadlines';
import { type ByteSource, InboundStream, MAX_DATA_FRAME, MAX_STREAM_CREDIT, OutboundStream, StreamMux } from './streams';

export const AGENT_PROTOCOL_VERSION = 1;
/** Minor revision with ExecProcess, ResizePty, RemoveProcess and terminals. */
export const AGENT_PROTOCOL_MINOR_EXEC = 1;
/** Minor revision with per-container cgroups: resources, Update, Stats, WatchOom, oom_kill. */
export const AGENT_PROTOCOL_MINOR_CGROUPS = 3;
const HANDSHAKE_ENTROPY_BYTES = 64;

export interface ProcessStdio {
  stdin?: ByteSource;
  stdout?: Writable;
  /** Ignored for a terminal process: the pty's output is all on stdout. */
  stderr?: Writable;
  /** End stdout/stderr sinks after their EOF (default true; a sink shared by both ends once). */
  endSinks?: boolean;
}

export interface ProcessIo {
  /** The stream ids given to the agent (0 = not connected). */
  readonly streams: StdioStreams;
  /** Resolves when stdout and stderr both saw EOF and every byte reached its sink (at once if absent). */
  readonly outputDone: Promise<void>;
  /** Resolves when stdin's EOF was sent or its pump stopped (at once if absent). */
  readonly stdinDone: Promise<void>;
}

export interface AgentConnectOptions {
  /** Bound on the handshake (the guest may still be booting); default 30 s. */
  readonly timeoutMs?: number;
  readonly logger?: Logger;
  /** Names the channel in logs, e.g. the VM id. */
  readonly name?: string;
}

export interface WaitResult {
  /** Exit code, or 128 + signal when a signal killed the process. */
  readonly exitStatus: number;
  readonly exitedAt: Date;
  /** The container's OOM-kill count when the process was reaped (0 from an older agent). */
  readonly oomKill: bigint;
}

interface ProcessStreams {
  stdin?: OutboundStream;
  outputs: InboundStream[];
}

/** A call whose deadline passed without an answer from the guest. */
export interface DeadlineExpiry {
  readonly call: DeadlineCall;
  /** The call as the wire names it, e.g. "SignalProcess". */
  readonly method: string;
  readonly deadlineMs: number;
  /** The DeadlineExceeded the call rejected with (names the container and the call). */
  readonly error: RpcError;
}

interface AgentClientEvents {
  /** The agent channel is gone (VM exit, crash, or close()). */
  close: [reason: Error | undefined];
  /** A call got no answer within its deadline: the guest is wedged (the owner gives the VM up). */
  deadlineExceeded: [expiry: DeadlineExpiry];
}

const processKey = (containerId: string, execId: string): string => `${containerId}\u0000${execId}`;

export class AgentClient extends EventEmitter<AgentClientEvents> {
  private readonly mux: StreamMux;
  private readonly processes = new Map<string, ProcessStreams>();
  private nextStreamId = 2;
  /** Every deadline of this channel's calls; held while the VM is paused on purpose. */
  readonly deadlineClock = new DeadlineClock();
  private deadlineScale = 1;
  /** Settles once every call with a deadline sent so far has settled (see withDeadline). */
  private callsAnswered: Promise<void> = Promise.resolve();

  /** Wraps `channel` and performs the Handshake; rejects (and closes the channel) if it fails. */
  static async connect(channel: Duplex, options: AgentConnectOptions = {}): Promise<AgentClient> {
    const logger = options.logger ?? stderrLogger('warn', { component: 'agent' });
    const rpc = new TtrpcClient(channel, { logger, name: options.name ?? 'agent channel' });
    const timeoutMs = options.timeoutMs ?? 30_000;
    try {
      const info = await rpc.call(
        AgentDefinition,
        'handshake',
        {
          protocolVersion: AGENT_PROTOCOL_VERSION,
          hostTimeUnixNano: BigInt(Date.now()) * 1_000_000n,
          entropy: randomBytes(HANDSHAKE_ENTROPY_BYTES),
        },
        { timeoutMs },
      );
      validateHandshake(info);
      return new AgentClient(rpc, info, logger);
    } catch (err) {
      rpc.close();
      if (err instanceof RpcError) throw new RpcError(err.code, `agent handshake failed: ${err.message}`);
      throw new RpcError(Code.Unavailable, `agent handshake failed: ${messageOf(err)}`);
    }
  }

  private constructor(
    private readonly rpc: TtrpcClient,
    readonly info: HandshakeResponse,
    private readonly logger: Logger,
  ) {
    super();
    this.mux = new StreamMux(
      rpc,
      { initialCredit: info.initialStreamCredit, maxDataFrame: Math.min(info.maxDataFrame, MAX_DATA_FRAME) },
      logger,
    );
    rpc.setDataFrameHandler((frame) => this.mux.handleFrame(frame));
    rpc.once('close', (reason) => {
      this.mux.detachAll();
      this.processes.clear();
      if (reason) this.logger.error(`agent channel lost: ${reason.message}`);
      this.emit('close', reason);
    });
  }

  get closed(): boolean {
    return this.rpc.closed;
  }

  /** Multiplies every call's deadline (config `agent_deadline_scale`); for calls sent from now on. */
  setDeadlineScale(scale: number): void {
    agentCallDeadlineMs('signalProcess', scale); // validates
    this.deadlineScale = scale;
  }

  /** The deadline the next `call` gets, in ms. */
  deadlineOf(call: DeadlineCall): number {
    return agentCallDeadlineMs(call, this.deadlineScale);
  }

  /**
   * Sends one call under its deadline (AGENT_CALL_DEADLINES_MS, scaled). The agent answers
   * requests one at a time, so the clock starts only once every call sent before this one has
   * settled: a short call queued behind a long one gets its full time. On expiry the call
   * rejects with DeadlineExceeded naming it, and `deadlineExceeded` is emitted. A caller that
   * passes its own `timeoutMs` (a restore's reseed) gets just that bound, enforced by ttrpc.
   */
  private async withDeadline<T>(
    call: DeadlineCall, what: string, options: CallOptions | undefined, send: (options: CallOptions) => Promise<T>,
  ): Promise<T> {
    if (options?.timeoutMs !== undefined) return send(options);
    const deadlineMs = this.deadlineOf(call);
    const method = AgentDefinition.methods[call].name;
    const expired = new AbortController();
    let settle!: () => void;
    const settled = new Promise<void>((resolve) => { settle = resolve; });
    const ahead = this.callsAnswered;
    this.callsAnswered = Promise.all([ahead, settled]).then(() => undefined);
    let armed: { cancel(): void } | null = null;
    let done = false;
    void ahead.then(() => {
      if (!done) armed = this.deadlineClock.arm(deadlineMs, () => expired.abort());
    });
    const signal = options?.signal ? AbortSignal.any([options.signal, expired.signal]) : expired.signal;
    try {
      return await send({ ...options, signal });
    } catch (err) {
      if (!expired.signal.aborted) throw err;
      // The caller adds `what` to the error it throws (withContext); the event carries it whole.
      const cause = `no answer from the guest agent to ${method} within ${deadlineMs} ms (its deadline)`;
      const error = new RpcError(Code.DeadlineExceeded, `${what}: ${cause}`);
      this.emit('deadlineExceeded', { call, method, deadlineMs, error });
      throw new RpcError(Code.DeadlineExceeded, cause);
    } finally {
      done = true;
      (armed as { cancel(): void } | null)?.cancel();
      settle();
    }
  }

  /**
   * Creates the container and its init process (blocked before exec). The stdio streams are
   * registered before the request goes out, so no early output is lost; stdin starts flowing
   * once the agent knows the process. A terminal process gets no stderr stream.
   */
  async createContainer(
    request: Omit<CreateContainerRequest, 'stdio'>,
    stdio: ProcessStdio,
    options?: CallOptions,
  ): Promise<{ pid: number; io: ProcessIo }> {
    const terminal = request.process?.terminal ?? false;
    return this.spawn(request.containerId, '', stdio, terminal, 'create', (streams, what) =>
      this.withDeadline('createContainer', what, options, (o) =>
        this.rpc.call(AgentDefinition, 'createContainer', { ...request, stdio: streams }, o)));
  }

  /**
   * Prepares an exec in the container's namespaces (blocked before exec until
   * startProcess(containerId, execId)), with its own stdio streams. A missing binary fails
   * here (NotFound); a stopped container with FailedPrecondition.
   */
  async execProcess(
    containerId: string,
    execId: string,
    process: AgentProcess,
    stdio: ProcessStdio,
    options?: CallOptions,
  ): Promise<{ pid: number; io: ProcessIo }> {
    if (!execId) throw new RpcError(Code.InvalidArgument, `container ${containerId}: exec needs a non-empty exec id`);
    this.requireMinor(AGENT_PROTOCOL_MINOR_EXEC, `container ${containerId} exec ${execId}`);
    return this.spawn(containerId, execId, stdio, process.terminal, 'exec', (streams, what) =>
      this.withDeadline('execProcess', what, options, (o) =>
        this.rpc.call(AgentDefinition, 'execProcess', { containerId, execId, process, stdio: streams }, o)));
  }

  /** Registers the process's streams, sends the request that creates it, and starts stdin. */
  private async spawn(
    containerId: string,
    execId: string,
    stdio: ProcessStdio,
    terminal: boolean,
    action: string,
    send: (streams: StdioStreams, what: string) => Promise<{ pid: number }>,
  ): Promise<{ pid: number; io: ProcessIo }> {
    const key = processKey(containerId, execId);
    const what = describe(containerId, execId, action);
    if (this.processes.has(key)) {
      throw new RpcError(Code.AlreadyExists, `${what}: already created on this agent channel`);
    }
    if (this.rpc.closed) throw new RpcError(Code.Unavailable, `${what}: agent channel is closed`);
    // A pty has one output: the agent refuses a stderr stream for it.
    const effective: ProcessStdio = terminal ? { ...stdio, stderr: undefined } : stdio;
    const streams: StdioStreams = {
      stdin: effective.stdin ? this.allocateStreamId() : 0,
      stdout: effective.stdout ? this.allocateStreamId() : 0,
      stderr: effective.stderr ? this.allocateStreamId() : 0,
    };
    const entry: ProcessStreams = { outputs: [] };
    const outputDone = this.receiveOutputs(streams, effective, entry);
    this.processes.set(key, entry);
    let pid: number;
    try {
      ({ pid } = await send(streams, what));
    } catch (err) {
      for (const output of entry.outputs) output.detach();
      if (this.processes.get(key) === entry) this.processes.delete(key);
      throw withContext(err, what);
    }
    let stdinDone: Promise<void> = Promise.resolve();
    if (effective.stdin && !this.rpc.closed && this.processes.get(key) === entry) {
      entry.stdin = this.mux.send(streams.stdin, effective.stdin);
      stdinDone = entry.stdin.done;
    }
    return { pid, io: { streams, outputDone, stdinDone } };
  }

  /** Lets a created process exec; returns its guest pid. */
  async startProcess(containerId: string, execId = '', options?: CallOptions): Promise<number> {
    const what = describe(containerId, execId, 'start');
    try {
      const { pid } = await this.withDeadline('startProcess', what, options, (o) =>
        this.rpc.call(AgentDefinition, 'startProcess', { containerId, execId }, o));
      return pid;
    } catch (err) {
      throw withContext(err, what);
    }
  }

  /**
   * Blocks until the process exited. The agent sends the output streams' EOF first, so all
   * output has arrived (await `io.outputDone` for it to have reached the sinks). Stops stdin.
   */
  async waitProcess(containerId: string, execId = '', options?: CallOptions): Promise<WaitResult> {
    let answer: WaitProcessResponse;
    try {
      answer = await this.rpc.call(AgentDefinition, 'waitProcess', { containerId, execId }, options);
    } catch (err) {
      throw withContext(err, describe(containerId, execId, 'wait'));
    }
    const result: WaitResult = {
      exitStatus: answer.exitStatus,
      exitedAt: new Date(Number(answer.exitedAtUnixNano / 1_000_000n)),
      oomKill: answer.oomKill,
    };
    // Nothing reads stdin any more: stop pumping it (no EOF needed, the stream is gone).
    this.processes.get(processKey(containerId, execId))?.stdin?.stop(false);
    return result;
  }

  async signalProcess(containerId: string, execId: string, signal: number, all = false, options?: CallOptions): Promise<void> {
    const what = describe(containerId, execId, `signal ${signal}`);
    try {
      await this.withDeadline('signalProcess', what, options, (o) =>
        this.rpc.call(AgentDefinition, 'signalProcess', { containerId, execId, signal, all }, o));
    } catch (err) {
      throw withContext(err, what);
    }
  }

  /**
   * CloseIO: stops reading the local stdin source, sends EOF after what was already sent
   * (bytes still waiting for credit are dropped), then tells the agent. To deliver everything
   * first, end the source instead: its EOF follows the last byte (see `io.stdinDone`).
   */
  async closeStdin(containerId: string, execId = '', options?: CallOptions): Promise<void> {
    this.processes.get(processKey(containerId, execId))?.stdin?.stop(true);
    const what = describe(containerId, execId, 'close stdin');
    try {
      await this.withDeadline('closeStdin', what, options, (o) =>
        this.rpc.call(AgentDefinition, 'closeStdin', { containerId, execId }, o));
    } catch (err) {
      throw withContext(err, what);
    }
  }

  /** Sets a terminal process's window size (TIOCSWINSZ on its pty). */
  async resizePty(containerId: string, execId: string, width: number, height: number, options?: CallOptions): Promise<void> {
    const what = describe(containerId, execId, `resize pty to ${width}x${height}`);
    this.requireMinor(AGENT_PROTOCOL_MINOR_EXEC, what);
    try {
      await this.withDeadline('resizePty', what, options, (o) =>
        this.rpc.call(AgentDefinition, 'resizePty', { containerId, execId, width, height }, o));
    } catch (err) {
      throw withContext(err, what);
    }
  }

  /** Forgets an exec in the guest (killing it if it still runs) and drops its streams here. */
  async removeProcess(containerId: string, execId: string, options?: CallOptions): Promise<void> {
    const what = describe(containerId, execId, 'remove');
    this.requireMinor(AGENT_PROTOCOL_MINOR_EXEC, what);
    try {
      await this.withDeadline('removeProcess', what, options, (o) =>
        this.rpc.call(AgentDefinition, 'removeProcess', { containerId, execId }, o));
    } catch (err) {
      throw withContext(err, what);
    } finally {
      this.forgetProcess(processKey(containerId, execId));
    }
  }

  async listProcesses(containerId: string, options?: CallOptions): Promise<ProcessEntry[]> {
    const what = `container ${containerId}: list processes`;
    try {
      const { processes } = await this.withDeadline('listProcesses', what, options, (o) =>
        this.rpc.call(AgentDefinition, 'listProcesses', { containerId }, o));
      return processes;
    } catch (err) {
      throw withContext(err, what);
    }
  }

  /** Kills what is left of the container in the guest, unmounts it, and drops its streams here. */
  async removeContainer(containerId: string, options?: CallOptions): Promise<void> {
    const what = `container ${containerId}: remove`;
    try {
      await this.withDeadline('removeContainer', what, options, (o) =>
        this.rpc.call(AgentDefinition, 'removeContainer', { containerId }, o));
    } catch (err) {
      throw withContext(err, what);
    } finally {
      this.forgetContainer(containerId);
    }
  }

  /**
   * Clone safety for a VM restored from a template: fresh entropy into the guest RNG and a
   * forced CRNG reseed, the wall clock, the hostname. Must be the first call after the
   * handshake. Resolves with what the guest did (the caller checks `crngReseeded`).
   */
  async reseed(request: ReseedRequest, options?: CallOptions): Promise<ReseedResponse> {
    const what = 'agent reseed after restore';
    try {
      return await this.withDeadline('reseed', what, options, (o) => this.rpc.call(AgentDefinition, 'reseed', request, o));
    } catch (err) {
      throw withContext(err, what);
    }
  }

  /** Applies resources to the container's guest cgroup; unset fields keep their values. */
  async updateContainer(containerId: string, resources: AgentLinuxResources, options?: CallOptions): Promise<void> {
    const what = `container ${containerId}: update resources`;
    this.requireMinor(AGENT_PROTOCOL_MINOR_CGROUPS, what);
    try {
      await this.withDeadline('updateContainer', what, options, (o) =>
        this.rpc.call(AgentDefinition, 'updateContainer', { containerId, resources }, o));
    } catch (err) {
      throw withContext(err, what);
    }
  }

  /** The counters of the container's guest cgroup. */
  async statsContainer(containerId: string, options?: CallOptions): Promise<StatsContainerResponse> {
    const what = `container ${containerId}: stats`;
    this.requireMinor(AGENT_PROTOCOL_MINOR_CGROUPS, what);
    try {
      return await this.withDeadline('statsContainer', what, options, (o) =>
        this.rpc.call(AgentDefinition, 'statsContainer', { containerId }, o));
    } catch (err) {
      throw withContext(err, what);
    }
  }

  /**
   * Long poll: resolves once the container's OOM-kill count exceeds `seen`, or with
   * removed=true when the container goes away; rejects when the channel closes.
   */
  async watchOom(containerId: string, seen: bigint, options?: CallOptions): Promise<WatchOomResponse> {
    const what = `container ${containerId}: watch OOM kills`;
    this.requireMinor(AGENT_PROTOCOL_MINOR_CGROUPS, what);
    try {
      return await this.rpc.call(AgentDefinition, 'watchOom', { containerId, seen }, options);
    } catch (err) {
      throw withContext(err, what);
    }
  }

  /** Asks the agent to sync and power the VM off; it answers before powering off. */
  async shutdown(options?: CallOptions): Promise<void> {
    const what = 'agent shutdown';
    try {
      await this.withDeadline('shutdown', what, options, (o) => this.rpc.call(AgentDefinition, 'shutdown', {}, o));
    } catch (err) {
      throw withContext(err, what);
    }
  }

  /** Closes the channel: pending calls reject with Unavailable (naming `reason` when given)
   *  and every stream stops. */
  close(reason?: Error): void {
    this.rpc.close(reason);
  }

  private allocateStreamId(): number {
    if (this.nextStreamId > MAX_STREAM_ID - 1) {
      throw new RpcError(Code.ResourceExhausted, 'agent channel: stdio stream ids exhausted; reconnect');
    }
    const id = this.nextStreamId;
    this.nextStreamId += 2;
    return id;
  }

  private receiveOutputs(streams: StdioStreams, stdio: ProcessStdio, entry: ProcessStreams): Promise<void> {
    const endSinks = stdio.endSinks ?? true;
    const shared = stdio.stdout !== undefined && stdio.stdout === stdio.stderr;
    if (stdio.stdout) entry.outputs.push(this.mux.receive(streams.stdout, stdio.stdout, endSinks && !shared));
    if (stdio.stderr) entry.outputs.push(this.mux.receive(streams.stderr, stdio.stderr, endSinks && !shared));
    const allDone = Promise.all(entry.outputs.map((output) => output.done)).then(() => undefined);
    if (!(shared && endSinks)) return allDone;
    // One sink behind both streams (e.g. a log file): end it once, after both EOFs.
    const sink = stdio.stdout!;
    return allDone.then(
      () =>
        new Promise<void>((resolve) => {
          sink.once('error', () => resolve());
          sink.end(() => resolve());
        }),
    );
  }

  private forgetContainer(containerId: string): void {
    for (const key of [...this.processes.keys()]) {
      if (key.startsWith(`${containerId}\u0000`)) this.forgetProcess(key);
    }
  }

  private forgetProcess(key: string): void {
    const entry = this.processes.get(key);
    if (!entry) return;
    entry.stdin?.stop(false);
    for (const output of entry.outputs) output.detach();
    this.processes.delete(key);
  }

  private requireMinor(minor: number, what: string): void {
    if (this.info.protocolMinor < minor) {
      throw new RpcError(
        Code.Unimplemented,
        `${what}: the guest agent speaks protocol 1.${this.info.protocolMinor}; this needs 1.${minor} (rebuild the guest initramfs)`,
      );
    }
  }
}

function validateHandshake(info: HandshakeResponse): void {
  if (info.protocolVersion !== AGENT_PROTOCOL_VERSION) {
    throw new RpcError(
      Code.FailedPrecondition,
      `agent speaks protocol version ${info.protocolVersion}, this shim speaks ${AGENT_PROTOCOL_VERSION}`,
    );
  }
  if (!(info.initialStreamCredit > 0 && info.initialStreamCredit <= MAX_STREAM_CREDIT)) {
    // The host buffers up to this much per stream: a guest may not choose gigabytes.
    throw new RpcError(Code.FailedPrecondition, `agent announced initial_stream_credit ${info.initialStreamCredit}; must be 1..${MAX_STREAM_CREDIT} bytes`);
  }
  if (!(info.maxDataFrame > 0)) {
    throw new RpcError(Code.FailedPrecondition, `agent announced max_data_frame ${info.maxDataFrame}; must be positive`);
  }
}

function describe(containerId: string, execId: string, action: string): string {
  return execId ? `container ${containerId} exec ${execId}: ${action}` : `container ${containerId}: ${action}`;
}

/** Keeps the errdefs code, and names the container and the action in the message. */
function withContext(err: unknown, context: string): RpcError {
  if (err instanceof RpcError) return new RpcError(err.code, `${context}: ${err.message}`);
  return new RpcError(Code.Unknown, `${context}: ${messageOf(err)}`);
}
