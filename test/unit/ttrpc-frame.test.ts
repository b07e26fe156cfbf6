import { strict as assert } from 'node:assert';
import {
  DecodedItem,
  encodeFrame,
  FRAME_HEADER_LENGTH,
  FrameDecoder,
  FrameError,
  FrameFlag,
  FrameType,
  MAX_FRAME_PAYLOAD,
} from '../../shim/src/ttrpc/frame';

function header(length: number, streamId: number, type: number, flags: number): Buffer {
  const h = Buffer.alloc(FRAME_HEADER_LENGTH);
  h.writeUInt32BE(length, 0);
  h.writeUInt32BE(streamId, 4);
  h.writeUInt8(type, 8);
  h.writeUInt8(flags, 9);
  return h;
}

function frames(items: DecodedItem[]): Array<{ streamId: number; type: number; flags: number; payload: string }> {
  return items.map((item) => {
    assert.equal(item.kind, 'frame');
    if (item.kind !== 'frame') throw new Error('unreachable');
    const f = item.frame;
    return { streamId: f.streamId, type: f.type, flags: f.flags, payload: f.payload.toString() };
  });
}

describe('ttrpc frames', () => {
  it('encodes the 10-byte big-endian header', () => {
    const bytes = encodeFrame(0x01020304, FrameType.Response, FrameFlag.RemoteClosed, Buffer.from('hi'));
    assert.equal(bytes.toString('hex'), '00000002' + '01020304' + '02' + '01' + Buffer.from('hi').toString('hex'));
  });

  it('refuses to encode an oversized payload, a bad stream id or flags', () => {
    assert.throws(() => encodeFrame(1, FrameType.Request, 0, Buffer.alloc(MAX_FRAME_PAYLOAD + 1)), /exceed maximum message size/);
    assert.throws(() => encodeFrame(-1, FrameType.Request, 0), /stream id/);
    assert.throws(() => encodeFrame(2 ** 32, FrameType.Request, 0), /stream id/);
    assert.throws(() => encodeFrame(1, FrameType.Request, 256), /flags/);
    assert.throws(() => encodeFrame(1, 7 as FrameType, 0), /type/);
  });

  it('decodes frames split at every byte boundary, including empty payloads', () => {
    const stream = Buffer.concat([
      encodeFrame(1, FrameType.Request, 0, Buffer.from('first')),
      encodeFrame(3, FrameType.Data, FrameFlag.RemoteClosed | FrameFlag.NoData),
      encodeFrame(5, FrameType.Response, 0, Buffer.from('third')),
    ]);
    const expected = [
      { streamId: 1, type: 1, flags: 0, payload: 'first' },
      { streamId: 3, type: 3, flags: 5, payload: '' },
      { streamId: 5, type: 2, flags: 0, payload: 'third' },
    ];
    for (let split = 0; split <= stream.length; split++) {
      const decoder = new FrameDecoder();
      const items = [...decoder.push(stream.subarray(0, split)), ...decoder.push(stream.subarray(split))];
      assert.deepEqual(frames(items), expected, `split at ${split}`);
      assert.ok(decoder.idle);
      decoder.end();
    }
    const decoder = new FrameDecoder();
    const items: DecodedItem[] = [];
    for (const byte of stream) items.push(...decoder.push(Buffer.from([byte])));
    assert.deepEqual(frames(items), expected);
  });

  it('reports an oversized frame from its header and skips its payload without buffering it', () => {
    const decoder = new FrameDecoder(16);
    const first = decoder.push(header(1000, 7, FrameType.Request, 0));
    assert.deepEqual(first, [{ kind: 'oversized', oversized: { streamId: 7, type: FrameType.Request, flags: 0, length: 1000 } }]);
    // The payload streams by in pieces; nothing is returned for it.
    for (let i = 0; i < 10; i++) assert.deepEqual(decoder.push(Buffer.alloc(99, 0xff)), []);
    const rest = decoder.push(Buffer.concat([Buffer.alloc(10, 0xff), encodeFrame(9, FrameType.Request, 0, Buffer.from('ok'))]));
    assert.deepEqual(frames(rest), [{ streamId: 9, type: 1, flags: 0, payload: 'ok' }]);
  });

  it('checks the 4 MiB limit before allocating (a 4 GiB length costs nothing)', () => {
    const decoder = new FrameDecoder();
    const before = process.memoryUsage().arrayBuffers;
    const items = decoder.push(header(0xffffffff, 1, FrameType.Request, 0));
    assert.equal(items[0]?.kind, 'oversized');
    assert.ok(process.memoryUsage().arrayBuffers - before < 1 << 20);
    // Exactly the limit is allowed.
    const ok = new FrameDecoder();
    assert.deepEqual(ok.push(header(MAX_FRAME_PAYLOAD, 1, FrameType.Request, 0)), []);
  });

  it('fails on a frame type that cannot exist, and stays failed', () => {
    const decoder = new FrameDecoder();
    assert.throws(() => decoder.push(Buffer.from('GET / HTTP/1.1\r\n')), (err: unknown) => {
      assert.ok(err instanceof FrameError);
      assert.match(err.message, /malformed frame: unknown type/);
      return true;
    });
    assert.throws(() => decoder.push(encodeFrame(1, FrameType.Request, 0)), FrameError);
  });

  it('reports truncation at the end of the stream', () => {
    const inHeader = new FrameDecoder();
    inHeader.push(Buffer.from([0, 0, 0]));
    assert.throws(() => inHeader.end(), /truncated frame: stream ended after 3 of 10 header bytes/);
    const inPayload = new FrameDecoder();
    inPayload.push(encodeFrame(5, FrameType.Request, 0, Buffer.from('hello')).subarray(0, 12));
    assert.throws(() => inPayload.end(), /truncated frame: stream 5 ended after 2 of 5 payload bytes/);
    const clean = new FrameDecoder();
    clean.push(encodeFrame(5, FrameType.Request, 0, Buffer.from('hello')));
    clean.end();
  });
});
