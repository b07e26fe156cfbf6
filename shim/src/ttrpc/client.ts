// A ttrpc client: odd stream ids from 1 in steps of 2, many calls in flight, answers matched
// by stream id in whatever order they come. Losing the connection rejects every pending call
// with Unavailable. Type-3 (data) frames go to a hook and can be sent, so the agent's stdio
// streams are layered on this same connection.
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { Code, RpcError, messageOf } from '../errdefs';
import { Request, Response } from '../gen/ttrpc/ttrpc';
import { type Logger, stderrLogger } from '../log';
import { FrameConnection } from './connection';
import { Frame, FrameType, MAX_FRAME_PAYLOAD, MAX_STREAM_ID, OversizedFrame, oversizedMessage } from './frame';
import type { MethodKey, RequestOf, ResponseOf, ServiceDefinition } from './service';
import { errorFromStatus } from './status';
import { LogThrottle, withSuppressed } from '../util/log-throttle';

export interface TtrpcClientOptions {
  readonly logger?: Logger;
  /** Names the connection in logs and errors. */
  readonly name?: string;
  readonly maxPayload?: number;
}

export interface CallOptions {
  /** Sent as the request's timeout_nano and enforced here: the call rejects with DeadlineExceeded. */
  readonly timeoutMs?: number;
  readonly metadata?: Readonly<Record<string, string | readonly string[]>>;
  /** Aborting rejects the call with Canceled (the server is not told: ttrpc 1.1 has no cancel). */
  readonly signal?: AbortSignal;
}

/** Node fires longer timers at once. */
const MAX_TIMER_MS = 0x7fff_ffff;

interface PendingCall {
  readonly label: string;
  resolve(payload: Buffer): void;
  reject(err: RpcError): void;
}

interface ClientEvents {
  /** The connection is gone; `reason` is set when it failed rather than closed cleanly. */
  close: [reason: Error | undefined];
}

export class TtrpcClient extends EventEmitter<ClientEvents> {
  readonly connection: FrameConnection;
  private readonly pending = new Map<number, PendingCall>();
  private readonly logger: Logger;
  private readonly maxPayload: number;
  private readonly logThrottle = new LogThrottle();
  private nextStreamId = 1;
  private dataHandler: ((frame: Frame) => void) | undefined;

  /** Connects to a unix socket; rejects with Unavailable when nothing answers within `timeoutMs`. */
  static connect(socketPath: string, options: TtrpcClientOptions & { timeoutMs?: number } = {}): Promise<TtrpcClient> {
    return new Promise((resolve, reject) => {
      const socket = net.createConnection(socketPath);
      const timeoutMs = options.timeoutMs ?? 10_000;
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new RpcError(Code.Unavailable, `ttrpc: connect to ${socketPath} timed out after ${timeoutMs}ms`));
      }, timeoutMs);
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        reject(new RpcError(Code.Unavailable, `ttrpc: cannot connect to ${socketPath}: ${err.code ?? err.message}`));
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new TtrpcClient(socket, { ...options, name: options.name ?? `ttrpc client ${socketPath}` }));
      });
    });
  }

  constructor(stream: Duplex, options: TtrpcClientOptions = {}) {
    super();
    this.logger = options.logger ?? stderrLogger('warn', { component: 'ttrpc' });
    this.maxPayload = options.maxPayload ?? MAX_FRAME_PAYLOAD;
    this.connection = new FrameConnection(stream, {
      name: options.name ?? 'ttrpc client',
      logger: this.logger,
      maxPayload: this.maxPayload,
    });
    this.connection.on('frame', (frame) => this.onFrame(frame));
    this.connection.on('oversized', (oversized) => this.onOversized(oversized));
    this.connection.once('close', (reason) => this.onClose(reason));
  }

  get closed(): boolean {
    return this.connection.closed;
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  /** Calls `method` of a generated service definition with typed request and response. */
  async call<D extends ServiceDefinition, K extends MethodKey<D>>(
    definition: D,
    method: K,
    request: RequestOf<D, K>,
    options: CallOptions = {},
  ): Promise<ResponseOf<D, K>> {
    const descriptor = definition.methods[method];
    if (!descriptor) throw new RpcError(Code.InvalidArgument, `ttrpc: ${definition.fullName} has no method ${method}`);
    const payload = descriptor.requestType.encode(request).finish();
    const answer = await this.callRaw(definition.fullName, descriptor.name, payload, options);
    try {
      return descriptor.responseType.decode(answer) as ResponseOf<D, K>;
    } catch (err) {
      throw new RpcError(Code.Internal, `${definition.fullName}/${descriptor.name}: cannot decode response: ${messageOf(err)}`);
    }
  }

  /** The untyped call: encoded request payload in, encoded response payload out. */
  callRaw(service: string, method: string, payload: Uint8Array, options: CallOptions = {}): Promise<Buffer> {
    const label = `${service}/${method}`;
    if (this.connection.closed) {
      return Promise.reject(new RpcError(Code.Unavailable, `${label}: ttrpc: ${this.closedMessage()}`));
    }
    if (options.signal?.aborted) {
      return Promise.reject(new RpcError(Code.Canceled, `${label}: canceled before it was sent`));
    }
    if (this.nextStreamId > MAX_STREAM_ID) {
      return Promise.reject(new RpcError(Code.ResourceExhausted, `${label}: ttrpc stream ids exhausted on ${this.connection.name}; reconnect`));
    }
    const timeoutMs = options.timeoutMs;
    if (timeoutMs !== undefined && !(timeoutMs > 0 && timeoutMs <= MAX_TIMER_MS)) {
      return Promise.reject(new RpcError(Code.InvalidArgument, `${label}: timeout must be 1..${MAX_TIMER_MS} ms, got ${timeoutMs}`));
    }
    const encoded = Request.encode({
      service,
      method,
      payload: Buffer.from(payload.buffer, payload.byteOffset, payload.length),
      timeoutNano: timeoutMs === undefined ? 0 : Math.round(timeoutMs * 1e6),
      metadata: Object.entries(options.metadata ?? {}).flatMap(([key, value]) =>
        (typeof value === 'string' ? [value] : value).map((v) => ({ key, value: v })),
      ),
    }).finish();
    if (encoded.length > this.maxPayload) {
      return Promise.reject(new RpcError(Code.ResourceExhausted, `${label}: request ${oversizedMessage(encoded.length, this.maxPayload)}`));
    }
    const streamId = this.nextStreamId;
    this.nextStreamId += 2;
    return new Promise<Buffer>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = (): void => settle(() => reject(new RpcError(Code.Canceled, `${label}: canceled`)));
      const settle = (action: () => void): void => {
        if (!this.pending.delete(streamId)) return;
        if (timer) clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        action();
      };
      this.pending.set(streamId, {
        label,
        resolve: (answer) => settle(() => resolve(answer)),
        reject: (err) => settle(() => reject(err)),
      });
      if (timeoutMs !== undefined) {
        timer = setTimeout(
          () => settle(() => reject(new RpcError(Code.DeadlineExceeded, `${label}: no answer within ${timeoutMs}ms`))),
          timeoutMs,
        );
      }
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.connection.send(streamId, FrameType.Request, 0, encoded);
    });
  }

  /** Receives every type-3 frame; without a handler they are logged and dropped. */
  setDataFrameHandler(handler: ((frame: Frame) => void) | undefined): void {
    this.dataHandler = handler;
  }

  /** Sends a type-3 frame. Returns false when the connection is closed or its write buffer is full. */
  sendData(streamId: number, flags: number, payload?: Uint8Array): boolean {
    return this.connection.send(streamId, FrameType.Data, flags, payload);
  }

  /** Closes the connection; pending calls reject with Unavailable (naming `reason` when given). */
  close(reason?: Error): void {
    this.connection.close(reason);
  }

  private onFrame(frame: Frame): void {
    switch (frame.type) {
      case FrameType.Response:
        this.onResponse(frame);
        return;
      case FrameType.Data:
        if (this.dataHandler) this.dataHandler(frame);
        else this.warnThrottled('ttrpc: dropping data frame: no stream layer', { conn: this.connection.name, stream: frame.streamId });
        return;
      default:
        this.warnThrottled('ttrpc: ignoring request frame sent to a client', { conn: this.connection.name, stream: frame.streamId });
    }
  }

  private onResponse(frame: Frame): void {
    const call = this.pending.get(frame.streamId);
    if (!call) {
      // Most likely a call that timed out or was canceled here.
      this.logger.debug('ttrpc: response for no pending call', { conn: this.connection.name, stream: frame.streamId });
      return;
    }
    let response: Response;
    try {
      response = Response.decode(frame.payload);
    } catch (err) {
      call.reject(new RpcError(Code.Internal, `${call.label}: malformed ttrpc response: ${messageOf(err)}`));
      return;
    }
    if (response.status && response.status.code !== Code.OK) {
      call.reject(errorFromStatus(response.status));
      return;
    }
    call.resolve(response.payload);
  }

  private onOversized(oversized: OversizedFrame): void {
    const message = oversizedMessage(oversized.length, this.maxPayload);
    const call = oversized.type === FrameType.Response ? this.pending.get(oversized.streamId) : undefined;
    if (call) call.reject(new RpcError(Code.ResourceExhausted, `${call.label}: response ${message}`));
    else this.warnThrottled(`ttrpc: discarded frame: ${message}`, { conn: this.connection.name, stream: oversized.streamId });
  }

  /** The peer decides how often these happen (one per frame): a budget per connection. */
  private warnThrottled(msg: string, fields: Record<string, unknown>): void {
    const held = this.logThrottle.admit();
    if (held !== null) this.logger.warn(msg, withSuppressed(fields, held));
  }

  private onClose(reason: Error | undefined): void {
    const message = this.closedMessage();
    for (const call of [...this.pending.values()]) {
      call.reject(new RpcError(Code.Unavailable, `${call.label}: ttrpc: ${message}`));
    }
    this.emit('close', reason);
  }

  private closedMessage(): string {
    const reason = this.connection.closeReason;
    return reason ? `connection closed: ${reason.message}` : 'connection closed';
  }
}
