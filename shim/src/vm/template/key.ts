// What a template is a snapshot OF: every input that shapes the saved guest, hashed into its
// key. Any input changing gives another key, so a stale template is simply never found (and
// later garbage-collected), never restored into a guest that differs from a cold boot.
//
// File contents (kernel, initramfs) are hashed once per file version: a memo keyed by the
// file's identity (device, inode, size, mtime, ctime) lives in memory and on disk, so the many
// short-lived shim daemons do not re-hash a 20 MiB kernel or re-run `qemu --version` per Create.
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { BackendName } from '../backend';

/** Bump when the template layout or the restore procedure changes what a template means. */
export const TEMPLATE_FORMAT = 'smolvm-template-v1';

/**
 * Size of the placeholder file behind each slot while a template is built (sparse: costs
 * nothing). The template guest then knows every slot as this big, so any real image or
 * writable disk a restore puts there fits before the capacity refresh lands.
 */
export const TEMPLATE_SLOT_BYTES = 2 ** 40;

/** The part of the slot layout a guest sees at boot (the files behind the slots come later). */
export interface SlotShape {
  serial: string;
  readOnly: boolean;
}

export interface TemplateInputs {
  format: string;
  backend: BackendName;
  kernelSha256: string;
  initramfsSha256: string;
  cmdline: string;
  memoryMiB: number;
  vcpus: number;
  slots: SlotShape[];
  /** A pod VM booted with a disk hotplug controller (absent: none). Also in `machine`. */
  diskHotplug?: boolean;
  /** The VMM and its version: tcg `qemu-system-x86_64 --version`; kvm the VMM build. */
  vmm: string;
  /** The machine as the VMM is told it (tcg: the QEMU argv with paths abstracted). */
  machine: string;
  /** Host kind the state depends on (kvm: a hash of the host's CPUID; tcg: none). */
  host: string;
}

/** Templates of one family differ only by contents (kernel, initramfs, VMM): a newer one
 *  supersedes the others. */
export function familyOf(inputs: TemplateInputs): string {
  const { backend, memoryMiB, vcpus, slots } = inputs;
  // Only hotplug VMs carry the field: other families keep their names.
  const family = inputs.diskHotplug ? { backend, memoryMiB, vcpus, slots, diskHotplug: true } : { backend, memoryMiB, vcpus, slots };
  return sha256Hex(JSON.stringify(family)).slice(0, 16);
}

export function templateKey(inputs: TemplateInputs): string {
  // Fixed field order: the key must not depend on how the object was built.
  const canonical = JSON.stringify([
    inputs.format, inputs.backend, inputs.kernelSha256, inputs.initramfsSha256, inputs.cmdline,
    inputs.memoryMiB, inputs.vcpus, inputs.slots.map((s) => [s.serial, s.readOnly]), inputs.vmm,
    inputs.machine, inputs.host, ...(inputs.diskHotplug ? ['disk-hotplug'] : []),
  ]);
  return sha256Hex(canonical).slice(0, 24);
}

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
    throw new Error(`template input ${file}: ${(err as Error).message}`);
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
