// The containerd 2.3+ bootstrap messages on the `start` path, read and written by hand: `start`
// runs on every container start and must not load generated protobuf code. Only what `start`
// needs: BootstrapParams in (proto/containerd/bootstrap/v1/bootstrap.proto), BootstrapResult out.
// The unit tests check this codec against the generated one.

export interface BootstrapExtension {
  typeUrl: string;
  value: Buffer;
}

/** containerd.runtime.bootstrap.v1.BootstrapParams, field numbers 1-9. */
export interface BootstrapParams {
  instanceId: string;
  namespace: string;
  /** Open enum: INFO 0, TRACE -8, DEBUG -4, WARN 4, ERROR 8, FATAL 10, PANIC 12. */
  logLevel: number;
  containerdVersion: string;
  containerdTtrpcAddress: string;
  containerdGrpcAddress: string;
  containerdBinary: string;
  extensions: BootstrapExtension[];
  /** Absent when containerd did not send field 9. */
  socketDir: string | undefined;
}

/** containerd.runtime.bootstrap.v1.BootstrapResult (capabilities left out: we advertise none). */
export interface BootstrapResult {
  version: number;
  address: string;
  protocol: string;
  metadata: Record<string, string>;
}

export const LOG_LEVEL_DEBUG = -4;

/** Bounds on what `start` accepts on stdin: upstream reads at most 10 MiB. */
export const MAX_BOOTSTRAP_BYTES = 10 << 20;

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

export class WireError extends Error {}

/** A bounds-checked reader over one protobuf message. */
class Reader {
  private pos = 0;
  constructor(private readonly buf: Buffer) {}

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  /** A varint as a number; 64-bit values keep their low 53 bits (enough for tags, lengths, int32). */
  varint(): number {
    let result = 0;
    let scale = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) throw new WireError('truncated varint');
      const byte = this.buf[this.pos++]!;
      if (i < 8) result += (byte & 0x7f) * scale;
      scale *= 128;
      if ((byte & 0x80) === 0) return result;
    }
    throw new WireError('varint longer than 10 bytes');
  }

  /** An int32 field: negative values travel as 10-byte two's-complement varints. */
  int32(): number {
    const start = this.pos;
    this.varint();
    // Re-read the low 32 bits exactly.
    let low = 0;
    for (let i = 0, p = start; i < 5 && p < this.pos; i++, p++) low |= (this.buf[p]! & 0x7f) << (7 * i);
    return low | 0;
  }

  bytes(): Buffer {
    const length = this.varint();
    if (length > this.buf.length - this.pos) throw new WireError(`length ${length} runs past the end of the message`);
    const out = this.buf.subarray(this.pos, this.pos + length);
    this.pos += length;
    return out;
  }

  string(): string {
    const raw = this.bytes();
    const text = raw.toString('utf8');
    // proto3 strings are UTF-8; Go's decoder refuses anything else, and so do we.
    if (!Buffer.from(text, 'utf8').equals(raw)) throw new WireError('string field is not valid UTF-8');
    return text;
  }

  skip(wireType: number): void {
    switch (wireType) {
      case WIRE_VARINT: this.varint(); return;
      case WIRE_I64: this.advance(8); return;
      case WIRE_LEN: this.bytes(); return;
      case WIRE_I32: this.advance(4); return;
      default: throw new WireError(`unsupported wire type ${wireType}`);
    }
  }

  private advance(n: number): void {
    if (n > this.buf.length - this.pos) throw new WireError('truncated fixed-width field');
    this.pos += n;
  }
}

function expectWireType(field: number, got: number, want: number): void {
  if (got !== want) throw new WireError(`field ${field} has wire type ${got}, want ${want}`);
}

function decodeAny(buf: Buffer): BootstrapExtension {
  const reader = new Reader(buf);
  const any: BootstrapExtension = { typeUrl: '', value: Buffer.alloc(0) };
  while (!reader.done) {
    const tag = reader.varint();
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (field === 1) { expectWireType(field, wireType, WIRE_LEN); any.typeUrl = reader.string(); }
    else if (field === 2) { expectWireType(field, wireType, WIRE_LEN); any.value = Buffer.from(reader.bytes()); }
    else reader.skip(wireType);
  }
  return any;
}

function decodeExtension(buf: Buffer): BootstrapExtension | null {
  const reader = new Reader(buf);
  let value: BootstrapExtension | null = null;
  while (!reader.done) {
    const tag = reader.varint();
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (field === 1) { expectWireType(field, wireType, WIRE_LEN); value = decodeAny(reader.bytes()); }
    else reader.skip(wireType);
  }
  return value;
}

/**
 * Decodes a BootstrapParams. Throws WireError on anything that is not a well-formed message of
 * that shape; unknown fields are skipped, as protobuf requires.
 */
export function decodeBootstrapParams(buf: Buffer): BootstrapParams {
  const reader = new Reader(buf);
  const params: BootstrapParams = {
    instanceId: '', namespace: '', logLevel: 0, containerdVersion: '', containerdTtrpcAddress: '',
    containerdGrpcAddress: '', containerdBinary: '', extensions: [], socketDir: undefined,
  };
  const strings: Record<number, 'instanceId' | 'namespace' | 'containerdVersion' | 'containerdTtrpcAddress' | 'containerdGrpcAddress' | 'containerdBinary'> = {
    1: 'instanceId', 2: 'namespace', 4: 'containerdVersion', 5: 'containerdTtrpcAddress', 6: 'containerdGrpcAddress', 7: 'containerdBinary',
  };
  while (!reader.done) {
    const tag = reader.varint();
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (field === 0) throw new WireError('field number 0');
    const stringKey = strings[field];
    if (stringKey) {
      expectWireType(field, wireType, WIRE_LEN);
      params[stringKey] = reader.string();
    } else if (field === 3) {
      expectWireType(field, wireType, WIRE_VARINT);
      params.logLevel = reader.int32();
    } else if (field === 8) {
      expectWireType(field, wireType, WIRE_LEN);
      const extension = decodeExtension(reader.bytes());
      if (extension) params.extensions.push(extension);
    } else if (field === 9) {
      expectWireType(field, wireType, WIRE_LEN);
      params.socketDir = reader.string();
    } else {
      reader.skip(wireType);
    }
  }
  return params;
}

class Writer {
  private readonly chunks: Buffer[] = [];

  varint(value: number): void {
    const out: number[] = [];
    let v = value;
    while (v >= 0x80) {
      out.push((v % 128) | 0x80);
      v = Math.floor(v / 128);
    }
    out.push(v);
    this.chunks.push(Buffer.from(out));
  }

  tag(field: number, wireType: number): void {
    this.varint(field * 8 + wireType);
  }

  bytesField(field: number, value: Buffer): void {
    this.tag(field, WIRE_LEN);
    this.varint(value.length);
    this.chunks.push(value);
  }

  finish(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

/** Encodes a BootstrapResult as protobuf binary, fields in number order, proto3 defaults omitted. */
export function encodeBootstrapResult(result: BootstrapResult): Buffer {
  if (!Number.isInteger(result.version) || result.version < 0 || result.version > 0x7fff_ffff) {
    throw new RangeError(`bootstrap result version ${result.version} is not a non-negative int32`);
  }
  const w = new Writer();
  if (result.version !== 0) { w.tag(1, WIRE_VARINT); w.varint(result.version); }
  if (result.address) w.bytesField(2, Buffer.from(result.address, 'utf8'));
  if (result.protocol) w.bytesField(3, Buffer.from(result.protocol, 'utf8'));
  for (const [key, value] of Object.entries(result.metadata)) {
    const entry = new Writer();
    entry.bytesField(1, Buffer.from(key, 'utf8'));
    entry.bytesField(2, Buffer.from(value, 'utf8'));
    w.bytesField(5, entry.finish());
  }
  return w.finish();
}

/**
 * The BootstrapParams on `start`'s stdin, or undefined when stdin holds something else (the
 * runtime options `Any` that containerd <= 2.2 sends, or nothing). As upstream's shim library
 * does (pkg/shim parseBootstrapParams): an options `Any` can decode as BootstrapParams too, so
 * the params count only when their instance id and namespace equal the -id and -namespace flags.
 */
export function readBootstrapParams(input: Buffer, cliId: string, cliNamespace: string): BootstrapParams | undefined {
  if (input.length === 0 || input.length > MAX_BOOTSTRAP_BYTES) return undefined;
  let params: BootstrapParams;
  try {
    params = decodeBootstrapParams(input);
  } catch (err) {
    if (err instanceof WireError) return undefined;
    throw err;
  }
  if (params.instanceId !== cliId || params.namespace !== cliNamespace) return undefined;
  return params;
}

/** A google.protobuf.Any in protobuf binary (what the daemon reads back as runtime options). */
export function encodeAny(any: BootstrapExtension): Buffer {
  const w = new Writer();
  if (any.typeUrl) w.bytesField(1, Buffer.from(any.typeUrl, 'utf8'));
  if (any.value.length > 0) w.bytesField(2, any.value);
  return w.finish();
}
