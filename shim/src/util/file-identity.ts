// What a file or a program IS, memoized per version: the sha256 of a file's contents and the
// first line of a program's --version, kept in memory and on disk under a memo directory
// (keyed by the file's device, inode, size and times), so that the many short-lived shim
// daemons do not re-hash a 20 MiB kernel or re-run `qemu --version` per Create.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export function sha256Hex(data: string | Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The identity of one version of a file: any rewrite changes mtime/ctime or the inode. */
function fingerprint(st: fs.BigIntStats, file: string): string {
  return `${file}|${st.dev}|${st.ino}|${st.size}|${st.mtimeNs}|${st.ctimeNs}`;
}

const memory = new Map<string, string>();

/** A value derived from a file version, memoized in memory and under `memoDir` on disk. */
async function memoized(file: string, memoDir: string, kind: string, compute: () => Promise<string>): Promise<string> {
  let st: fs.BigIntStats;
  try {
    st = await fs.promises.stat(file, { bigint: true });
  } catch (err) {
    throw new Error(`${file}: ${(err as Error).message}`);
  }
  const id = `${kind}|${fingerprint(st, file)}`;
  const cached = memory.get(id);
  if (cached !== undefined) return cached;
  const memoFile = path.join(memoDir, `${kind}-${sha256Hex(file).slice(0, 24)}`);
  try {
    const [recordedId, value] = (await fs.promises.readFile(memoFile, 'utf8')).split('\n');
    if (recordedId === id && value) {
      memory.set(id, value);
      return value;
    }
  } catch {
    // no memo yet
  }
  const value = await compute();
  memory.set(id, value);
  try {
    await fs.promises.mkdir(memoDir, { recursive: true });
    const temp = `${memoFile}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    await fs.promises.writeFile(temp, `${id}\n${value}`);
    await fs.promises.rename(temp, memoFile);
  } catch {
    // a memo is an optimization only
  }
  return value;
}

export function hashFile(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash('sha256');
    fs.createReadStream(file)
      .on('data', (chunk) => hash.update(chunk))
      .on('error', (err) => reject(new Error(`hashing ${file}: ${err.message}`)))
      .on('end', () => resolve(hash.digest('hex')));
  });
}

/** sha256 of a file's contents, memoized per file version. */
export function fileSha256(file: string, memoDir: string): Promise<string> {
  return memoized(file, memoDir, 'sha256', () => hashFile(file));
}

/** Absolute path of `program` on PATH (as spawn would find it), or null. */
export function findOnPath(program: string, env: NodeJS.ProcessEnv = process.env): string | null {
  if (program.includes('/')) return program;
  for (const dir of (env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, program);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // next
    }
  }
  return null;
}

/** First line of `<binary> --version`, memoized per binary version. */
export function programVersion(program: string, memoDir: string): Promise<string> {
  const binary = findOnPath(program);
  if (!binary) return Promise.reject(new Error(`${program} not found on PATH`));
  // Follow links so that an upgrade (a new file behind /usr/bin/...) changes the memo.
  const real = fs.realpathSync(binary);
  return memoized(real, memoDir, 'version', () => new Promise((resolve, reject) => {
    execFile(binary, ['--version'], { timeout: 10_000 }, (err, stdout) => {
      if (err) return reject(new Error(`${binary} --version: ${err.message}`));
      const first = stdout.split('\n')[0]?.trim();
      if (!first) return reject(new Error(`${binary} --version printed nothing`));
      resolve(first);
    });
  }));
}
