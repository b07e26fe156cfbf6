// A minimal deterministic ustar writer: entries in the order given, uid/gid 0, mtime 0, no
// user/group names, so the same entries always give the same bytes (image digests stay stable).
export type TarEntry =
  | { readonly kind: 'dir'; readonly path: string; readonly mode: number }
  | { readonly kind: 'file'; readonly path: string; readonly mode: number; readonly data: Buffer }
  | { readonly kind: 'symlink'; readonly path: string; readonly target: string };

const BLOCK = 512;

function writeString(header: Buffer, offset: number, length: number, value: string, what: string): void {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length > length) throw new Error(`tar: ${what} "${value}" is longer than ${length} bytes`);
  bytes.copy(header, offset);
}

function writeOctal(header: Buffer, offset: number, length: number, value: number, what: string): void {
  // length-1 octal digits, then NUL.
  const digits = value.toString(8).padStart(length - 1, '0');
  if (digits.length > length - 1) throw new Error(`tar: ${what} ${value} does not fit in ${length - 1} octal digits`);
  header.write(`${digits}\0`, offset, 'ascii');
}

/** Split a path into ustar's prefix (≤155) and name (≤100) fields. */
function splitPath(entryPath: string): { prefix: string; name: string } {
  if (Buffer.byteLength(entryPath) <= 100) return { prefix: '', name: entryPath };
  const trailingSlash = entryPath.endsWith('/');
  const body = trailingSlash ? entryPath.slice(0, -1) : entryPath;
  for (let cut = body.indexOf('/'); cut !== -1; cut = body.indexOf('/', cut + 1)) {
    const prefix = body.slice(0, cut);
    const name = body.slice(cut + 1) + (trailingSlash ? '/' : '');
    if (Buffer.byteLength(prefix) <= 155 && Buffer.byteLength(name) <= 100) return { prefix, name };
  }
  throw new Error(`tar: path "${entryPath}" is too long for ustar`);
}

function header(entry: TarEntry): Buffer {
  const block = Buffer.alloc(BLOCK);
  const entryPath = entry.kind === 'dir' && !entry.path.endsWith('/') ? `${entry.path}/` : entry.path;
  if (entryPath.length === 0 || entryPath.startsWith('/')) throw new Error(`tar: path "${entry.path}" must be relative`);
  const { prefix, name } = splitPath(entryPath);
  writeString(block, 0, 100, name, 'name');
  writeOctal(block, 100, 8, entry.kind === 'symlink' ? 0o777 : entry.mode, 'mode');
  writeOctal(block, 108, 8, 0, 'uid');
  writeOctal(block, 116, 8, 0, 'gid');
  writeOctal(block, 124, 12, entry.kind === 'file' ? entry.data.length : 0, 'size');
  writeOctal(block, 136, 12, 0, 'mtime');
  block.fill(0x20, 148, 156); // checksum field counts as spaces while summing
  block.write(entry.kind === 'file' ? '0' : entry.kind === 'dir' ? '5' : '2', 156, 'ascii');
  if (entry.kind === 'symlink') writeString(block, 157, 100, entry.target, 'link target');
  block.write('ustar\0', 257, 'ascii');
  block.write('00', 263, 'ascii');
  writeOctal(block, 329, 8, 0, 'devmajor');
  writeOctal(block, 337, 8, 0, 'devminor');
  writeString(block, 345, 155, prefix, 'prefix');
  let sum = 0;
  for (const byte of block) sum += byte;
  block.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  return block;
}

export function createTar(entries: readonly TarEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const entry of entries) {
    parts.push(header(entry));
    if (entry.kind === 'file') {
      parts.push(entry.data);
      const padding = (BLOCK - (entry.data.length % BLOCK)) % BLOCK;
      if (padding > 0) parts.push(Buffer.alloc(padding));
    }
  }
  parts.push(Buffer.alloc(2 * BLOCK)); // end of archive
  return Buffer.concat(parts);
}
