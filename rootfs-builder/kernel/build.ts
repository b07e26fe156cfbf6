// Builds the smolvm guest kernel from Debian's linux-source-6.1 with the microvm.config fragment
// on top of tinyconfig, and caches it by the hash of its inputs:
//   <cacheDir>/kernels/<key>/vmlinux   the ELF we boot directly (PVH entry note)
//   <cacheDir>/kernels/<key>/release   its `uname -r`
// The build runs in a private temp dir under <cacheDir>/kernels/ and is published by renaming the
// finished directory into place, so readers never see a half-written kernel and two builders
// racing each other are harmless (the loser discards its result).
import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { builderPath } from '../source-tree';

export interface KernelArtifact {
  vmlinux: string;
  release: string;
  key: string;
}

/** Bump when the recipe below changes in a way that changes the output. */
const RECIPE_VERSION = 1;
const SOURCE_PACKAGE = 'linux-source-6.1';
const SOURCE_TARBALL = `/usr/src/${SOURCE_PACKAGE}.tar.xz`;
const KERNELS_SUBDIR = 'kernels';
const TEMP_PREFIX = '.build-';

/** Tools the kernel build runs, and the Debian package that provides each. */
const REQUIRED_TOOLS: ReadonlyArray<readonly [tool: string, debianPackage: string]> = [
  ['make', 'make'],
  ['gcc', 'gcc'],
  ['ld', 'binutils'],
  ['flex', 'flex'],
  ['bison', 'bison'],
  ['bc', 'bc'],
  ['perl', 'perl'],
  ['tar', 'tar'],
  ['xz', 'xz-utils'],
];
/** objtool (run on every x86_64 build) needs libelf's headers. */
const REQUIRED_HEADERS: ReadonlyArray<readonly [header: string, debianPackage: string]> = [
  ['/usr/include/gelf.h', 'libelf-dev'],
];

/** The config fragment, found from the repository root (works from dist/ and from sources). */
export function configFragmentPath(): string {
  return builderPath('kernel', 'microvm.config');
}

let sourceVersionMemo: string | undefined;

/** Version of the installed linux-source-6.1 package; throws naming the package when absent. */
function linuxSourceVersion(): string {
  if (sourceVersionMemo !== undefined) return sourceVersionMemo;
  const query = spawnSync('dpkg-query', ['-W', '-f', '${Status}\t${Version}', SOURCE_PACKAGE], { encoding: 'utf8' });
  if (query.error) {
    throw new Error(`kernel: cannot run dpkg-query to find the ${SOURCE_PACKAGE} version: ${query.error.message}`);
  }
  const [status = '', version = ''] = query.stdout.trim().split('\t');
  if (query.status !== 0 || !status.endsWith(' installed') || !version) {
    throw new Error(`kernel: the Debian package ${SOURCE_PACKAGE} is not installed (apt-get install ${SOURCE_PACKAGE})`);
  }
  sourceVersionMemo = version;
  return version;
}

/** Hash of the inputs: the config fragment, this build recipe version, linux-source version. */
export function kernelKey(): string {
  let fragment: Buffer;
  try {
    fragment = fs.readFileSync(configFragmentPath());
  } catch (err) {
    throw new Error(`kernel: cannot read the config fragment ${configFragmentPath()}: ${(err as Error).message}`);
  }
  const hash = createHash('sha256');
  hash.update(`smolvm-kernel-recipe ${RECIPE_VERSION}\n`);
  hash.update(`${SOURCE_PACKAGE} ${linuxSourceVersion()}\n`);
  hash.update(fragment);
  return hash.digest('hex').slice(0, 24);
}

function kernelsDir(cacheDir: string): string {
  return path.join(cacheDir, KERNELS_SUBDIR);
}

function readArtifact(dir: string, key: string): KernelArtifact | null {
  const vmlinux = path.join(dir, 'vmlinux');
  try {
    const release = fs.readFileSync(path.join(dir, 'release'), 'utf8').trim();
    if (!release || !fs.statSync(vmlinux).isFile()) return null;
    return { vmlinux, release, key };
  } catch {
    return null;
  }
}

/**
 * The cached kernel if built, else null (fast: no build). Also null when the key cannot be
 * computed (linux-source-6.1 not installed): ensureKernel then reports what is missing.
 */
export function cachedKernel(cacheDir: string): KernelArtifact | null {
  let key: string;
  try {
    key = kernelKey();
  } catch {
    return null;
  }
  return readArtifact(path.join(kernelsDir(cacheDir), key), key);
}

function findOnPath(tool: string): boolean {
  const dirs = (process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin').split(path.delimiter);
  return dirs.some((dir) => {
    try {
      fs.accessSync(path.join(dir, tool), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** Throws one error naming every missing tool and the Debian packages to install. */
function checkToolchain(): void {
  const missing: string[] = [];
  const packages = new Set<string>();
  for (const [tool, pkg] of REQUIRED_TOOLS) {
    if (!findOnPath(tool)) {
      missing.push(tool);
      packages.add(pkg);
    }
  }
  for (const [header, pkg] of REQUIRED_HEADERS) {
    if (!fs.existsSync(header)) {
      missing.push(header);
      packages.add(pkg);
    }
  }
  if (!fs.existsSync(SOURCE_TARBALL)) {
    missing.push(SOURCE_TARBALL);
    packages.add(SOURCE_PACKAGE);
  }
  if (missing.length > 0) {
    throw new Error(
      `kernel: cannot build, missing ${missing.join(', ')} ` +
        `(apt-get install ${[...packages].join(' ')})`,
    );
  }
}

/** Parses `CONFIG_X=v` and `# CONFIG_X is not set` lines; "n" stands for "not set". */
export function parseKconfig(text: string): Map<string, string> {
  const values = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const set = /^(CONFIG_[A-Za-z0-9_]+)=(.*)$/.exec(line);
    if (set) {
      values.set(set[1]!, set[2]!);
      continue;
    }
    const unset = /^# (CONFIG_[A-Za-z0-9_]+) is not set$/.exec(line);
    if (unset) values.set(unset[1]!, 'n');
  }
  return values;
}

/** Every option of the fragment whose value did not survive olddefconfig, as readable strings. */
export function missingOptions(fragment: Map<string, string>, resolved: Map<string, string>): string[] {
  const missing: string[] = [];
  for (const [name, wanted] of fragment) {
    const got = resolved.get(name) ?? 'n';
    const show = (value: string) => (value === 'n' ? 'not set' : value);
    if (got !== wanted) missing.push(`${name}: wanted ${show(wanted)}, got ${show(got)}`);
  }
  return missing;
}

const XEN_ELFNOTE_PHYS32_ENTRY = 18;

/** True when the ELF file has the PVH entry note (Xen note type 18) that direct boot needs. */
export function hasPvhNote(elf: Buffer): boolean {
  // ELF64 little-endian only (the x86_64 vmlinux); everything bounds-checked.
  if (elf.length < 64 || elf.readUInt32BE(0) !== 0x7f454c46 || elf[4] !== 2 || elf[5] !== 1) return false;
  const phoff = Number(elf.readBigUInt64LE(32));
  const phentsize = elf.readUInt16LE(54);
  const phnum = elf.readUInt16LE(56);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (ph + 56 > elf.length) return false;
    if (elf.readUInt32LE(ph) !== 4 /* PT_NOTE */) continue;
    const start = Number(elf.readBigUInt64LE(ph + 8));
    const end = start + Number(elf.readBigUInt64LE(ph + 32));
    if (end > elf.length) continue;
    let at = start;
    while (at + 12 <= end) {
      const namesz = elf.readUInt32LE(at);
      const descsz = elf.readUInt32LE(at + 4);
      const type = elf.readUInt32LE(at + 8);
      const nameAt = at + 12;
      if (nameAt + namesz > end) break;
      const name = elf.toString('latin1', nameAt, nameAt + Math.max(0, namesz - 1));
      if (name === 'Xen' && type === XEN_ELFNOTE_PHYS32_ENTRY) return true;
      at = nameAt + align4(namesz) + align4(descsz);
    }
  }
  return false;
}

function align4(n: number): number {
  return (n + 3) & ~3;
}

function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  return s >= 60 ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s` : `${s}s`;
}

interface RunOptions {
  cwd: string;
  /** Called with each output line (stdout and stderr). */
  onLine?: (line: string) => void;
}

/** Runs a command; rejects with the command and the tail of its output when it fails. */
function run(command: string, args: readonly string[], opts: RunOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: opts.cwd,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: {
        ...process.env,
        LC_ALL: 'C',
        // Reproducible build metadata (no host name, user or date baked into the kernel).
        KBUILD_BUILD_USER: 'smolvm',
        KBUILD_BUILD_HOST: 'smolvm',
        KBUILD_BUILD_TIMESTAMP: '1970-01-01',
      },
    });
    const tail: string[] = [];
    const onChunk = () => {
      let partial = '';
      return (chunk: Buffer) => {
        const text = chunk.toString('utf8');
        const lines = (partial + text).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) {
          tail.push(line);
          if (tail.length > 40) tail.shift();
          opts.onLine?.(line);
        }
      };
    };
    child.stdout.on('data', onChunk());
    child.stderr.on('data', onChunk());
    child.on('error', (err) => reject(new Error(`kernel: cannot run ${command}: ${err.message}`)));
    child.on('close', (code, signal) => {
      if (code === 0) {
        resolve();
        return;
      }
      const how = signal ? `killed by ${signal}` : `exit status ${code}`;
      reject(new Error(`kernel: \`${command} ${args.join(' ')}\` failed (${how}):\n${tail.join('\n')}`));
    });
  });
}

/** Removes build dirs left by builders that died (their pid is gone). */
function removeAbandonedBuilds(dir: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const match = new RegExp(`^\\${TEMP_PREFIX}[0-9a-f]+-(\\d+)-`).exec(name);
    if (!match) continue;
    const pid = Number(match[1]);
    if (pid === process.pid || processAlive(pid)) continue;
    fs.rmSync(path.join(dir, name), { recursive: true, force: true });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Builds (or returns the cached) kernel; progress lines go to onProgress. */
export async function ensureKernel(opts: {
  cacheDir: string;
  onProgress?: (line: string) => void;
  force?: boolean;
  jobs?: number;
}): Promise<KernelArtifact> {
  const progress = opts.onProgress ?? (() => undefined);
  const key = kernelKey();
  const root = kernelsDir(opts.cacheDir);
  const finalDir = path.join(root, key);
  if (!opts.force) {
    const cached = readArtifact(finalDir, key);
    if (cached) return cached;
  }
  const jobs = opts.jobs ?? os.availableParallelism();
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > 256) {
    throw new Error(`kernel: jobs must be an integer from 1 to 256, got ${jobs}`);
  }
  checkToolchain();

  fs.mkdirSync(root, { recursive: true });
  removeAbandonedBuilds(root);
  const tempDir = fs.mkdtempSync(path.join(root, `${TEMP_PREFIX}${key}-${process.pid}-`));
  const started = Date.now();
  try {
    const src = path.join(tempDir, 'src');
    fs.mkdirSync(src);
    progress(`kernel ${key}: unpacking ${SOURCE_TARBALL} (${SOURCE_PACKAGE} ${linuxSourceVersion()})`);
    await run('tar', ['-xJf', SOURCE_TARBALL, '-C', src, '--strip-components=1'], { cwd: tempDir });

    progress('kernel: configuring (tinyconfig + microvm.config + olddefconfig)');
    const make = (...args: string[]) => ['ARCH=x86_64', ...args];
    await run('make', make('tinyconfig'), { cwd: src });
    const fragmentText = fs.readFileSync(configFragmentPath(), 'utf8');
    // Kconfig lets a later line override an earlier one: appending the fragment merges it.
    fs.appendFileSync(path.join(src, '.config'), `\n${fragmentText}\n`);
    await run('make', make('olddefconfig'), { cwd: src });
    const missing = missingOptions(
      parseKconfig(fragmentText),
      parseKconfig(fs.readFileSync(path.join(src, '.config'), 'utf8')),
    );
    if (missing.length > 0) {
      throw new Error(
        `kernel: olddefconfig dropped options of microvm.config (a dependency is missing):\n  ${missing.join('\n  ')}`,
      );
    }

    progress(`kernel: compiling vmlinux with make -j${jobs}`);
    let compiled = 0;
    let lastReport = Date.now();
    await run('make', make(`-j${jobs}`, 'vmlinux'), {
      cwd: src,
      onLine: (line) => {
        // Kbuild prints "  CC      path.o" per object: count them, report every 15 s.
        if (/^\s+(CC|AS)\s+\S+\.o$/.test(line)) compiled++;
        if (Date.now() - lastReport >= 15_000) {
          lastReport = Date.now();
          progress(`kernel: ${compiled} objects compiled (${formatDuration(Date.now() - started)})`);
        }
      },
    });
    const release = fs.readFileSync(path.join(src, 'include', 'config', 'kernel.release'), 'utf8').trim();
    const vmlinuxBuilt = path.join(src, 'vmlinux');
    if (!hasPvhNote(fs.readFileSync(vmlinuxBuilt))) {
      throw new Error('kernel: the built vmlinux has no PVH entry note (CONFIG_PVH): it cannot be booted directly');
    }

    const staged = path.join(tempDir, 'out');
    fs.mkdirSync(staged);
    fs.renameSync(vmlinuxBuilt, path.join(staged, 'vmlinux'));
    fs.writeFileSync(path.join(staged, 'release'), `${release}\n`);
    if (opts.force) fs.rmSync(finalDir, { recursive: true, force: true });
    try {
      fs.renameSync(staged, finalDir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // Another builder published the same key first: use theirs, discard ours.
      if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
    }
    const artifact = readArtifact(finalDir, key);
    if (!artifact) throw new Error(`kernel: published kernel at ${finalDir} is unreadable`);
    progress(`kernel: ${artifact.vmlinux} (${release}) built in ${formatDuration(Date.now() - started)}`);
    return artifact;
  } finally {
    fs.rmSync(tempDir, { recursive: true, force: true });
  }
}
