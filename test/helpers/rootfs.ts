// A busybox root filesystem directory for tests (Debian's busybox-static), built once per run.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const APPLETS = ['sh', 'echo', 'cat', 'ls', 'env', 'pwd', 'id', 'uname', 'true', 'false', 'sleep', 'dd', 'head',
  'wc', 'yes', 'seq', 'touch', 'mkdir', 'sync', 'ps', 'hostname', 'md5sum', 'sha256sum', 'kill', 'rm', 'tr'];

export function makeBusyboxRootfs(parent = os.tmpdir()): string {
  const busybox = '/bin/busybox';
  if (!fs.existsSync(busybox)) throw new Error('test needs Debian package busybox-static (/bin/busybox)');
  const dir = fs.mkdtempSync(path.join(parent, 'smolvm-rootfs-'));
  for (const d of ['bin', 'etc', 'tmp', 'root', 'proc', 'sys', 'dev', 'usr/bin']) fs.mkdirSync(path.join(dir, d), { recursive: true });
  fs.copyFileSync(busybox, path.join(dir, 'bin', 'busybox'));
  fs.chmodSync(path.join(dir, 'bin', 'busybox'), 0o755);
  for (const a of APPLETS) fs.symlinkSync('busybox', path.join(dir, 'bin', a));
  fs.writeFileSync(path.join(dir, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  fs.writeFileSync(path.join(dir, 'etc', 'group'), 'root:x:0:\n');
  return dir;
}

export function defaultProcessSpec(args: string[]): Record<string, unknown> {
  return {
    ociVersion: '1.0.2',
    process: {
      args,
      env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
      cwd: '/',
      user: { uid: 0, gid: 0 },
    },
    root: { path: 'rootfs' },
    hostname: 'test',
  };
}
