// An exclusive, cross-process lock file, so that parallel Creates of one image build it once.
//
// Why not flock(2): Node has no binding for it, and holding one through a helper process (the
// `flock` utility) costs a spawn and a process to babysit. Instead the lock is a file created
// atomically with its content: the owner record is written to a private temp file, then
// link(2)ed to the lock path (fails with EEXIST when held). The record names the owner by boot
// id, pid and process start time (field 22 of /proc/PID/stat), so a crashed owner is detected
// exactly, with no timeouts and no confusion by pid reuse or a reboot; no spawn anywhere.
//
// Breaking a stale lock is itself serialized by a second lock file (`<lock>.break`, same
// scheme): the breaker re-reads the lock under it and removes it only if it still holds the
// very record found stale, so two waiters can never remove each other's fresh lock.
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { unavailable } from '../errdefs';
import { liveProcessStartTime } from './proc';

export interface LockOwner {
  readonly bootId: string;
  readonly pid: number;
  readonly startTime: string;
}

export interface LockOptions {
  /** Give up (Unavailable) after waiting this long for a live owner. */
  timeoutMs: number;
  /** Called once when we start waiting, with the current owner. */
  onWait?: (owner: LockOwner | undefined) => void;
}

export interface HeldLock {
  readonly path: string;
  /** True when a dead owner's lock was removed on the way: its leftovers may need sweeping. */
  readonly brokeStale: boolean;
  release(): Promise<void>;
}

const POLL_MIN_MS = 5;
const POLL_MAX_MS = 200;

let cachedSelf: LockOwner | undefined;

async function readBootId(): Promise<string> {
  try {
    return (await fs.promises.readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  } catch {
    return 'unknown-boot';
  }
}

async function self(): Promise<LockOwner> {
  if (!cachedSelf) {
    const startTime = liveProcessStartTime(process.pid);
    cachedSelf = { bootId: await readBootId(), pid: process.pid, startTime: startTime ?? 'unknown' };
  }
  return cachedSelf;
}

function encodeOwner(owner: LockOwner): string {
  return `smolvm-lock v1\nboot ${owner.bootId}\npid ${owner.pid}\nstart ${owner.startTime}\n`;
}

function decodeOwner(text: string): LockOwner | undefined {
  const m = /^smolvm-lock v1\nboot (\S+)\npid (\d+)\nstart (\S+)\n$/.exec(text);
  if (!m) return undefined;
  return { bootId: m[1], pid: Number(m[2]), startTime: m[3] };
}

/** Whether the process that wrote `owner` is still running (same boot, same pid incarnation). */
export async function ownerAlive(owner: LockOwner): Promise<boolean> {
  if (owner.bootId !== (await readBootId())) return false;
  return liveProcessStartTime(owner.pid) === owner.startTime;
}

/** Creates `lockPath` holding our owner record, atomically. False when it already exists. */
async function tryCreate(lockPath: string, record: string): Promise<boolean> {
  const temp = `${lockPath}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  await fs.promises.writeFile(temp, record, { flag: 'wx', mode: 0o644 });
  try {
    await fs.promises.link(temp, lockPath);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await fs.promises.unlink(temp).catch(() => undefined);
  }
}

async function readRecord(lockPath: string): Promise<string | undefined> {
  try {
    return await fs.promises.readFile(lockPath, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

/**
 * Removes `lockPath` if it still holds `staleRecord`, serialized with other breakers. Returns
 * whether it removed it.
 */
async function breakStale(lockPath: string, staleRecord: string, record: string): Promise<boolean> {
  const breakPath = `${lockPath}.break`;
  if (!(await tryCreate(breakPath, record))) {
    // Another waiter is breaking it right now (a few syscalls), or died doing so.
    const breakerRecord = await readRecord(breakPath);
    const breaker = breakerRecord === undefined ? undefined : decodeOwner(breakerRecord);
    if (breakerRecord !== undefined && (!breaker || !(await ownerAlive(breaker)))) {
      // A dead breaker: remove its file only if unchanged, by the same rule (recursion ends
      // because `.break.break` is only ever taken for a dead breaker's few-syscall window).
      await breakStale(breakPath, breakerRecord, record);
    }
    return false;
  }
  try {
    if ((await readRecord(lockPath)) !== staleRecord) return false;
    await fs.promises.unlink(lockPath).catch(() => undefined);
    return true;
  } finally {
    await fs.promises.unlink(breakPath).catch(() => undefined);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Takes the exclusive lock `lockPath` (its directory must exist), waiting with a bounded poll
 * while a live process holds it and breaking it when its owner is gone.
 */
export async function acquireLock(lockPath: string, opts: LockOptions): Promise<HeldLock> {
  const me = await self();
  const record = encodeOwner(me);
  const deadline = Date.now() + opts.timeoutMs;
  let delay = POLL_MIN_MS;
  let waitingReported = false;
  let brokeStale = false;
  for (;;) {
    if (await tryCreate(lockPath, record)) {
      return {
        path: lockPath,
        brokeStale,
        release: async () => {
          // Remove it only if it is still ours (it always should be).
          if ((await readRecord(lockPath)) === record) await fs.promises.unlink(lockPath).catch(() => undefined);
        },
      };
    }
    const current = await readRecord(lockPath);
    if (current === undefined) continue; // released between our link and our read: retry now
    const owner = decodeOwner(current);
    // An unreadable record cannot come from link(2) of a complete file: treat it as garbage.
    const alive = owner !== undefined && (await ownerAlive(owner));
    // Same pid and start: an earlier holder in this very process (callers dedupe in-process,
    // but be safe): it is alive, so we just wait like anyone else.
    if (!alive) {
      if (await breakStale(lockPath, current, record)) brokeStale = true;
      else await sleep(POLL_MIN_MS); // someone else is breaking it: let them finish
      continue;
    }
    if (!waitingReported) {
      waitingReported = true;
      opts.onWait?.(owner);
    }
    if (Date.now() >= deadline) {
      throw unavailable(
        `timed out after ${opts.timeoutMs} ms waiting for lock ${lockPath} held by pid ${owner?.pid ?? '?'}`,
      );
    }
    await sleep(Math.min(delay, Math.max(1, deadline - Date.now())));
    delay = Math.min(delay * 2, POLL_MAX_MS);
  }
}
