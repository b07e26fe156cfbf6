// Which containerd major version is calling `start`. containerd 1.7 and 2.0-2.2 send the same
// flags and environment (MAX_SHIM_VERSION is "2" in both), yet only 2.x accepts a version-3
// answer. `-publish-binary` is containerd's own executable (os.Executable()), and every Go
// binary records its main package path in the `.go.buildinfo` ELF section:
// "github.com/containerd/containerd/cmd/containerd" in 1.x, ".../containerd/v2/cmd/containerd"
// in 2.x (also in distribution builds, which may lack module versions). A handful of small
// reads, no exec. Anything unexpected gives `undefined` (unknown), never an error.
import * as fs from 'node:fs';

const BUILDINFO_MAGIC = Buffer.from('\xff Go buildinf:', 'latin1');
const BUILDINFO_HEADER = 32;
/** Go >= 1.18: the version and module strings follow the header inline (varint-prefixed). */
const FLAG_INLINE_STRINGS = 0x2;
const MAX_SECTION_HEADERS = 4096;
const MAX_BUILDINFO_BYTES = 64 * 1024;

export interface GoBuildInfo {
  goVersion: string;
  /** `path` line: the main package's import path. */
  path: string;
  /** `mod` line: main module path and version, when the build recorded them. */
  module: string;
  moduleVersion: string;
}

function readAt(fd: number, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  const n = fs.readSync(fd, buf, 0, length, position);
  if (n !== length) throw new Error('short read');
  return buf;
}

function readUvarint(buf: Buffer, pos: number): [value: number, next: number] {
  let value = 0;
  let scale = 1;
  for (let i = 0; i < 5; i++) {
    if (pos >= buf.length) throw new Error('truncated varint');
    const byte = buf[pos++]!;
    value += (byte & 0x7f) * scale;
    scale *= 128;
    if ((byte & 0x80) === 0) return [value, pos];
  }
  throw new Error('varint too long');
}

/** Finds `.go.buildinfo` in a little-endian ELF64 file and returns its bytes (bounded). */
function readBuildInfoSection(fd: number): Buffer | undefined {
  const ehdr = readAt(fd, 0, 64);
  if (ehdr.readUInt32BE(0) !== 0x7f454c46 || ehdr[4] !== 2 || ehdr[5] !== 1) return undefined; // ELF64 LE only
  const shoff = Number(ehdr.readBigUInt64LE(0x28));
  const shentsize = ehdr.readUInt16LE(0x3a);
  const shnum = ehdr.readUInt16LE(0x3c);
  const shstrndx = ehdr.readUInt16LE(0x3e);
  if (shoff === 0 || shentsize < 64 || shnum === 0 || shnum > MAX_SECTION_HEADERS || shstrndx >= shnum) return undefined;
  const headers = readAt(fd, shoff, shentsize * shnum);
  const section = (i: number): { name: number; offset: number; size: number } => ({
    name: headers.readUInt32LE(i * shentsize),
    offset: Number(headers.readBigUInt64LE(i * shentsize + 24)),
    size: Number(headers.readBigUInt64LE(i * shentsize + 32)),
  });
  const strtab = section(shstrndx);
  if (strtab.size > 1 << 20) return undefined;
  const names = readAt(fd, strtab.offset, strtab.size);
  for (let i = 0; i < shnum; i++) {
    const s = section(i);
    const end = names.indexOf(0, s.name);
    if (end < 0 || names.toString('latin1', s.name, end) !== '.go.buildinfo') continue;
    if (s.size < BUILDINFO_HEADER) return undefined;
    return readAt(fd, s.offset, Math.min(s.size, MAX_BUILDINFO_BYTES));
  }
  return undefined;
}

/** Parses a `.go.buildinfo` section (Go 1.18+ layout). */
export function parseGoBuildInfo(section: Buffer): GoBuildInfo | undefined {
  if (section.length < BUILDINFO_HEADER || !section.subarray(0, BUILDINFO_MAGIC.length).equals(BUILDINFO_MAGIC)) return undefined;
  const flags = section[15]!;
  if ((flags & FLAG_INLINE_STRINGS) === 0) return undefined; // Go < 1.18: pointers into data, not worth chasing
  let pos = BUILDINFO_HEADER;
  const fields: Buffer[] = [];
  for (let i = 0; i < 2; i++) {
    const [length, next] = readUvarint(section, pos);
    if (length > section.length - next) return undefined;
    fields.push(section.subarray(next, next + length));
    pos = next + length;
  }
  let modinfo = fields[1]!;
  // Go wraps the module info in 16-byte sentinels (as runtime/debug strips them).
  if (modinfo.length >= 33 && modinfo[modinfo.length - 17] === 0x0a) modinfo = modinfo.subarray(16, modinfo.length - 16);
  const strings = [fields[0]!.toString('utf8'), modinfo.toString('utf8')];
  const info: GoBuildInfo = { goVersion: strings[0]!, path: '', module: '', moduleVersion: '' };
  for (const line of strings[1]!.split('\n')) {
    const [kind, a = '', b = ''] = line.split('\t');
    if (kind === 'path') info.path = a;
    else if (kind === 'mod') { info.module = a; info.moduleVersion = b; }
  }
  return info;
}

/** containerd's major version from a build's package path, e.g. 2 for ".../containerd/v2/cmd/containerd". */
export function containerdMajorOf(info: GoBuildInfo): number | undefined {
  for (const candidate of [info.module, info.path]) {
    const m = /^github\.com\/containerd\/containerd(?:\/v(\d+))?(?:\/|$)/.exec(candidate);
    if (m) return m[1] ? Number(m[1]) : 1;
  }
  return undefined;
}

/** The major version of the containerd binary at `binary`, or undefined when it cannot tell. */
export function containerdMajorFromBinary(binary: string): number | undefined {
  if (!binary) return undefined;
  let fd: number | undefined;
  try {
    fd = fs.openSync(binary, fs.constants.O_RDONLY);
    const section = readBuildInfoSection(fd);
    const info = section && parseGoBuildInfo(section);
    return info ? containerdMajorOf(info) : undefined;
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}
