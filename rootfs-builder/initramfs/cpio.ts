// A "newc" cpio archive writer (the format the kernel unpacks as an initramfs). Written here
// rather than shelling out to cpio(1) so that device nodes such as /dev/console can be put in
// the archive without privileges, and so that the output is byte-for-byte reproducible.

export type CpioEntry =
  | { kind: 'dir'; path: string; mode?: number }
  | { kind: 'file'; path: string; data: Buffer; mode?: number }
  | { kind: 'symlink'; path: string; target: string }
  | { kind: 'chardev'; path: string; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(n: number): string {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`cpio: field out of range: ${n}`);
  return n.toString(16).padStart(8, '0');
}

function pad4(len: number): Buffer {
  return Buffer.alloc((4 - (len % 4)) % 4);
}

function record(ino: number, mode: number, name: string, data: Buffer, rdevMajor = 0, rdevMinor = 0): Buffer {
  const nameBuf = Buffer.from(name + '\0', 'utf8');
  const header =
    '070701' +
    hex8(ino) + hex8(mode) + hex8(0) /* uid */ + hex8(0) /* gid */ + hex8(1) /* nlink */ +
    hex8(0) /* mtime: fixed for reproducibility */ + hex8(data.length) +
    hex8(0) + hex8(0) /* dev major/minor */ + hex8(rdevMajor) + hex8(rdevMinor) +
    hex8(nameBuf.length) + hex8(0) /* check */;
  const head = Buffer.concat([Buffer.from(header, 'ascii'), nameBuf]);
  return Buffer.concat([head, pad4(head.length), data, pad4(data.length)]);
}

/** Builds a newc archive of the entries, in order, with the TRAILER!!! record. */
export function writeCpio(entries: readonly CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    if (!name || name.split('/').includes('..')) throw new Error(`cpio: bad path ${JSON.stringify(e.path)}`);
    switch (e.kind) {
      case 'dir':
        parts.push(record(ino++, S_IFDIR | (e.mode ?? 0o755), name, Buffer.alloc(0)));
        break;
      case 'file':
        parts.push(record(ino++, S_IFREG | (e.mode ?? 0o644), name, e.data));
        break;
      case 'symlink':
        parts.push(record(ino++, S_IFLNK | 0o777, name, Buffer.from(e.target, 'utf8')));
        break;
      case 'chardev':
        parts.push(record(ino++, S_IFCHR | (e.mode ?? 0o600), name, Buffer.alloc(0), e.major, e.minor));
        break;
    }
  }
  parts.push(record(0, 0, 'TRAILER!!!', Buffer.alloc(0)));
  return Buffer.concat(parts);
}
