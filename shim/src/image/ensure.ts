// The guest image cache: rootfs → read-only erofs image in <cacheDir>/images/<key>.erofs.
// Hot path (cache hit): a stat per layer (a tree walk for a mutable dir), a stat of
// mkfs.erofs, a stat of the image: no spawn, no lock. Miss: built once under a per-key lock
// into a temp file, fsynced and renamed into place, so readers see a whole image or none.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Code, failedPrecondition, invalidArgument, messageOf, RpcError } from '../errdefs';
import { buildErofs, builderIdentity, findMkfsErofs } from './erofs';
import { computeImageKey } from './key';
import { acquireLock } from '../util/file-lock';
import { resolveSource, type ResolvedSource, type RootfsSource } from './source';
import type { Tool } from './tools';

export interface GuestImage {
  /** The published, read-only erofs file. */
  path: string;
  /** Its content-address (64 hex). */
  key: string;
  /** false = cache hit (made earlier, or by a concurrent builder we waited for). */
  built: boolean;
}

export interface EnsureImageOptions {
  cacheDir: string;
  log?: (msg: string) => void;
  /** Bound on waiting for another process building the same image. Default 10 minutes. */
  lockTimeoutMs?: number;
}

const DEFAULT_LOCK_TIMEOUT_MS = 10 * 60 * 1000;

/** Builds of this process in flight, by image path: parallel callers share one build. */
const inFlight = new Map<string, Promise<GuestImage>>();

async function isPublished(imagePath: string): Promise<boolean> {
  try {
    return (await fs.promises.stat(imagePath)).isFile();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

async function fsyncPath(p: string, flags: string): Promise<void> {
  const handle = await fs.promises.open(p, flags);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Temp files and mount dirs of a key are named so that they can be found and swept. */
const tempPrefix = (key: string): string => `.tmp-${key}-`;
const mountPrefix = (key: string): string => `.mnt-${key}-`;

/**
 * Removes what a dead builder of `key` left behind. Called with the key's lock held, so every
 * such entry is garbage. (Mounts cannot be left: they live in a private mount namespace.)
 */
async function sweepLeftovers(imagesDir: string, key: string, log: (msg: string) => void): Promise<void> {
  for (const name of await fs.promises.readdir(imagesDir)) {
    const full = path.join(imagesDir, name);
    if (name.startsWith(tempPrefix(key))) {
      await fs.promises.rm(full, { force: true });
      log(`removed leftover ${full}`);
    } else if (name.startsWith(mountPrefix(key))) {
      await fs.promises.rmdir(full).catch(() => undefined);
      log(`removed leftover ${full}`);
    }
  }
}

async function buildUnderLock(
  resolved: ResolvedSource,
  key: string,
  mkfs: Tool,
  imagesDir: string,
  imagePath: string,
  opts: EnsureImageOptions,
): Promise<GuestImage> {
  const log = opts.log ?? (() => undefined);
  await fs.promises.mkdir(imagesDir, { recursive: true });
  const lock = await acquireLock(path.join(imagesDir, `${key}.lock`), {
    timeoutMs: opts.lockTimeoutMs ?? DEFAULT_LOCK_TIMEOUT_MS,
    onWait: (owner) => log(`image ${key.slice(0, 12)}: waiting for pid ${owner?.pid ?? '?'} building it`),
  });
  try {
    if (await isPublished(imagePath)) return { path: imagePath, key, built: false };
    await sweepLeftovers(imagesDir, key, log);
    const unique = `${process.pid}-${randomBytes(4).toString('hex')}`;
    const tempFile = path.join(imagesDir, `${tempPrefix(key)}${unique}.erofs`);
    const mountDir = path.join(imagesDir, `${mountPrefix(key)}${unique}`);
    const started = process.hrtime.bigint();
    log(`image ${key.slice(0, 12)}: building from ${resolved.description}`);
    try {
      if (resolved.layers.length > 1) await fs.promises.mkdir(mountDir);
      await buildErofs(resolved, tempFile, mountDir, mkfs);
      await fsyncPath(tempFile, 'r');
      if (resolved.mutable) {
        // The tree may have changed while it was being read: then the image matches no key.
        const after = await computeImageKey(resolved, builderIdentity(mkfs));
        if (after !== key) throw failedPrecondition(`${resolved.description} changed while its image was being built; retry`);
      }
      await fs.promises.rename(tempFile, imagePath);
      await fsyncPath(imagesDir, 'r');
    } catch (err) {
      // Name what was being converted; keep the code (Internal for a tool failure).
      const code = err instanceof RpcError ? err.code : Code.Internal;
      throw new RpcError(code, `building the guest image of ${resolved.description}: ${messageOf(err)}`);
    } finally {
      await fs.promises.rm(tempFile, { force: true });
      await fs.promises.rmdir(mountDir).catch(() => undefined);
    }
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    log(`image ${key.slice(0, 12)}: built ${imagePath} in ${ms.toFixed(0)} ms`);
    return { path: imagePath, key, built: true };
  } finally {
    await lock.release();
  }
}

/** rootfs → read-only erofs image in <cacheDir>/images/<key>.erofs. */
export async function ensureImage(source: RootfsSource, opts: EnsureImageOptions): Promise<GuestImage> {
  if (!opts.cacheDir || !path.isAbsolute(opts.cacheDir)) {
    throw invalidArgument(`image cache dir ${JSON.stringify(opts.cacheDir)} is not an absolute path`);
  }
  const resolved = await resolveSource(source);
  const mkfs = await findMkfsErofs();
  const key = await computeImageKey(resolved, builderIdentity(mkfs));
  const imagesDir = path.join(opts.cacheDir, 'images');
  const imagePath = path.join(imagesDir, `${key}.erofs`);
  if (await isPublished(imagePath)) return { path: imagePath, key, built: false };

  const pending = inFlight.get(imagePath);
  if (pending) {
    await pending;
    return { path: imagePath, key, built: false };
  }
  const build = buildUnderLock(resolved, key, mkfs, imagesDir, imagePath, opts);
  inFlight.set(imagePath, build);
  try {
    return await build;
  } finally {
    inFlight.delete(imagePath);
  }
}
