// One framed byte stream (a unix socket, a vsock or virtio-serial channel, or any Duplex):
// decodes incoming frames, encodes outgoing ones, and owns the stream's lifetime. The ttrpc
// server and client are built on it, and so are smolvm's data-frame streams (type 3), which
// is why sending and receiving raw frames is public here rather than hidden in the RPC layer.
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import type { Logger } from '../log';
import {
  DecodedItem,
  encodeFrame,
  Frame,
  FrameDecoder,
  FrameError,
  FrameType,
  MAX_FRAME_PAYLOAD,
  OversizedFrame,
} from './frame';

export interface FrameConnectionOptions {
  /** Names the connection in log lines and errors, e.g. "ttrpc server conn 3". */
  readonly name: string;
  readonly logger: Logger;
  readonly maxPayload?: number;
}

export interface FrameConnectionEvents {
  frame: [frame: Frame];
  oversized: [oversized: OversizedFrame];
  /** Emitted once; `reason` is set when the connection ended because of an error. */
  close: [reason: Error | undefined];
}

export class FrameConnection extends EventEmitter<FrameConnectionEvents> {
  readonly name: string;
  private readonly decoder: FrameDecoder;
  private readonly logger: Logger;
  private readonly maxPayload: number;
  private closedReason: Error | undefined;
  private isClosed = false;

  constructor(private readonly stream: Duplex, options: FrameConnectionOptions) {
    super();
    this.name = options.name;
    this.logger = options.logger;
    this.maxPayload = options.maxPayload ?? MAX_FRAME_PAYLOAD;
    this.decoder = new FrameDecoder(this.maxPayload);
    stream.on('data', (chunk: Buffer | string) => this.onData(chunk));
    stream.on('end', () => this.onEnd());
    stream.on('error', (err: Error) => this.shutdown(new Error(`${this.name}: ${err.message}`), 'error'));
    stream.on('close', () => this.shutdown(undefined, 'closed'));
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Why the connection ended, when it ended with an error. */
  get closeReason(): Error | undefined {
    return this.closedReason;
  }

  /**
   * Writes one frame. Returns false when the connection is closed (the frame is dropped) or
   * the stream's write buffer is above its high-water mark (the frame is still queued).
   * Throws RangeError for a frame that cannot be encoded (e.g. an oversized payload).
   */
  send(streamId: number, type: FrameType, flags: number, payload?: Uint8Array): boolean {
    if (this.isClosed) return false;
    const bytes = encodeFrame(streamId, type, flags, payload, this.maxPayload);
    return this.stream.write(bytes);
  }

  /** Ends the connection (idempotent). With `reason`, it is logged and reported as an error. */
  close(reason?: Error): void {
    this.shutdown(reason, reason ? 'error' : 'closed');
  }

  private onData(chunk: Buffer | string): void {
    if (this.isClosed) return;
    let items: DecodedItem[];
    try {
      items = this.decoder.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    } catch (err) {
      this.shutdown(err instanceof Error ? err : new FrameError(String(err)), 'error');
      return;
    }
    for (const item of items) {
      if (this.isClosed) return;
      // A listener's bug must not take the connection (or the process) down unlogged.
      try {
        if (item.kind === 'frame') this.emit('frame', item.frame);
        else this.emit('oversized', item.oversized);
      } catch (err) {
        this.logger.error('ttrpc: frame handler threw', { conn: this.name, err: String(err) });
      }
    }
  }

  private onEnd(): void {
    try {
      this.decoder.end();
      this.shutdown(undefined, 'closed');
    } catch (err) {
      this.shutdown(err instanceof Error ? err : new FrameError(String(err)), 'error');
    }
  }

  private shutdown(reason: Error | undefined, how: 'error' | 'closed'): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.closedReason = reason;
    if (reason && how === 'error') {
      this.logger.error(`ttrpc: closing connection: ${reason.message}`, { conn: this.name });
    }
    this.stream.destroy();
    this.emit('close', reason);
  }
}
