// Flow-controlled one-way byte streams over ttrpc data frames (type 3), as the agent contract
// (proto/smolvm/agent.proto) defines them. Used on both ends: the host sends stdin and receives
// stdout/stderr; a test's fake agent does the opposite with the same code.
//
//   data:   type 3, payload 1..max_data_frame bytes, flags 0
//   EOF:    type 3, flag REMOTE_CLOSED (0x01), possibly with NO_DATA (0x04) and no payload
//   credit: type 3 the other way on the same stream, flag CREDIT (0x08), payload u32 BE grant
//
// The sender never has more than its credit in unacknowledged bytes; the receiver grants bytes
// back only once its sink has taken them (the write callback), so a stalled sink stops exactly
// its own stream, and nothing grows without bound in between.
import type { Writable } from 'node:stream';
import { messageOf } from '../errdefs';
import type { Logger } from '../log';
import { Frame, FrameFlag } from '../ttrpc/frame';
import { LogThrottle, withSuppressed } from '../util/log-throttle';

/** The contract's upper bound on a data frame's payload. */
export const MAX_DATA_FRAME = 65536;
/**
 * The most a guest may announce as a stream's window (the handshake's initial_stream_credit):
 * the host buffers up to this much per inbound stream while its sink is slow, so a hostile
 * agent announcing gigabytes would make the shim hold gigabytes. Our agent announces 256 KiB.
 */
export const MAX_STREAM_CREDIT = 1024 * 1024;
const CREDIT_PAYLOAD_LENGTH = 4;
/** Credit is tracked in a u32 on the wire; cap the sum so a generous peer cannot overflow it. */
const MAX_CREDIT = 0x7fff_ffff;

export interface DataFrameSender {
  sendData(streamId: number, flags: number, payload?: Uint8Array): boolean;
}

export interface StreamLimits {
  /** Credit each direction starts with (the handshake's initial_stream_credit). */
  readonly initialCredit: number;
  /** Largest payload sent in one data frame (the handshake's max_data_frame, at most 64 KiB). */
  readonly maxDataFrame: number;
}

/** A byte source such as a FIFO socket or process.stdin. */
export type ByteSource = NodeJS.ReadableStream;

export function creditPayload(grant: number): Buffer {
  const payload = Buffer.alloc(CREDIT_PAYLOAD_LENGTH);
  payload.writeUInt32BE(grant, 0);
  return payload;
}

/** Receives one stream into a sink, granting credit back as the sink accepts bytes. */
export class InboundStream {
  /** Resolves when EOF arrived and every byte reached the sink (and it was ended, if asked), or on detach. */
  readonly done: Promise<void>;
  private resolveDone!: () => void;
  private outstanding = 0;
  private writesPending = 0;
  private eof = false;
  private finished = false;
  private sinkBroken = false;
  private received = 0;

  constructor(
    readonly streamId: number,
    private readonly sink: Writable,
    private readonly endSink: boolean,
    private readonly mux: StreamMux,
  ) {
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });
    // A sink's 'error' event must never reach the process as an uncaught exception (a FIFO
    // whose reader vanished, a closed log file); the write callbacks handle the failure.
    sink.on('error', (err: Error) => mux.logger.debug(`agent stream: sink of stream ${streamId}: ${err.message}`));
  }

  get bytesReceived(): number {
    return this.received;
  }

  /** Stops delivering (late frames are dropped) and resolves `done`; the sink is left as it is. */
  detach(): void {
    this.finish(false);
  }

  onData(frame: Frame): void {
    if (this.finished || this.eof) {
      this.mux.logDrop(`data after EOF on stream ${this.streamId}`);
      return;
    }
    const payload = frame.payload;
    if (payload.length > 0) {
      if (this.outstanding + payload.length > this.mux.limits.initialCredit) {
        // The peer ignored flow control: refuse to buffer beyond the window.
        this.mux.logThrottled('error', 'agent stream: peer exceeded its credit; dropping data', {
          stream: this.streamId,
          outstanding: this.outstanding,
          frame: payload.length,
          window: this.mux.limits.initialCredit,
        });
        return;
      }
      this.outstanding += payload.length;
      this.received += payload.length;
      this.deliver(payload);
    }
    if (frame.flags & FrameFlag.RemoteClosed) {
      this.eof = true;
      this.maybeFinish();
    }
  }

  private deliver(payload: Buffer): void {
    if (this.sinkBroken) {
      // Discard but keep the guest process running rather than blocking it forever.
      this.granted(payload.length);
      return;
    }
    this.writesPending++;
    try {
      this.sink.write(payload, (err) => {
        this.writesPending--;
        if (err && !this.sinkBroken) {
          this.sinkBroken = true;
          this.mux.logger.warn(`agent stream: sink of stream ${this.streamId} failed; discarding its output: ${err.message}`);
        }
        this.granted(payload.length);
        this.maybeFinish();
      });
    } catch (err) {
      this.writesPending--;
      this.sinkBroken = true;
      this.mux.logger.warn(`agent stream: sink of stream ${this.streamId} failed; discarding its output: ${messageOf(err)}`);
      this.granted(payload.length);
    }
  }

  private granted(bytes: number): void {
    this.outstanding -= bytes;
    if (!this.finished && !this.eof) this.mux.sendCredit(this.streamId, bytes);
  }

  private maybeFinish(): void {
    if (this.eof && this.writesPending === 0 && !this.finished) this.finish(this.endSink && !this.sinkBroken);
  }

  private finish(endSink: boolean): void {
    if (this.finished) return;
    this.finished = true;
    this.mux.forget(this.streamId, this);
    if (!endSink) {
      this.resolveDone();
      return;
    }
    const sink = this.sink;
    sink.once('error', () => this.resolveDone());
    sink.end(() => this.resolveDone());
  }
}

/** Sends one source as a stream under the peer's credit. */
export class OutboundStream {
  /** Resolves once EOF was sent, or the stream was stopped. */
  readonly done: Promise<void>;
  private resolveDone!: () => void;
  private credit: number;
  private readonly queue: Buffer[] = [];
  private sourceEnded = false;
  private finished = false;
  private sent = 0;
  private readonly onSourceData = (chunk: Buffer | string): void => {
    this.queue.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    this.pump();
  };
  private readonly onSourceEnd = (): void => {
    this.sourceEnded = true;
    this.pump();
  };
  private readonly onSourceError = (err: Error): void => {
    if (this.finished) return;
    // The guest process gets EOF instead of waiting forever on a source that is gone.
    this.mux.logger.warn(`agent stream: source of stream ${this.streamId} failed; sending EOF: ${err.message}`);
    this.sourceEnded = true;
    this.pump();
  };

  constructor(
    readonly streamId: number,
    private readonly source: ByteSource,
    private readonly mux: StreamMux,
  ) {
    this.credit = mux.limits.initialCredit;
    this.done = new Promise((resolve) => {
      this.resolveDone = resolve;
    });
    source.on('data', this.onSourceData);
    source.on('end', this.onSourceEnd);
    source.on('error', this.onSourceError);
    source.resume();
    // A source that already ended before it was attached will not emit 'end' again.
    if ('readableEnded' in source && source.readableEnded === true) this.onSourceEnd();
  }

  get bytesSent(): number {
    return this.sent;
  }

  get availableCredit(): number {
    return this.credit;
  }

  /**
   * Stops reading the source. With `sendEof`, the peer gets EOF right after what was already
   * sent (bytes still queued for lack of credit are discarded); without, nothing more is sent.
   */
  stop(sendEof: boolean): void {
    if (this.finished) return;
    const discarded = this.queue.reduce((sum, chunk) => sum + chunk.length, 0);
    if (discarded > 0) this.mux.logger.debug(`agent stream: discarding ${discarded} unsent bytes of stream ${this.streamId}`);
    this.queue.length = 0;
    if (sendEof) this.mux.sendEof(this.streamId);
    this.finish();
  }

  onCredit(grant: number): void {
    if (this.finished) return;
    this.credit = Math.min(MAX_CREDIT, this.credit + grant);
    this.pump();
  }

  private pump(): void {
    if (this.finished) return;
    while (this.queue.length > 0 && this.credit > 0) {
      const head = this.queue[0]!;
      const size = Math.min(head.length, this.credit, this.mux.limits.maxDataFrame);
      const piece = size === head.length ? head : head.subarray(0, size);
      if (size === head.length) this.queue.shift();
      else this.queue[0] = head.subarray(size);
      if (piece.length === 0) continue;
      this.credit -= piece.length;
      this.sent += piece.length;
      this.mux.sender.sendData(this.streamId, 0, piece);
    }
    if (this.queue.length > 0) {
      // Out of credit: stop reading until the peer grants more.
      this.source.pause();
      return;
    }
    if (this.sourceEnded) {
      this.mux.sendEof(this.streamId);
      this.finish();
      return;
    }
    if (this.source.isPaused()) this.source.resume();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.source.off('data', this.onSourceData);
    this.source.off('end', this.onSourceEnd);
    // The 'error' listener stays: a later source error must not become an uncaught exception.
    this.source.pause();
    this.mux.forget(this.streamId, this);
    this.resolveDone();
  }
}

/** All data streams of one connection, keyed by stream id. Feed it every type-3 frame. */
export class StreamMux {
  private readonly streams = new Map<number, InboundStream | OutboundStream>();
  private drops = 0;
  /** Lines the peer can trigger per frame share one budget per connection. */
  private readonly throttle: LogThrottle;

  constructor(
    readonly sender: DataFrameSender,
    readonly limits: StreamLimits,
    readonly logger: Logger,
    throttle: LogThrottle = new LogThrottle(),
  ) {
    this.throttle = throttle;
    if (!(limits.initialCredit > 0 && limits.initialCredit <= MAX_STREAM_CREDIT)) {
      throw new RangeError(`agent streams: initial credit must be 1..${MAX_STREAM_CREDIT} bytes, got ${limits.initialCredit}`);
    }
    if (!(limits.maxDataFrame > 0 && limits.maxDataFrame <= MAX_DATA_FRAME)) {
      throw new RangeError(`agent streams: max data frame must be 1..${MAX_DATA_FRAME}, got ${limits.maxDataFrame}`);
    }
  }

  get size(): number {
    return this.streams.size;
  }

  /** Delivers stream `streamId` into `sink`; `endSink` ends the sink after EOF. */
  receive(streamId: number, sink: Writable, endSink: boolean): InboundStream {
    this.assertFree(streamId);
    const stream = new InboundStream(streamId, sink, endSink, this);
    this.streams.set(streamId, stream);
    return stream;
  }

  /** Sends `source` as stream `streamId`, EOF when it ends. */
  send(streamId: number, source: ByteSource): OutboundStream {
    this.assertFree(streamId);
    const stream = new OutboundStream(streamId, source, this);
    this.streams.set(streamId, stream);
    return stream;
  }

  /** Routes one type-3 frame: credit to the outbound stream, data to the inbound one. */
  handleFrame(frame: Frame): void {
    const stream = this.streams.get(frame.streamId);
    if (frame.flags & FrameFlag.Credit) {
      if (frame.payload.length !== CREDIT_PAYLOAD_LENGTH) {
        this.logDrop(`credit frame with ${frame.payload.length}-byte payload on stream ${frame.streamId} (want 4)`);
        return;
      }
      if (stream instanceof OutboundStream) stream.onCredit(frame.payload.readUInt32BE(0));
      else if (!stream) this.logger.debug(`agent stream: credit for closed stream ${frame.streamId}`);
      else this.logDrop(`credit frame on receive-only stream ${frame.streamId}`);
      return;
    }
    if (stream instanceof InboundStream) stream.onData(frame);
    else if (!stream) this.logDrop(`data for unknown stream ${frame.streamId} (${frame.payload.length} bytes)`);
    else this.logDrop(`data on send-only stream ${frame.streamId}`);
  }

  /** Ends every stream without sending anything (the connection is gone). */
  detachAll(): void {
    for (const stream of [...this.streams.values()]) {
      if (stream instanceof InboundStream) stream.detach();
      else stream.stop(false);
    }
  }

  sendCredit(streamId: number, bytes: number): void {
    if (bytes > 0) this.sender.sendData(streamId, FrameFlag.Credit, creditPayload(bytes));
  }

  sendEof(streamId: number): void {
    this.sender.sendData(streamId, FrameFlag.RemoteClosed | FrameFlag.NoData);
  }

  forget(streamId: number, stream: InboundStream | OutboundStream): void {
    if (this.streams.get(streamId) === stream) this.streams.delete(streamId);
  }

  /** Logs a dropped frame; a flood from a confused or hostile peer is summarized, not echoed. */
  logDrop(what: string): void {
    this.drops++;
    this.logThrottled('warn', `agent stream: dropping ${what}`, { dropped: this.drops });
  }

  /** A line the peer can cause at will: within the connection's log budget, else counted. */
  logThrottled(level: 'warn' | 'error', msg: string, fields?: Record<string, unknown>): void {
    const held = this.throttle.admit();
    if (held !== null) this.logger[level](msg, withSuppressed(fields, held));
  }

  private assertFree(streamId: number): void {
    if (!Number.isInteger(streamId) || streamId <= 0 || streamId % 2 !== 0 || streamId > 0xffff_ffff) {
      throw new RangeError(`agent streams: stream id ${streamId} is not a non-zero even u32`);
    }
    if (this.streams.has(streamId)) throw new RangeError(`agent streams: stream ${streamId} is already open`);
  }
}
