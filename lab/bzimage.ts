// Gets the uncompressed vmlinux ELF out of an x86 bzImage, so the lab can boot the L1 kernel
// through its PVH entry. Under TCG, the bzImage's own xz decompressor costs about 3 s of every
// L1 boot; decompressing once on the host and letting QEMU load the ELF skips that.
import { spawn } from 'node:child_process';
import * as zlib from 'node:zlib';

const SETUP_HEADER_MAGIC = 'HdrS';
/** Boot protocol 2.08 added payload_offset/payload_length. */
const MIN_PROTOCOL_FOR_PAYLOAD = 0x208;
const PT_NOTE = 4;
/** XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit PVH entry point QEMU's -kernel looks for. */
const XEN_ELFNOTE_PHYS32_ENTRY = 0x12;

function decompressWith(tool: string, args: string[], input: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(tool, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => { err += d; });
    child.on('error', (e: NodeJS.ErrnoException) => {
      reject(new Error(e.code === 'ENOENT' ? `${tool} is not installed` : `${tool}: ${e.message}`));
    });
    child.on('close', (code) => {
      if (code === 0) resolve(Buffer.concat(out));
      else reject(new Error(`${tool} ${args.join(' ')} exited with ${code}: ${err.trim()}`));
    });
    // EPIPE when the tool dies early is reported through 'close'.
    child.stdin.on('error', () => {});
    child.stdin.end(input);
  });
}

/** The compressed kernel inside a bzImage, as described by its setup header. */
export function bzImagePayload(bzImage: Buffer): Buffer {
  if (bzImage.length < 0x250 || bzImage.toString('latin1', 0x202, 0x206) !== SETUP_HEADER_MAGIC) {
    throw new Error('not a bzImage (no HdrS setup header)');
  }
  const protocol = bzImage.readUInt16LE(0x206);
  if (protocol < MIN_PROTOCOL_FOR_PAYLOAD) throw new Error(`boot protocol ${protocol.toString(16)} has no payload fields`);
  const setupSectors = bzImage[0x1f1] || 4;
  const payloadOffset = bzImage.readUInt32LE(0x248);
  const payloadLength = bzImage.readUInt32LE(0x24c);
  const start = (setupSectors + 1) * 512 + payloadOffset;
  if (payloadLength === 0 || start + payloadLength > bzImage.length) throw new Error('bzImage payload out of range');
  return bzImage.subarray(start, start + payloadLength);
}

/** Decompresses a bzImage's payload (xz, zstd or gzip) into the vmlinux ELF. */
export async function extractVmlinux(bzImage: Buffer): Promise<Buffer> {
  const payload = bzImagePayload(bzImage);
  // The kernel appends the uncompressed size after the stream: hence --single-stream / no
  // trailing-data checks.
  if (payload.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) {
    return decompressWith('xz', ['-dc', '--single-stream'], payload);
  }
  if (payload.readUInt32LE(0) === 0xfd2fb528) return decompressWith('zstd', ['-dc'], payload);
  if (payload[0] === 0x1f && payload[1] === 0x8b) return zlib.gunzipSync(payload.subarray(0, payload.length - 4));
  throw new Error(`unsupported bzImage compression (payload starts ${payload.subarray(0, 6).toString('hex')})`);
}

/** True when the ELF64 has a Xen PHYS32_ENTRY note (so QEMU can boot it through PVH). */
export function hasPvhEntry(elf: Buffer): boolean {
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) return false;
  const phoff = Number(elf.readBigUInt64LE(0x20));
  const phentsize = elf.readUInt16LE(0x36);
  const phnum = elf.readUInt16LE(0x38);
  if (phentsize < 56 || phoff + phnum * phentsize > elf.length) return false;
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (elf.readUInt32LE(ph) !== PT_NOTE) continue;
    const offset = Number(elf.readBigUInt64LE(ph + 8));
    const size = Number(elf.readBigUInt64LE(ph + 0x20));
    if (offset + size > elf.length) return false;
    let at = offset;
    while (at + 12 <= offset + size) {
      const namesz = elf.readUInt32LE(at);
      const descsz = elf.readUInt32LE(at + 4);
      const type = elf.readUInt32LE(at + 8);
      const name = elf.toString('latin1', at + 12, Math.min(at + 12 + namesz, elf.length)).replace(/\0+$/, '');
      if (name === 'Xen' && type === XEN_ELFNOTE_PHYS32_ENTRY) return true;
      at += 12 + Math.ceil(namesz / 4) * 4 + Math.ceil(descsz / 4) * 4;
    }
  }
  return false;
}
