// Per-container writable disk: a sparse file holding an empty ext4 with /upper and /work (the
// guest's overlay upper and work dirs over the read-only image).
//
// Hot path without a spawn: an empty filesystem of a given size is always the same bytes, so
// mkfs.ext4 runs once per size (per mke2fs build) and what it wrote, its non-zero blocks, is
// kept as a small "block image" in <cacheDir>/disks (~0.6 MB for 1 GiB). A disk is then
// ftruncate + a few pwrites of those blocks: measured ~1 ms, vs ~10-20 ms for mkfs.ext4 per
// disk and ~5 ms for `cp --sparse=always` of a template (no FICLONE on the host's ext4).
// Every disk of a size shares one filesystem UUID; the guest mounts by device, never by UUID.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { alreadyExists, internal, invalidArgument } from '../errdefs';
import { smolvmPaths } from '../config/paths';
import { findTool, runTool } from './tools';

export interface WritableDiskOptions {
  /** Where the per-size filesystem templates are kept. Default: smolvm's cache dir. */
  cacheDir?: string;
}

const BLOCK = 4096;
export const MIN_DISK_BYTES = 16 * 1024 * 1024;
export const MAX_DISK_BYTES = 16 * 1024 ** 4;

/**
 * No journal: the disk lives and dies with one container, so crash consistency buys nothing and
 * the journal costs writes. Inode tables zeroed at mkfs (lazy_itable_init=0) so the guest kernel
 * starts no ext4lazyinit thread; the zeros are holes, so this costs nothing per disk. No
 * reserved blocks: the container's root may use it all.
 */
const MKFS_EXT4_ARGS: readonly string[] = [
  '-F', '-q', '-t', 'ext4', '-O', '^has_journal', '-m', '0', '-E', 'lazy_itable_init=0,nodiscard',
];
const TEMPLATE_FORMAT = 'smolvm-ext4-blocks-v1';
const MAGIC = Buffer.from('SMOLDISK', 'ascii');
const HEADER_BYTES = 32;

/** The non-zero extents of an empty filesystem image. */
interface BlockImage {
  readonly size: number;
  readonly extents: ReadonlyArray<{ offset: number; data: Buffer }>;
}

function encodeBlockImage(image: BlockImage): Buffer {
  const header = Buffer.alloc(HEADER_BYTES + image.extents.length * 16);
  MAGIC.copy(header, 0);
  header.writeUInt32LE(1, 8);
  header.writeUInt32LE(image.extents.length, 12);
  header.writeBigUInt64LE(BigInt(image.size), 16);
  image.extents.forEach((e, i) => {
    header.writeBigUInt64LE(BigInt(e.offset), HEADER_BYTES + i * 16);
    header.writeBigUInt64LE(BigInt(e.data.length), HEADER_BYTES + i * 16 + 8);
  });
  return Buffer.concat([header, ...image.extents.map((e) => e.data)]);
}

/** Parses a block image, checking every bound; undefined when it is not a valid one of `size`. */
function decodeBlockImage(buf: Buffer, size: number): BlockImage | undefined {
  if (buf.length < HEADER_BYTES || !buf.subarray(0, 8).equals(MAGIC) || buf.readUInt32LE(8) !== 1) return undefined;
  const count = buf.readUInt32LE(12);
  if (Number(buf.readBigUInt64LE(16)) !== size) return undefined;
  let dataAt = HEADER_BYTES + count * 16;
  if (dataAt > buf.length) return undefined;
  const extents: Array<{ offset: number; data: Buffer }> = [];
  let end = 0;
  for (let i = 0; i < count; i++) {
    const offset = Number(buf.readBigUInt64LE(HEADER_BYTES + i * 16));
    const length = Number(buf.readBigUInt64LE(HEADER_BYTES + i * 16 + 8));
    if (offset < end || length <= 0 || offset + length > size || dataAt + length > buf.length) return undefined;
    extents.push({ offset, data: buf.subarray(dataAt, dataAt + length) });
    dataAt += length;
    end = offset + length;
  }
  return dataAt === buf.length ? { size, extents } : undefined;
}

/** A byte range of a file: [start, end). */
interface ByteRange {
  start: number;
  end: number;
}

/**
 * The ranges of `file` that hold written data (neither holes nor unwritten preallocation), from
 * `filefrag -e` (e2fsprogs, FIEMAP; Node has no SEEK_DATA). Null when it cannot tell: the
 * caller then reads everything. mkfs.ext4 writes a few MB into a file of the disk's size:
 * reading only those keeps a 16 GiB disk's first template at well under a second, not ~40 s
 * of reading zeros (the writable disk's size is per container: its annotation).
 */
async function writtenRanges(file: string): Promise<ByteRange[] | null> {
  let filefrag: string;
  try {
    filefrag = (await findTool('filefrag', 'e2fsprogs')).path;
  } catch {
    return null;
  }
  const output = await new Promise<string | null>((resolve) => {
    execFile(filefrag, ['-e', file], { maxBuffer: 16 * 1024 * 1024 }, (err, stdout) => resolve(err ? null : stdout));
  });
  if (output === null) return null;
  const blockSize = /\(\d+ blocks? of (\d+) bytes\)/.exec(output)?.[1];
  const found = /: (\d+) extents? found/.exec(output)?.[1];
  if (!blockSize || found === undefined) return null;
  const bytes = Number(blockSize);
  const ranges: ByteRange[] = [];
  let seen = 0;
  for (const line of output.split('\n')) {
    const m = /^\s*\d+:\s+(\d+)\.\.\s*(\d+):\s+\d+\.\.\s*\d+:\s+\d+:\s*(?:\d+:)?\s*(.*)$/.exec(line);
    if (!m) continue;
    seen += 1;
    if (m[3]!.split(',').includes('unwritten')) continue;  // reads as zeros
    ranges.push({ start: Number(m[1]) * bytes, end: (Number(m[2]) + 1) * bytes });
  }
  // Extent lines parsed (their count may exceed the summary's, which merges some) and in order:
  // else trust nothing.
  if ((seen === 0 && Number(found) > 0) || ranges.some((r, i) => r.end <= r.start || (i > 0 && r.start < ranges[i - 1]!.end))) return null;
  return ranges;
}

/** Reads a file's written ranges and keeps their non-zero blocks, merged into extents. */
async function scanNonZero(file: string, size: number): Promise<BlockImage> {
  const chunk = Buffer.alloc(4 * 1024 * 1024);
  const zeroChunk = Buffer.alloc(chunk.length);
  const zeroBlock = zeroChunk.subarray(0, BLOCK);
  const extents: Array<{ offset: number; data: Buffer }> = [];
  let runStart = -1;
  let runBytes = 0;
  let runParts: Buffer[] = [];
  const closeRun = (): void => {
    if (runStart >= 0) extents.push({ offset: runStart, data: Buffer.concat(runParts) });
    runStart = -1;
    runBytes = 0;
    runParts = [];
  };
  const ranges = (await writtenRanges(file)) ?? [{ start: 0, end: size }];
  const handle = await fs.promises.open(file, 'r');
  try {
    for (const range of ranges) {
      if (range.start !== runStart + runBytes) closeRun();  // a hole (or unwritten space) before it
      const end = Math.min(range.end, size);
      for (let pos = range.start; pos < end; pos += chunk.length) {
        const { bytesRead } = await handle.read(chunk, 0, Math.min(chunk.length, end - pos), pos);
        if (bytesRead === 0) break;
        // Most of an empty filesystem is zeros: skip all-zero chunks with one memcmp.
        if (chunk.subarray(0, bytesRead).equals(zeroChunk.subarray(0, bytesRead))) {
          closeRun();
          continue;
        }
        for (let off = 0; off < bytesRead; off += BLOCK) {
          const block = chunk.subarray(off, Math.min(off + BLOCK, bytesRead));
          if (block.equals(zeroBlock.subarray(0, block.length))) {
            closeRun();
          } else {
            if (runStart < 0) runStart = pos + off;
            runParts.push(Buffer.from(block));
            runBytes += block.length;
          }
        }
      }
    }
    closeRun();
  } finally {
    await handle.close();
  }
  return { size, extents };
}

/** mkfs.ext4 of an empty fs with /upper and /work into a scratch dir, returned as blocks. */
async function makeBlockImage(size: number, scratchParent: string): Promise<BlockImage> {
  const mkfs = await findTool('mkfs.ext4', 'e2fsprogs');
  const scratch = await fs.promises.mkdtemp(path.join(scratchParent, '.mkdisk-'));
  try {
    const staging = path.join(scratch, 'root');
    for (const dir of ['', 'upper', 'work']) {
      // chmod too: mkdir's mode is filtered by the umask (the shim daemon runs with 077), and a
      // 0700 /upper would hide the container's / from its non-root users.
      await fs.promises.mkdir(path.join(staging, dir), { mode: 0o755 });
      await fs.promises.chmod(path.join(staging, dir), 0o755);
    }
    await fs.promises.chmod(staging, 0o755);
    const image = path.join(scratch, 'fs.img');
    await fs.promises.writeFile(image, '');
    await fs.promises.truncate(image, size);
    await runTool(mkfs.path, [...MKFS_EXT4_ARGS, '-d', staging, image]);
    return await scanNonZero(image, size);
  } finally {
    await fs.promises.rm(scratch, { recursive: true, force: true });
  }
}

const templates = new Map<string, Promise<BlockImage>>();

async function templateFor(size: number, cacheDir: string): Promise<BlockImage> {
  const mkfs = await findTool('mkfs.ext4', 'e2fsprogs');
  const id = createHash('sha256')
    .update(`${TEMPLATE_FORMAT}\0${mkfs.identity}\0${MKFS_EXT4_ARGS.join(' ')}`)
    .digest('hex')
    .slice(0, 16);
  const dir = path.join(cacheDir, 'disks');
  const file = path.join(dir, `ext4-${size}-${id}.blocks`);
  const memoKey = file;
  let pending = templates.get(memoKey);
  if (!pending) {
    pending = (async () => {
      try {
        const decoded = decodeBlockImage(await fs.promises.readFile(file), size);
        if (decoded) return decoded;
      } catch {
        // not made yet (or unreadable): make it
      }
      let persist = true;
      try {
        await fs.promises.mkdir(dir, { recursive: true });
      } catch {
        persist = false; // e.g. a read-only cache: still works, just without reuse across processes
      }
      const made = await makeBlockImage(size, persist ? dir : os.tmpdir());
      if (persist) {
        // Concurrent makers write identical bytes; rename makes the last one win atomically.
        const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
        try {
          await fs.promises.writeFile(temp, encodeBlockImage(made), { flag: 'wx' });
          await fs.promises.rename(temp, file);
        } catch {
          // best effort: the template is still good for this process
        } finally {
          await fs.promises.rm(temp, { force: true });
        }
      }
      return made;
    })();
    templates.set(memoKey, pending);
    pending.catch(() => templates.delete(memoKey)); // a failure is not cached
  }
  return pending;
}

function checkArguments(diskPath: string, sizeBytes: number): void {
  if (typeof diskPath !== 'string' || !path.isAbsolute(diskPath)) {
    throw invalidArgument(`writable disk path ${JSON.stringify(diskPath)} is not an absolute path`);
  }
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes % BLOCK !== 0) {
    throw invalidArgument(`writable disk ${diskPath}: size ${sizeBytes} is not a whole number of ${BLOCK}-byte blocks`);
  }
  if (sizeBytes < MIN_DISK_BYTES || sizeBytes > MAX_DISK_BYTES) {
    throw invalidArgument(
      `writable disk ${diskPath}: size ${sizeBytes} is outside ${MIN_DISK_BYTES}..${MAX_DISK_BYTES} bytes`,
    );
  }
}

async function writeTemplate(handle: fs.promises.FileHandle, sizeBytes: number, template: BlockImage): Promise<void> {
  await handle.truncate(sizeBytes);
  for (const extent of template.extents) {
    let written = 0;
    while (written < extent.data.length) {
      const { bytesWritten } = await handle.write(extent.data, written, extent.data.length - written, extent.offset + written);
      written += bytesWritten;
    }
  }
}

/**
 * Makes the existing file at diskPath a fresh writable disk of sizeBytes, in place: same inode,
 * old contents gone (truncated to 0 first, so the rest stays sparse). For a disk slot a running
 * VMM holds open (a pod's slot given to a new container): the VMM sees the new bytes through
 * the descriptor it has. The file must exist; nothing else may be using its contents.
 */
export async function rewriteWritableDisk(diskPath: string, sizeBytes: number, opts: WritableDiskOptions = {}): Promise<void> {
  checkArguments(diskPath, sizeBytes);
  const template = await templateFor(sizeBytes, opts.cacheDir ?? smolvmPaths().cacheDir);
  let handle: fs.promises.FileHandle;
  try {
    handle = await fs.promises.open(diskPath, fs.constants.O_WRONLY | fs.constants.O_NOFOLLOW);
  } catch (err) {
    throw invalidArgument(`writable disk ${diskPath}: cannot open the existing file (${(err as Error).message})`);
  }
  try {
    if (!(await handle.stat()).isFile()) throw invalidArgument(`writable disk ${diskPath} is not a regular file`);
    await handle.truncate(0);
    await writeTemplate(handle, sizeBytes, template);
  } finally {
    await handle.close();
  }
}

/**
 * A sparse ext4 file of sizeBytes with empty /upper and /work dirs (overlay upper + work).
 * The file appears complete or not at all; an existing file is AlreadyExists, never replaced.
 * Not fsynced: the disk lives only as long as its container, which a host crash ends anyway.
 */
export async function createWritableDisk(diskPath: string, sizeBytes: number, opts: WritableDiskOptions = {}): Promise<void> {
  checkArguments(diskPath, sizeBytes);
  const parent = path.dirname(diskPath);
  try {
    if (!(await fs.promises.stat(parent)).isDirectory()) throw new Error('not a directory');
  } catch (err) {
    throw invalidArgument(`writable disk ${diskPath}: directory ${parent} is not usable (${(err as Error).message})`);
  }
  const exists = await fs.promises.lstat(diskPath).then(() => true, () => false);
  if (exists) throw alreadyExists(`writable disk ${diskPath} already exists`);
  const cacheDir = opts.cacheDir ?? smolvmPaths().cacheDir;
  const template = await templateFor(sizeBytes, cacheDir);

  const temp = `${diskPath}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
  try {
    const handle = await fs.promises.open(temp, 'wx', 0o600);
    try {
      await writeTemplate(handle, sizeBytes, template);
    } finally {
      await handle.close();
    }
    // link(2), unlike rename(2), fails instead of replacing a disk that appeared meanwhile.
    try {
      await fs.promises.link(temp, diskPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw alreadyExists(`writable disk ${diskPath} already exists`);
      throw internal(`writable disk ${diskPath}: ${(err as Error).message}`);
    }
  } finally {
    await fs.promises.rm(temp, { force: true });
  }
}
