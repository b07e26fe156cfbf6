// A ttrpc server (unary calls, as containerd 1.6's vendored ttrpc 1.1). Serves unix sockets
// and any Duplex. Every call runs concurrently and is answered when it finishes, so a blocking
// call (Wait) never holds up another (Kill). Bad input from one connection ends at most that
// connection; the process and every other connection keep going.
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { Code, RpcError, messageOf } from '../errdefs';
import { Request, Response } from '../gen/ttrpc/ttrpc';
import type { Status } from '../gen/google/rpc/status';
import { type Logger, stderrLogger } from '../log';
import { FrameConnection } from './connection';
import { Frame, FrameType, MAX_FRAME_PAYLOAD, OversizedFrame, oversizedMessage } from './frame';
import type { CallContext, MethodKey, ServiceDefinition, ServiceImpl } from './service';
import { statusFromError, statusOf } from './status';

export interface TtrpcServerOptions {
  readonly logger?: Logger;
  /** Prefix of connection names in logs. */
  readonly name?: string;
  readonly maxPayload?: number;
}

/** Receives type-3 (data) frames, for protocols that layer streams on ttrpc (the agent API). */
export type DataFrameHandler = (connection: FrameConnection, frame: Frame) => void;

export interface CloseOptions {
  /** Wait for calls in flight to be answered before closing connections (default false). */
  readonly waitForCalls?: boolean;
  /** Upper bound on that wait; then connections are closed regardless. */
  readonly timeoutMs?: number;
}

interface ServerEvents {
  connection: [connection: FrameConnection];
  connectionClosed: [connection: FrameConnection];
}

const MAX_TIMER_MS = 0x7fff_ffff;

type RawHandler = (payload: Buffer, ctx: CallContext) => Promise<Uint8Array>;

/** Per-connection bookkeeping: stream-id discipline and calls in flight. */
interface ConnectionState {
  readonly frames: FrameConnection;
  lastStreamId: number;
  readonly inFlight: Map<number, AbortController>;
}

export class TtrpcServer extends EventEmitter<ServerEvents> {
  private readonly services = new Map<string, Map<string, RawHandler>>();
  private readonly connections = new Set<ConnectionState>();
  private readonly netListeners: net.Server[] = [];
  private readonly logger: Logger;
  private readonly name: string;
  private readonly maxPayload: number;
  private dataHandler: DataFrameHandler | undefined;
  private nextConnectionNumber = 1;
  private callsInFlight = 0;
  private callsDrained: Array<() => void> = [];
  private closing = false;

  constructor(options: TtrpcServerOptions = {}) {
    super();
    this.logger = options.logger ?? stderrLogger('warn', { component: 'ttrpc' });
    this.name = options.name ?? 'ttrpc server';
    this.maxPayload = options.maxPayload ?? MAX_FRAME_PAYLOAD;
  }

  /**
   * Registers an implementation of a generated service definition. Methods left out of `impl`
   * answer Unimplemented, as do services never registered.
   */
  register<D extends ServiceDefinition>(definition: D, impl: Partial<ServiceImpl<D>>): void {
    if (this.services.has(definition.fullName)) {
      throw new Error(`ttrpc: duplicate service ${definition.fullName} registered`);
    }
    const methods = new Map<string, RawHandler>();
    for (const key of Object.keys(definition.methods) as Array<MethodKey<D>>) {
      const handler = impl[key];
      if (handler === undefined) continue;
      const method = definition.methods[key]!;
      const call = handler as (request: unknown, ctx: CallContext) => Promise<unknown>;
      methods.set(method.name, async (payload, ctx) => {
        let request: unknown;
        try {
          request = method.requestType.decode(payload);
        } catch (err) {
          throw new RpcError(Code.Internal, `ttrpc: error unmarshalling payload: ${messageOf(err)}`);
        }
        const response = await call.call(impl, request, ctx);
        if (response === undefined || response === null) {
          throw new RpcError(Code.Internal, `ttrpc: ${definition.fullName}/${method.name} returned no response`);
        }
        return method.responseType.encode(response).finish();
      });
    }
    this.services.set(definition.fullName, methods);
  }

  /** Routes type-3 frames of every connection to `handler` (otherwise they are ignored, as upstream). */
  setDataFrameHandler(handler: DataFrameHandler | undefined): void {
    this.dataHandler = handler;
  }

  /** Listens on a unix socket path, mode 0600. Fails if the path is taken. */
  async listen(socketPath: string): Promise<void> {
    if (this.closing) throw new Error('ttrpc: server is closed');
    const listener = net.createServer();
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        reject(new Error(`ttrpc: cannot listen on ${socketPath}: ${err.code ?? ''} ${err.message}`.trim()));
      };
      listener.once('error', onError);
      listener.listen(socketPath, () => {
        listener.off('error', onError);
        resolve();
      });
    });
    try {
      // Right after bind, before anyone could connect through the default mode's lack of write bits.
      await fs.promises.chmod(socketPath, 0o600);
    } catch (err) {
      listener.close();
      throw new Error(`ttrpc: cannot chmod ${socketPath} to 0600: ${messageOf(err)}`);
    }
    this.serveListener(listener);
  }

  /** Serves connections accepted by an already listening net.Server (e.g. one made from an inherited fd). */
  serveListener(listener: net.Server): void {
    this.netListeners.push(listener);
    listener.on('connection', (socket) => {
      if (this.closing) {
        socket.destroy();
        return;
      }
      this.serve(socket);
    });
    listener.on('error', (err) => this.logger.error(`ttrpc: listener error: ${err.message}`));
  }

  /** Serves one already connected byte stream. */
  serve(stream: Duplex): FrameConnection {
    const frames = new FrameConnection(stream, {
      name: `${this.name} conn ${this.nextConnectionNumber++}`,
      logger: this.logger,
      maxPayload: this.maxPayload,
    });
    const state: ConnectionState = { frames, lastStreamId: 0, inFlight: new Map() };
    this.connections.add(state);
    frames.on('frame', (frame) => this.onFrame(state, frame));
    frames.on('oversized', (oversized) => this.onOversized(state, oversized));
    frames.once('close', () => {
      for (const controller of state.inFlight.values()) {
        controller.abort(new RpcError(Code.Canceled, `ttrpc: ${frames.name} closed`));
      }
      this.connections.delete(state);
      this.emit('connectionClosed', frames);
    });
    if (this.closing) frames.close();
    this.emit('connection', frames);
    return frames;
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  get inFlightCount(): number {
    return this.callsInFlight;
  }

  /** Resolves once no connection is open (at once if none is). */
  allConnectionsClosed(): Promise<void> {
    if (this.connections.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const check = (): void => {
        if (this.connections.size > 0) return;
        this.off('connectionClosed', check);
        resolve();
      };
      this.on('connectionClosed', check);
    });
  }

  /**
   * Stops accepting, optionally lets calls in flight finish (their answers are written), then
   * closes every connection. Resolves when all listeners and connections are closed.
   * From inside a handler (e.g. the task Shutdown), do not await this with waitForCalls: the
   * handler is itself a call in flight. Start it after replying (setImmediate) instead.
   */
  async close(options: CloseOptions = {}): Promise<void> {
    this.closing = true;
    const listenersClosed = this.netListeners.map(
      (listener) => new Promise<void>((resolve) => listener.close(() => resolve())),
    );
    if (options.waitForCalls && this.callsInFlight > 0) {
      await this.callsSettled(options.timeoutMs);
    }
    for (const state of [...this.connections]) state.frames.close();
    await Promise.all([...listenersClosed, this.allConnectionsClosed()]);
  }

  private callsSettled(timeoutMs: number | undefined): Promise<void> {
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        if (timer) clearTimeout(timer);
        resolve();
      };
      this.callsDrained.push(done);
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.logger.warn(`ttrpc: ${this.callsInFlight} calls still running after ${timeoutMs}ms; closing anyway`);
          this.callsDrained = this.callsDrained.filter((fn) => fn !== done);
          resolve();
        }, timeoutMs);
      }
    });
  }

  private onOversized(state: ConnectionState, oversized: OversizedFrame): void {
    // Upstream answers on the frame's stream and keeps the connection.
    this.logger.warn(`ttrpc: ${oversizedMessage(oversized.length, this.maxPayload)}`, {
      conn: state.frames.name,
      stream: oversized.streamId,
    });
    if (oversized.type === FrameType.Request) {
      this.answer(state, oversized.streamId, statusOf(Code.ResourceExhausted, oversizedMessage(oversized.length, this.maxPayload)));
    }
  }

  private onFrame(state: ConnectionState, frame: Frame): void {
    if (frame.type === FrameType.Data) {
      if (this.dataHandler) this.dataHandler(state.frames, frame);
      else this.logger.debug('ttrpc: ignoring data frame', { conn: state.frames.name, stream: frame.streamId });
      return;
    }
    if (frame.streamId % 2 !== 1) {
      this.answer(state, frame.streamId, statusOf(Code.InvalidArgument, 'StreamID must be odd for client initiated streams'));
      return;
    }
    if (frame.type !== FrameType.Request) {
      // Future compatibility, as upstream: frames of other types are ignored.
      this.logger.debug('ttrpc: ignoring non-request frame', { conn: state.frames.name, type: frame.type });
      return;
    }
    let request: Request;
    try {
      request = Request.decode(frame.payload);
    } catch (err) {
      this.answer(state, frame.streamId, statusOf(Code.InvalidArgument, `unmarshal request error: ${messageOf(err)}`));
      return;
    }
    if (frame.streamId <= state.lastStreamId) {
      this.answer(state, frame.streamId, statusOf(Code.InvalidArgument, 'StreamID cannot be re-used and must increment'));
      return;
    }
    state.lastStreamId = frame.streamId;
    const handler = this.resolve(request);
    if (handler instanceof RpcError) {
      this.answer(state, frame.streamId, statusOf(handler.code, handler.message));
      return;
    }
    this.dispatch(state, frame.streamId, request, handler);
  }

  private resolve(request: Request): RawHandler | RpcError {
    const service = this.services.get(request.service);
    if (!service) return new RpcError(Code.Unimplemented, `service ${request.service}`);
    const handler = service.get(request.method);
    if (!handler) return new RpcError(Code.Unimplemented, `method ${request.method}`);
    return handler;
  }

  private dispatch(state: ConnectionState, streamId: number, request: Request, handler: RawHandler): void {
    const controller = new AbortController();
    let timer: NodeJS.Timeout | undefined;
    let deadline: number | undefined;
    if (request.timeoutNano > 0) {
      const timeoutMs = Math.max(1, Math.ceil(request.timeoutNano / 1e6));
      deadline = Date.now() + timeoutMs;
      // Node fires timers beyond 2^31-1 ms at once; a deadline that far out is no deadline.
      if (timeoutMs <= MAX_TIMER_MS) {
        timer = setTimeout(
          () => controller.abort(new RpcError(Code.DeadlineExceeded, `${request.service}/${request.method}: deadline of ${timeoutMs}ms exceeded`)),
          timeoutMs,
        );
        timer.unref();
      }
    }
    const metadata = new Map<string, string[]>();
    for (const { key, value } of request.metadata) {
      const values = metadata.get(key);
      if (values) values.push(value);
      else metadata.set(key, [value]);
    }
    const ctx: CallContext = {
      signal: controller.signal,
      metadata,
      deadline,
      service: request.service,
      method: request.method,
      streamId,
      connection: state.frames.name,
    };
    state.inFlight.set(streamId, controller);
    this.callsInFlight++;
    const finish = (status: Status, payload: Uint8Array): void => {
      if (timer) clearTimeout(timer);
      state.inFlight.delete(streamId);
      this.answer(state, streamId, status, payload);
      this.callsInFlight--;
      if (this.callsInFlight === 0) {
        const waiters = this.callsDrained;
        this.callsDrained = [];
        for (const waiter of waiters) waiter();
      }
    };
    // Handlers run detached from the frame loop: slow ones never delay other streams.
    let pending: Promise<Uint8Array>;
    try {
      pending = handler(request.payload, ctx);
    } catch (err) {
      pending = Promise.reject(err);
    }
    pending.then(
      (payload) => finish(statusOf(Code.OK, ''), payload),
      (err: unknown) => {
        const status = statusFromError(err);
        if (!(err instanceof RpcError)) {
          this.logger.warn(`ttrpc: ${request.service}/${request.method} failed: ${status.message}`, { conn: state.frames.name });
        }
        finish(status, Buffer.alloc(0));
      },
    );
  }

  private answer(state: ConnectionState, streamId: number, status: Status, payload: Uint8Array = Buffer.alloc(0)): void {
    if (state.frames.closed) return;
    let encoded = Response.encode({ status, payload: Buffer.from(payload.buffer, payload.byteOffset, payload.length) }).finish();
    if (encoded.length > this.maxPayload) {
      // Upstream too refuses to send an oversized answer and reports it on the stream instead.
      const message = `response: ${oversizedMessage(encoded.length, this.maxPayload)}`;
      this.logger.error(`ttrpc: ${message}`, { conn: state.frames.name, stream: streamId });
      encoded = Response.encode({ status: statusOf(Code.ResourceExhausted, message), payload: Buffer.alloc(0) }).finish();
    }
    try {
      state.frames.send(streamId, FrameType.Response, 0, encoded);
    } catch (err) {
      state.frames.close(new Error(`cannot send response on stream ${streamId}: ${messageOf(err)}`));
    }
  }
}
