// A busybox OCI image built locally from Debian's busybox-static (no registry, no network):
// oci-layout + index.json + manifest + config + one gzip'd layer, byte-identical on every build
// from the same busybox binary, cached by the hash of its inputs, imported with `ctr image import`.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { PrivateContainerd, lines } from './containerd';
import { TarEntry, createTar } from './tar';

export const BUSYBOX_BINARY = '/bin/busybox';
export const TEST_IMAGE_REF = 'docker.io/smolvm/busybox:test';
export const IMAGE_PATH_ENV = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

// Bump when the image layout below changes, so cached tarballs are rebuilt.
const BUILDER_VERSION = '1';

/** Applets linked to /bin/busybox in the image (what the conformance suite and bench use). */
export const BUSYBOX_APPLETS = [
  '[', 'cat', 'cp', 'cut', 'date', 'dd', 'df', 'echo', 'env', 'false', 'free', 'grep', 'head', 'hostname',
  'id', 'kill', 'ln', 'ls', 'md5sum', 'mkdir', 'mount', 'mv', 'nproc', 'od', 'printf', 'ps', 'pwd',
  'readlink', 'rm', 'seq', 'sh', 'sha256sum', 'sleep', 'stat', 'sync', 'tail', 'test', 'touch', 'tr',
  'true', 'umount', 'uname', 'wc', 'yes',
] as const;

export interface OciImage {
  readonly ref: string;
  /** Path of the OCI image-layout tarball. */
  readonly tarPath: string;
  readonly manifestDigest: string;
  readonly configDigest: string;
  readonly layerDigest: string;
}

const sha256 = (data: Buffer | string): string => createHash('sha256').update(data).digest('hex');

function layerEntries(busybox: Buffer): TarEntry[] {
  const dirs: Array<[string, number]> = [
    ['bin', 0o755], ['dev', 0o755], ['etc', 0o755], ['proc', 0o755], ['root', 0o700], ['sys', 0o755],
    ['tmp', 0o1777], ['usr', 0o755], ['usr/bin', 0o755], ['var', 0o755], ['var/tmp', 0o1777],
  ];
  const text = (s: string): Buffer => Buffer.from(s, 'utf8');
  return [
    ...dirs.map(([p, mode]): TarEntry => ({ kind: 'dir', path: p, mode })),
    { kind: 'file', path: 'bin/busybox', mode: 0o755, data: busybox },
    ...BUSYBOX_APPLETS.map((applet): TarEntry => ({ kind: 'symlink', path: `bin/${applet}`, target: 'busybox' })),
    { kind: 'file', path: 'etc/group', mode: 0o644, data: text('root:x:0:\nnogroup:x:65534:\n') },
    { kind: 'file', path: 'etc/hostname', mode: 0o644, data: text('busybox\n') },
    {
      kind: 'file', path: 'etc/passwd', mode: 0o644,
      data: text('root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n'),
    },
  ];
}

function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value), 'utf8');
}

/** Build the image tarball in memory. Pure: same busybox bytes → same tarball bytes. */
export function buildBusyboxImageTar(busybox: Buffer, ref = TEST_IMAGE_REF): { tar: Buffer; image: Omit<OciImage, 'tarPath'> } {
  const layerTar = createTar(layerEntries(busybox));
  // zlib's gzip header carries mtime 0 and no file name: deterministic.
  const layerGz = gzipSync(layerTar, { level: 9 });
  const layerDigest = `sha256:${sha256(layerGz)}`;
  const config = json({
    architecture: 'amd64',
    os: 'linux',
    config: { Env: [IMAGE_PATH_ENV], Cmd: ['/bin/sh'], WorkingDir: '/' },
    rootfs: { type: 'layers', diff_ids: [`sha256:${sha256(layerTar)}`] },
    history: [{ created_by: `smolvm conformance image builder v${BUILDER_VERSION} from Debian busybox-static` }],
  });
  const configDigest = `sha256:${sha256(config)}`;
  const manifest = json({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigest, size: layerGz.length }],
  });
  const manifestDigest = `sha256:${sha256(manifest)}`;
  const tag = ref.slice(ref.lastIndexOf(':') + 1);
  const index = json({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      digest: manifestDigest,
      size: manifest.length,
      platform: { architecture: 'amd64', os: 'linux' },
      annotations: { 'io.containerd.image.name': ref, 'org.opencontainers.image.ref.name': tag },
    }],
  });
  const blob = (digest: string, data: Buffer): TarEntry => ({
    kind: 'file', path: `blobs/sha256/${digest.slice('sha256:'.length)}`, mode: 0o644, data,
  });
  const tar = createTar([
    { kind: 'file', path: 'oci-layout', mode: 0o644, data: json({ imageLayoutVersion: '1.0.0' }) },
    { kind: 'file', path: 'index.json', mode: 0o644, data: index },
    { kind: 'dir', path: 'blobs', mode: 0o755 },
    { kind: 'dir', path: 'blobs/sha256', mode: 0o755 },
    blob(configDigest, config),
    blob(layerDigest, layerGz),
    blob(manifestDigest, manifest),
  ]);
  return { tar, image: { ref, manifestDigest, configDigest, layerDigest } };
}

export function defaultImageCacheDir(): string {
  return process.env.SMOLVM_CONFORMANCE_CACHE ?? path.join(os.tmpdir(), 'smolvm-conformance-cache');
}

/** The image tarball, from the cache when its inputs are unchanged, else built and published atomically. */
export function busyboxImage(cacheDir = defaultImageCacheDir(), ref = TEST_IMAGE_REF): OciImage {
  if (!fs.existsSync(BUSYBOX_BINARY)) throw new Error(`${BUSYBOX_BINARY} not found: install Debian's busybox-static`);
  const busybox = fs.readFileSync(BUSYBOX_BINARY);
  const key = sha256([BUILDER_VERSION, sha256(busybox), ref, ...BUSYBOX_APPLETS].join('\n')).slice(0, 24);
  const tarPath = path.join(cacheDir, `busybox-oci-${key}.tar`);
  const metaPath = `${tarPath}.json`;
  if (fs.existsSync(tarPath) && fs.existsSync(metaPath)) {
    const meta = JSON.parse(fs.readFileSync(metaPath, 'utf8')) as Omit<OciImage, 'tarPath'>;
    return { ...meta, tarPath };
  }
  const { tar, image } = buildBusyboxImageTar(busybox, ref);
  fs.mkdirSync(cacheDir, { recursive: true });
  const tmpSuffix = `.tmp-${process.pid}-${Date.now()}`;
  fs.writeFileSync(`${tarPath}${tmpSuffix}`, tar);
  fs.writeFileSync(`${metaPath}${tmpSuffix}`, JSON.stringify(image));
  fs.renameSync(`${tarPath}${tmpSuffix}`, tarPath);
  fs.renameSync(`${metaPath}${tmpSuffix}`, metaPath);
  return { ...image, tarPath };
}

/** `ctr image import` the tarball into the containerd and check the ref is there. */
export async function importImage(containerd: PrivateContainerd, image: OciImage): Promise<void> {
  await containerd.ctrChecked(['images', 'import', image.tarPath], { timeoutMs: 120_000 });
  const listed = lines((await containerd.ctrChecked(['images', 'ls', '-q'], { timeoutMs: 30_000 })).stdout);
  if (!listed.includes(image.ref)) {
    throw new Error(`image import did not create ${image.ref}; images now: ${listed.join(', ') || '(none)'}`);
  }
}
