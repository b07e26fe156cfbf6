// The guest initramfs: smolvm-init as /init plus the /dev/console node the kernel needs to
// give PID 1 a console. The same archive boots every VM (nothing about a container is in it),
// so it is built once per agent binary and cached by the hash of its contents.
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { sourceTree } from '../source-tree';
import { type CpioEntry, writeCpio } from './cpio';

export interface InitramfsArtifact {
  /** <cacheDir>/initramfs/<key>.cpio */
  path: string;
  /** sha256 (hex) of the archive's contents. */
  key: string;
}

const AGENT_BINARY_RELATIVE = path.join('rootfs-builder', 'agent', 'build', 'smolvm-init');
const CONSOLE_MAJOR = 5;
const CONSOLE_MINOR = 1;

/** Path of the built agent binary (rootfs-builder/agent/build/smolvm-init); throws a clear
 *  error naming `make -C rootfs-builder/agent` when it is missing. */
export function agentBinaryPath(): string {
  const binary = path.join(sourceTree(), AGENT_BINARY_RELATIVE);
  let stat: fs.Stats;
  try {
    stat = fs.statSync(binary);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error(`guest agent not built: ${binary} is missing (run \`make -C rootfs-builder/agent\`)`);
    }
    throw err;
  }
  if (!stat.isFile() || stat.size === 0) {
    throw new Error(`guest agent ${binary} is not a usable file (rebuild with \`make -C rootfs-builder/agent\`)`);
  }
  return binary;
}

/** The archive's entries, in order (directories before what they hold). */
function initramfsEntries(agent: Buffer): CpioEntry[] {
  return [
    { kind: 'dir', path: 'dev', mode: 0o755 },
    { kind: 'chardev', path: 'dev/console', major: CONSOLE_MAJOR, minor: CONSOLE_MINOR, mode: 0o600 },
    { kind: 'file', path: 'init', data: agent, mode: 0o755 },
  ];
}

/** cpio (newc, uncompressed) with /init = smolvm-init, /dev/console (5:1), the dirs it needs;
 *  cached at <cacheDir>/initramfs/<sha256 of contents>.cpio, written atomically. */
/** The archive last made from an agent binary (by its identity) into a cache dir: a Create
 *  then costs one stat of each instead of re-reading and re-packing the agent. */
const made = new Map<string, InitramfsArtifact & { bytes: number }>();

export async function ensureInitramfs(opts: { cacheDir: string }): Promise<InitramfsArtifact> {
  if (!opts.cacheDir) throw new Error('ensureInitramfs: cacheDir is empty');
  const agentPath = agentBinaryPath();
  const agentStat = await fs.promises.stat(agentPath, { bigint: true });
  const memoKey = `${opts.cacheDir}\0${agentStat.dev}:${agentStat.ino}:${agentStat.size}:${agentStat.mtimeNs}:${agentStat.ctimeNs}`;
  const memo = made.get(memoKey);
  if (memo) {
    const still = await fs.promises.stat(memo.path).catch(() => undefined);
    if (still?.isFile() && still.size === memo.bytes) return { path: memo.path, key: memo.key };
    made.delete(memoKey);
  }
  const agent = await fs.promises.readFile(agentPath);
  const archive = writeCpio(initramfsEntries(agent));
  const key = crypto.createHash('sha256').update(archive).digest('hex');
  const dir = path.join(opts.cacheDir, 'initramfs');
  const target = path.join(dir, `${key}.cpio`);
  const remember = (): InitramfsArtifact => {
    made.set(memoKey, { path: target, key, bytes: archive.length });
    return { path: target, key };
  };

  // Content-addressed: a file of that name and size is this archive (published by rename).
  const existing = await fs.promises.stat(target).catch(() => undefined);
  if (existing?.isFile() && existing.size === archive.length) return remember();

  await fs.promises.mkdir(dir, { recursive: true });
  const temp = path.join(dir, `.${key}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`);
  try {
    await fs.promises.writeFile(temp, archive, { mode: 0o644 });
    await fs.promises.rename(temp, target);
  } catch (err) {
    await fs.promises.rm(temp, { force: true });
    throw new Error(`writing initramfs ${target}: ${(err as Error).message}`);
  }
  return remember();
}
