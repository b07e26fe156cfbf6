// The locally built busybox OCI image: deterministic bytes, digests that match the blobs, a
// layout Debian's tar reads, and the applet links. Needs no containerd.
import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gunzipSync } from 'node:zlib';
import { runChecked } from './harness/exec';
import { BUSYBOX_BINARY, buildBusyboxImageTar, busyboxImage } from './harness/image';
import { createTar } from './harness/tar';

const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

describe('busybox OCI image builder', function () {
  this.timeout(60_000);
  let workDir: string;

  before(() => {
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-image-test-'));
  });
  after(() => {
    fs.rmSync(workDir, { recursive: true, force: true });
  });

  it('gives the same bytes on every build', () => {
    const busybox = fs.readFileSync(BUSYBOX_BINARY);
    const first = buildBusyboxImageTar(busybox);
    const second = buildBusyboxImageTar(busybox);
    assert.equal(sha256(first.tar), sha256(second.tar));
    assert.deepEqual(first.image, second.image);
  });

  it('caches by content: the second call reuses the first tarball', () => {
    const cacheDir = path.join(workDir, 'cache');
    const built = busyboxImage(cacheDir);
    const mtime = fs.statSync(built.tarPath).mtimeMs;
    const again = busyboxImage(cacheDir);
    assert.equal(again.tarPath, built.tarPath);
    assert.equal(fs.statSync(again.tarPath).mtimeMs, mtime);
    assert.deepEqual(fs.readdirSync(cacheDir).filter((name) => name.includes('.tmp-')), []);
  });

  it('is an OCI layout whose digests match its blobs, readable by tar', async () => {
    const image = busyboxImage(path.join(workDir, 'cache'));
    const extracted = path.join(workDir, 'layout');
    fs.mkdirSync(extracted);
    await runChecked('tar', ['-xf', image.tarPath, '-C', extracted], { timeoutMs: 30_000 });
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(extracted, 'oci-layout'), 'utf8')), { imageLayoutVersion: '1.0.0' });

    const blob = (digest: string): Buffer => fs.readFileSync(path.join(extracted, 'blobs', 'sha256', digest.replace('sha256:', '')));
    for (const digest of [image.manifestDigest, image.configDigest, image.layerDigest]) {
      assert.equal(`sha256:${sha256(blob(digest))}`, digest, `blob ${digest} does not hash to its name`);
    }
    const index = JSON.parse(fs.readFileSync(path.join(extracted, 'index.json'), 'utf8')) as {
      manifests: Array<{ digest: string; annotations: Record<string, string> }>;
    };
    assert.equal(index.manifests[0]?.digest, image.manifestDigest);
    assert.equal(index.manifests[0]?.annotations['io.containerd.image.name'], image.ref);

    const config = JSON.parse(blob(image.configDigest).toString('utf8')) as {
      config: { Env: string[] };
      rootfs: { diff_ids: string[] };
    };
    assert.ok(config.config.Env.some((entry) => entry.startsWith('PATH=') && entry.includes('/bin')));
    const layerTar = gunzipSync(blob(image.layerDigest));
    assert.equal(config.rootfs.diff_ids[0], `sha256:${sha256(layerTar)}`, 'diff_id is not the uncompressed layer digest');

    const layerPath = path.join(workDir, 'layer.tar');
    fs.writeFileSync(layerPath, layerTar);
    const listing = (await runChecked('tar', ['-tvf', layerPath], { timeoutMs: 30_000 })).stdout.toString();
    assert.match(listing, /^-rwxr-xr-x 0\/0 +\d+ 1970-01-01 00:00 bin\/busybox$/m);
    assert.match(listing, /^lrwxrwxrwx 0\/0 +0 1970-01-01 00:00 bin\/sh -> busybox$/m);
    assert.match(listing, /^drwxrwxrwt 0\/0 +0 1970-01-01 00:00 tmp\/$/m);
  });

  it('tar writer: splits long paths into prefix + name, rejects what ustar cannot hold', async () => {
    const longPath = `${'d'.repeat(90)}/${'e'.repeat(90)}/file`;
    const archive = path.join(workDir, 'long.tar');
    fs.writeFileSync(archive, createTar([{ kind: 'file', path: longPath, mode: 0o644, data: Buffer.from('x') }]));
    const listing = (await runChecked('tar', ['-tf', archive], { timeoutMs: 10_000 })).stdout.toString();
    assert.equal(listing, `${longPath}\n`);
    assert.throws(
      () => createTar([{ kind: 'file', path: 'x'.repeat(300), mode: 0o644, data: Buffer.alloc(0) }]),
      /too long for ustar/,
    );
    assert.throws(() => createTar([{ kind: 'dir', path: '/abs', mode: 0o755 }]), /must be relative/);
  });
});
