// ttrpc framing (containerd/ttrpc PROTOCOL.md): a 10-byte big-endian header
//   u32 payload length | u32 stream id | u8 type | u8 flags
// followed by the payload. The decoder is incremental and checks every length BEFORE it
// allocates: an oversized frame's payload is skipped as it streams by (never buffered) and
// reported, so the server can answer RESOURCE_EXHAUSTED on that stream and keep the
// connection, as upstream ttrpc does. Bytes that cannot be a frame at all (an unknown type)
// mean the stream is out of sync: that is a FrameError, fatal for that connection only.

export const FRAME_HEADER_LENGTH = 10;
/** Upstream's messageLengthMax: 4 MiB. */
export const MAX_FRAME_PAYLOAD = 4 << 20;
export const MAX_STREAM_ID = 0xffff_ffff;

export enum FrameType {
  Request = 1,
  Response = 2,
  Data = 3,
}

/** Frame flags. 0x08 (CREDIT) is smolvm's agent-protocol extension for data frames. */
export const FrameFlag = {
  RemoteClosed: 0x01,
  RemoteOpen: 0x02,
  NoData: 0x04,
  Credit: 0x08,
} as const;

export interface Frame {
  readonly streamId: number;
  readonly type: FrameType;
  readonly flags: number;
  readonly payload: Buffer;
}

/** A frame whose declared length exceeded the limit; its payload was discarded unread. */
export interface OversizedFrame {
  readonly streamId: number;
  readonly type: FrameType;
  readonly flags: number;
  readonly length: number;
}

export type DecodedItem =
  | { readonly kind: 'frame'; readonly frame: Frame }
  | { readonly kind: 'oversized'; readonly oversized: OversizedFrame };

/** The byte stream cannot be framed (garbage or truncation): the connection is unusable. */
export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FrameError';
  }
}

function isFrameType(value: number): value is FrameType {
  return value === FrameType.Request || value === FrameType.Response || value === FrameType.Data;
}

export function oversizedMessage(length: number, limit = MAX_FRAME_PAYLOAD): string {
  // Upstream wording, so logs and errors read the same as containerd's.
  return `message length ${length} exceed maximum message size of ${limit}`;
}

/** Encodes one frame (header + payload) into a single buffer, ready for one write(). */
export function encodeFrame(
  streamId: number,
  type: FrameType,
  flags: number,
  payload: Uint8Array = Buffer.alloc(0),
  maxPayload = MAX_FRAME_PAYLOAD,
): Buffer {
  if (!Number.isInteger(streamId) || streamId < 0 || streamId > MAX_STREAM_ID) {
    throw new RangeError(`ttrpc: stream id ${streamId} is not a u32`);
  }
  if (!isFrameType(type)) throw new RangeError(`ttrpc: frame type ${String(type)} is unknown`);
  if (!Number.isInteger(flags) || flags < 0 || flags > 0xff) {
    throw new RangeError(`ttrpc: frame flags ${flags} do not fit in a byte`);
  }
  if (payload.length > maxPayload) throw new RangeError(`ttrpc: ${oversizedMessage(payload.length, maxPayload)}`);
  const out = Buffer.allocUnsafe(FRAME_HEADER_LENGTH + payload.length);
  out.writeUInt32BE(payload.length, 0);
  out.writeUInt32BE(streamId, 4);
  out.writeUInt8(type, 8);
  out.writeUInt8(flags, 9);
  out.set(payload, FRAME_HEADER_LENGTH);
  return out;
}

/**
 * Incremental decoder: feed it chunks as they arrive; it returns the complete frames (and
 * oversized-frame reports) in order. Memory is bounded by one header plus one in-limit payload.
 */
export class FrameDecoder {
  private readonly header = Buffer.alloc(FRAME_HEADER_LENGTH);
  private headerFill = 0;
  /** The frame whose payload is being received (payload !== null) or skipped. */
  private current: { streamId: number; type: FrameType; flags: number; length: number } | null = null;
  private payload: Buffer | null = null;
  private payloadFill = 0;
  private skipRemaining = 0;
  private failed: FrameError | null = null;

  constructor(private readonly maxPayload = MAX_FRAME_PAYLOAD) {}

  /** True when no partial frame is pending (a clean place for the stream to end). */
  get idle(): boolean {
    return this.headerFill === 0 && this.current === null;
  }

  /** Consumes a chunk. Throws FrameError for bytes that cannot be framed; the decoder stays failed. */
  push(chunk: Buffer): DecodedItem[] {
    if (this.failed) throw this.failed;
    const items: DecodedItem[] = [];
    let offset = 0;
    while (offset < chunk.length) {
      if (this.current === null) {
        const take = Math.min(FRAME_HEADER_LENGTH - this.headerFill, chunk.length - offset);
        chunk.copy(this.header, this.headerFill, offset, offset + take);
        this.headerFill += take;
        offset += take;
        if (this.headerFill < FRAME_HEADER_LENGTH) break;
        this.headerFill = 0;
        const item = this.startFrame();
        if (item) items.push(item);
        continue;
      }
      if (this.payload === null) {
        // Skipping an oversized payload: discard without buffering.
        const take = Math.min(this.skipRemaining, chunk.length - offset);
        this.skipRemaining -= take;
        offset += take;
        if (this.skipRemaining === 0) this.current = null;
        continue;
      }
      const take = Math.min(this.payload.length - this.payloadFill, chunk.length - offset);
      chunk.copy(this.payload, this.payloadFill, offset, offset + take);
      this.payloadFill += take;
      offset += take;
      if (this.payloadFill === this.payload.length) items.push(this.finishFrame());
    }
    return items;
  }

  /** Called when the byte stream ends: a partial frame is a truncation error. */
  end(): void {
    if (this.failed) return;
    if (this.headerFill > 0) {
      throw this.fail(`truncated frame: stream ended after ${this.headerFill} of ${FRAME_HEADER_LENGTH} header bytes`);
    }
    if (this.current !== null) {
      const got = this.payload === null ? this.current.length - this.skipRemaining : this.payloadFill;
      throw this.fail(
        `truncated frame: stream ${this.current.streamId} ended after ${got} of ${this.current.length} payload bytes`,
      );
    }
  }

  private startFrame(): DecodedItem | null {
    const length = this.header.readUInt32BE(0);
    const streamId = this.header.readUInt32BE(4);
    const type = this.header.readUInt8(8);
    const flags = this.header.readUInt8(9);
    if (!isFrameType(type)) {
      throw this.fail(
        `malformed frame: unknown type ${type} (stream ${streamId}, length ${length}, header ${this.header.toString('hex')})`,
      );
    }
    if (length > this.maxPayload) {
      // Checked before any allocation: the payload is skipped, not read.
      this.current = { streamId, type, flags, length };
      this.payload = null;
      this.skipRemaining = length;
      return { kind: 'oversized', oversized: { streamId, type, flags, length } };
    }
    this.current = { streamId, type, flags, length };
    this.payload = Buffer.allocUnsafe(length);
    this.payloadFill = 0;
    return length === 0 ? this.finishFrame() : null;
  }

  private finishFrame(): DecodedItem {
    const current = this.current!;
    const frame: Frame = { streamId: current.streamId, type: current.type, flags: current.flags, payload: this.payload! };
    this.current = null;
    this.payload = null;
    this.payloadFill = 0;
    return { kind: 'frame', frame };
  }

  private fail(message: string): FrameError {
    this.failed = new FrameError(message);
    return this.failed;
  }
}
