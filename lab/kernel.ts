// The lab's L1 kernel: Debian's standard amd64 kernel (it has 9p and kvm-amd as modules; the
// -cloud flavour has no 9p), found through the linux-image-amd64 metapackage's current
// dependency, so no ABI number is written down anywhere. Fetched once with apt-get download +
// dpkg-deb -x and cached as
//   <cacheDir>/lab/<release>_<debian version>/vmlinuz
//   <cacheDir>/lab/<release>_<debian version>/vmlinux   (decompressed, booted through PVH)
//   <cacheDir>/lab/<release>_<debian version>/modules/<name>.ko   (uncompressed)
//   <cacheDir>/lab/<release>_<debian version>/manifest.json       (load order, built-ins)
// The directory is assembled in a private temp dir and renamed into place, so readers never
// see half of it and two fetchers racing are harmless (the loser discards its copy).
import { execFile } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import * as zlib from 'node:zlib';

import { extractVmlinux, hasPvhEntry } from './bzimage';
import { canonicalModuleName, readModuleInfo } from './modinfo';

const execFileAsync = promisify(execFile);

export const KERNEL_METAPACKAGE = 'linux-image-amd64';

/** What the lab's init needs, in the recipe's order; dependencies are added ahead of each. */
export const LAB_MODULES: readonly string[] = [
  'virtio_ring', 'virtio', 'virtio_pci_modern_dev', 'virtio_pci_legacy_dev', 'virtio_pci',
  '9pnet', '9pnet_virtio', 'netfs', 'fscache', '9p', 'overlay', 'irqbypass', 'ccp', 'kvm', 'kvm_amd',
];

/** Bump when the cached layout changes. */
const CACHE_LAYOUT_VERSION = 2;

export interface LabKernel {
  /** e.g. linux-image-6.1.0-57-amd64 */
  package: string;
  /** Debian version of that package, e.g. 6.1.192-3 */
  debianVersion: string;
  /** uname -r of the kernel, e.g. 6.1.0-57-amd64 */
  release: string;
  dir: string;
  vmlinuz: string;
  /** What QEMU's -kernel gets: the PVH vmlinux when it could be extracted, else the bzImage. */
  bootImage: string;
  /** Absolute paths of the .ko files in load order (dependencies first). */
  modules: string[];
  /** Wanted modules that this kernel has built in (nothing to load). */
  builtin: string[];
}

interface Manifest {
  layout: number;
  package: string;
  debianVersion: string;
  release: string;
  /** 'vmlinux' (PVH ELF) or 'vmlinuz' (bzImage) */
  bootImage: 'vmlinux' | 'vmlinuz';
  /** Module names in load order; the file is modules/<name>.ko */
  loadOrder: string[];
  builtin: string[];
}

async function run(cmd: string, args: string[], what: string, cwd?: string): Promise<string> {
  try {
    const { stdout } = await execFileAsync(cmd, args, { cwd, encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new Error(`lab: ${what}: ${cmd} is not installed`);
    throw new Error(`lab: ${what}: \`${cmd} ${args.join(' ')}\` failed: ${(e.stderr ?? e.message).trim()}`);
  }
}

/** The kernel package the metapackage depends on right now, and its candidate version. */
export async function resolveKernelPackage(): Promise<{ package: string; debianVersion: string; release: string }> {
  const depends = await run('apt-cache', ['depends', KERNEL_METAPACKAGE], `resolving ${KERNEL_METAPACKAGE}`);
  const candidates = depends
    .split('\n')
    .map((line) => /^\s*\|?Depends:\s*(linux-image-(\S+))\s*$/.exec(line))
    .filter((m): m is RegExpExecArray => m !== null && !m[1]!.includes('-unsigned'));
  const match = candidates[0];
  if (!match) {
    throw new Error(`lab: \`apt-cache depends ${KERNEL_METAPACKAGE}\` names no linux-image-* package ` +
      '(are the package lists there? run apt-get update)');
  }
  const pkg = match[1]!;
  const release = match[2]!;
  const show = await run('apt-cache', ['show', '--no-all-versions', pkg], `looking up ${pkg}`);
  const version = /^Version:\s*(\S+)\s*$/m.exec(show)?.[1];
  if (!version) throw new Error(`lab: \`apt-cache show ${pkg}\` gives no Version`);
  return { package: pkg, debianVersion: version, release };
}

function safeDirName(s: string): string {
  return s.replace(/[^A-Za-z0-9._+-]/g, '_');
}

function kernelFromManifest(dir: string, manifest: Manifest): LabKernel {
  return {
    package: manifest.package,
    debianVersion: manifest.debianVersion,
    release: manifest.release,
    dir,
    vmlinuz: path.join(dir, 'vmlinuz'),
    bootImage: path.join(dir, manifest.bootImage),
    modules: manifest.loadOrder.map((name) => path.join(dir, 'modules', `${name}.ko`)),
    builtin: manifest.builtin,
  };
}

/** A cached kernel dir is usable when its manifest is this layout and every file is there. */
function readCached(dir: string): LabKernel | undefined {
  let manifest: Manifest;
  try {
    manifest = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Manifest;
  } catch {
    return undefined;
  }
  if (manifest.layout !== CACHE_LAYOUT_VERSION || !Array.isArray(manifest.loadOrder)) return undefined;
  const kernel = kernelFromManifest(dir, manifest);
  if (![kernel.vmlinuz, kernel.bootImage, ...kernel.modules].every((f) => fs.existsSync(f))) return undefined;
  return kernel;
}

/** Module file contents, uncompressed whatever the kernel's CONFIG_MODULE_COMPRESS_* says. */
async function readModuleFile(file: string): Promise<Buffer> {
  if (file.endsWith('.ko')) return fs.promises.readFile(file);
  if (file.endsWith('.ko.gz')) return zlib.gunzipSync(await fs.promises.readFile(file));
  const tool = file.endsWith('.ko.xz') ? 'xz' : file.endsWith('.ko.zst') ? 'zstd' : undefined;
  if (!tool) throw new Error(`lab: unknown module compression: ${file}`);
  try {
    const { stdout } = await promisify(execFile)(tool, ['-dc', file], { encoding: 'buffer', maxBuffer: 256 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    throw new Error(`lab: decompressing ${file} with ${tool}: ${(err as Error).message}`);
  }
}

/** name -> file for every module under lib/modules/<release>/kernel. */
async function indexModules(root: string): Promise<Map<string, string>> {
  const index = new Map<string, string>();
  const entries = await fs.promises.readdir(root, { recursive: true, withFileTypes: true });
  for (const entry of entries) {
    if (!entry.isFile()) continue;
    const m = /^(.+)\.ko(\.gz|\.xz|\.zst)?$/.exec(entry.name);
    if (m) index.set(canonicalModuleName(m[1]!), path.join(entry.parentPath, entry.name));
  }
  return index;
}

/** Names of the modules built into the kernel (lib/modules/<release>/modules.builtin). */
async function builtinModules(modulesDir: string): Promise<Set<string>> {
  const text = await fs.promises.readFile(path.join(modulesDir, 'modules.builtin'), 'utf8').catch(() => '');
  return new Set(text.split('\n').filter(Boolean).map((l) => canonicalModuleName(path.basename(l).replace(/\.ko$/, ''))));
}

/**
 * Copies the wanted modules (and everything they depend on, by .modinfo) from an unpacked
 * kernel package into destModules, uncompressed; returns the load order and the built-ins.
 */
export async function collectModules(
  modulesDir: string,
  wanted: readonly string[],
  destModules: string,
): Promise<{ loadOrder: string[]; builtin: string[] }> {
  const index = await indexModules(path.join(modulesDir, 'kernel'));
  const builtins = await builtinModules(modulesDir);
  const loadOrder: string[] = [];
  const builtin: string[] = [];
  const visiting = new Set<string>();
  const done = new Set<string>();

  const visit = async (rawName: string, neededBy: string | undefined): Promise<void> => {
    const name = canonicalModuleName(rawName);
    if (done.has(name)) return;
    if (visiting.has(name)) throw new Error(`lab: module dependency loop through ${name}`);
    const file = index.get(name);
    if (!file) {
      if (builtins.has(name)) {
        builtin.push(name);
        done.add(name);
        return;
      }
      throw new Error(`lab: kernel module ${name}${neededBy ? ` (needed by ${neededBy})` : ''} is neither a module ` +
        `nor built into this kernel (${modulesDir})`);
    }
    visiting.add(name);
    const image = await readModuleFile(file);
    const info = readModuleInfo(image, file);
    for (const dep of info.depends) await visit(dep, name);
    await fs.promises.writeFile(path.join(destModules, `${name}.ko`), image, { mode: 0o644 });
    visiting.delete(name);
    done.add(name);
    loadOrder.push(name);
  };
  for (const name of wanted) await visit(name, undefined);
  return { loadOrder, builtin };
}

/** The most recently published complete kernel in <cacheDir>/lab, if any. */
function newestCached(labDir: string): LabKernel | undefined {
  let names: string[];
  try {
    names = fs.readdirSync(labDir).filter((n) => !n.startsWith('.') && n !== 'tools');
  } catch {
    return undefined;
  }
  return names
    .map((n) => readCached(path.join(labDir, n)))
    .filter((k): k is LabKernel => k !== undefined)
    .sort((a, b) => fs.statSync(b.dir).mtimeMs - fs.statSync(a.dir).mtimeMs)[0];
}

/**
 * The L1 kernel for the lab: the metapackage's current dependency, fetched and cached on first
 * use. When apt cannot resolve or download it (offline, no package lists) but an older kernel
 * is cached, that one is used with a warning. `log` receives progress lines.
 */
export async function ensureLabKernel(cacheDir: string, log: (line: string) => void = () => {}): Promise<LabKernel> {
  if (!cacheDir) throw new Error('lab: cacheDir is empty');
  try {
    return await fetchLabKernel(cacheDir, log);
  } catch (err) {
    const fallback = newestCached(path.join(cacheDir, 'lab'));
    if (!fallback) throw err;
    log(`lab: warning: ${(err as Error).message}; using the cached ${fallback.package} ${fallback.debianVersion}`);
    return fallback;
  }
}

async function fetchLabKernel(cacheDir: string, log: (line: string) => void): Promise<LabKernel> {
  const resolved = await resolveKernelPackage();
  const labDir = path.join(cacheDir, 'lab');
  const dir = path.join(labDir, safeDirName(`${resolved.release}_${resolved.debianVersion}`));
  const cached = readCached(dir);
  if (cached) return cached;

  log(`lab: fetching ${resolved.package} ${resolved.debianVersion} (current dependency of ${KERNEL_METAPACKAGE})`);
  await fs.promises.mkdir(labDir, { recursive: true });
  const temp = await fs.promises.mkdtemp(path.join(labDir, '.fetch-'));
  try {
    const download = path.join(temp, 'download');
    const unpacked = path.join(temp, 'unpacked');
    const staging = path.join(temp, 'kernel');
    await fs.promises.mkdir(download);
    await fs.promises.mkdir(path.join(staging, 'modules'), { recursive: true });
    // apt downloads as the unprivileged _apt user; it warns (harmlessly) and falls back to root
    // when that user cannot write here, so let it.
    await fs.promises.chmod(temp, 0o755);
    await fs.promises.chmod(download, 0o777);
    await run('apt-get', ['download', '-q', `${resolved.package}=${resolved.debianVersion}`], `downloading ${resolved.package}`, download);
    const debs = (await fs.promises.readdir(download)).filter((f) => f.endsWith('.deb'));
    if (debs.length !== 1) throw new Error(`lab: apt-get download of ${resolved.package} left ${debs.length} .deb files`);
    await run('dpkg-deb', ['-x', path.join(download, debs[0]!), unpacked], `unpacking ${debs[0]}`);

    const vmlinuz = path.join(unpacked, 'boot', `vmlinuz-${resolved.release}`);
    if (!fs.existsSync(vmlinuz)) throw new Error(`lab: ${resolved.package} has no boot/vmlinuz-${resolved.release}`);
    await fs.promises.copyFile(vmlinuz, path.join(staging, 'vmlinuz'));
    const bootImage = await extractPvhVmlinux(vmlinuz, path.join(staging, 'vmlinux'), log);
    const modulesDir = path.join(unpacked, 'lib', 'modules', resolved.release);
    const { loadOrder, builtin } = await collectModules(modulesDir, LAB_MODULES, path.join(staging, 'modules'));
    const manifest: Manifest = {
      layout: CACHE_LAYOUT_VERSION,
      package: resolved.package,
      debianVersion: resolved.debianVersion,
      release: resolved.release,
      bootImage,
      loadOrder,
      builtin,
    };
    await fs.promises.writeFile(path.join(staging, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    try {
      await fs.promises.rename(staging, dir);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST' && code !== 'ENOTEMPTY') throw err;
      // Somebody else published it first (theirs is as good as ours), or what is there is an
      // older layout or a damaged copy: move that aside and publish ours.
      if (!readCached(dir)) {
        await fs.promises.rename(dir, path.join(temp, 'stale')).catch(() => {});
        await fs.promises.rename(staging, dir).catch(() => {});
      }
    }
    const published = readCached(dir);
    if (!published) throw new Error(`lab: ${dir} exists but is incomplete; remove it and retry`);
    log(`lab: cached ${resolved.release} with modules ${loadOrder.join(' ')}${builtin.length ? ` (built in: ${builtin.join(' ')})` : ''}`);
    return published;
  } finally {
    await fs.promises.rm(temp, { recursive: true, force: true });
  }
}

/** Writes the bzImage's vmlinux to dest when it has a PVH entry; says which image to boot. */
async function extractPvhVmlinux(vmlinuz: string, dest: string, log: (line: string) => void): Promise<'vmlinux' | 'vmlinuz'> {
  try {
    const elf = await extractVmlinux(await fs.promises.readFile(vmlinuz));
    if (!hasPvhEntry(elf)) throw new Error('the vmlinux has no PVH entry note (CONFIG_PVH off?)');
    await fs.promises.writeFile(dest, elf, { mode: 0o644 });
    return 'vmlinux';
  } catch (err) {
    // Still bootable, only ~3 s slower per L1 boot under TCG.
    log(`lab: booting the bzImage (cannot use its vmlinux: ${(err as Error).message})`);
    return 'vmlinuz';
  }
}

/** Short content hash, for cache file names. */
export function contentKey(...parts: (Buffer | string)[]): string {
  const hash = crypto.createHash('sha256');
  for (const p of parts) hash.update(p);
  return hash.digest('hex').slice(0, 16);
}
