// The VM's one virtio-9p share (tcg) as a guest root sees it, through real ctr, containerd,
// QEMU and guest: QEMU serves it as root with security_model=passthrough, so what a guest
// root can do there it does on the host as root, and only the host's mounts limit it. The
// share root is a read-only, nosuid, nodev mount holding only mount points; each host
// directory is bound into it nosuid,nodev (and read-only when asked). VM runtimes only:
// under runc a host directory is not behind any share.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describeResult, sleep } from './harness/exec';
import { hostMountFlags, SHARE_ROOT_PROBE, SHARE_ROOT_REFUSED } from './harness/share';
import { describeConformance } from './harness/suite';
import { waitForStatus } from './harness/tasks';
import { skipBecause } from '../test/helpers/skip';

describeConformance('the VM\'s 9p share, as a guest root sees it', (test) => {
  let work = '';
  beforeEach(() => { work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-cf-share-')); });
  afterEach(() => { fs.rmSync(work, { recursive: true, force: true }); });

  test('a guest root that mounts the share itself can neither write, mkdir, mknod, chmod u+s nor symlink at its root', 120_000, async (env, ctx) => {
    if (!env.vm) skipBecause(ctx, { notHere: 'runc has no 9p share: host directories are bind mounts' });
    const r = await env.run(env.newId('shareroot'), ['sh', '-c', SHARE_ROOT_PROBE], { ctrFlags: ['--privileged'], timeoutMs: 90_000 });
    assert.equal(r.exitCode, 0, describeResult(r));
    assert.deepEqual(r.stdout.toString().split('\n'), [...SHARE_ROOT_REFUSED, ''], describeResult(r));
    assert.match(r.stderr.toString(), /Read-only file system/, describeResult(r));
  });

  test('host directories: rw takes writes, ro refuses them; each is nosuid,nodev on the host and in the guest, under a read-only root', 180_000, async (env, ctx) => {
    if (!env.vm) skipBecause(ctx, { notHere: 'runc has no 9p share: host directories are bind mounts' });
    const { containerd } = env;
    const rwDir = fs.mkdtempSync(path.join(work, 'rw-'));
    const roDir = fs.mkdtempSync(path.join(work, 'ro-'));
    fs.writeFileSync(path.join(roDir, 'seed'), 'from the host\n');
    const log = path.join(work, 'out.log');
    const id = env.newId('sharevols');
    const script = [
      'echo written > /rw/file && echo rw-ok',
      'cat /ro/seed',
      '{ echo x > /ro/nope; } 2>/dev/null || echo ro-refused',
      // busybox's /proc/mounts: "smolvm /rw 9p rw,nosuid,nodev,... 0 0"
      'for d in /rw /ro; do grep " $d 9p " /proc/mounts | cut -d" " -f4 | tr , "\\n" | grep -xE "ro|rw|nosuid|nodev" | tr "\\n" " "; echo; done',
      // A device node in a rw volume is of no use here: QEMU 7.2 (Debian) refuses the mknod
      // (ENXIO: it will not open a special file to set its mode, and unlinks it), an older
      // QEMU makes it and the guest's nodev refuses to open it.
      '{ mknod /rw/null c 1 3 && echo x > /rw/null; } 2>/dev/null && echo node-usable || echo node-unusable',
      'echo ready', 'exec sleep 100000',
    ].join('; ');
    const started = await env.run(id, ['sh', '-c', script], {
      keep: true, timeoutMs: 90_000,
      ctrFlags: ['-d', '--log-uri', `file://${log}`,
        '--mount', `type=bind,src=${rwDir},dst=/rw,options=rbind:rw`,
        '--mount', `type=bind,src=${roDir},dst=/ro,options=rbind:ro`],
    });
    assert.equal(started.exitCode, 0, describeResult(started));
    assert.equal(await waitForStatus(containerd, id, 'RUNNING', 30_000), 'RUNNING');
    let out = '';
    for (const deadline = Date.now() + 30_000; !/^ready$/m.test(out) && Date.now() < deadline; await sleep(100)) {
      out = fs.existsSync(log) ? fs.readFileSync(log, 'utf8') : '';
    }
    assert.deepEqual(out.split('\n'), ['rw-ok', 'from the host', 'ro-refused', 'rw nosuid nodev ', 'ro nosuid nodev ', 'node-unusable', 'ready', ''], out);
    assert.equal(fs.readFileSync(path.join(rwDir, 'file'), 'utf8'), 'written\n');
    assert.ok(!fs.existsSync(path.join(roDir, 'nope')));

    // On the host, while it runs: the VM's export and its two binds, with their flags.
    const vmsDir = path.join(containerd.smolvmRoot, 'run', 'vms');
    const vmDirs = fs.readdirSync(vmsDir).map((name) => path.join(vmsDir, name));
    assert.equal(vmDirs.length, 1, `one VM: ${vmDirs.join(' ')}`);
    const shares = path.join(vmDirs[0]!, 'shares');
    assert.deepEqual(hostMountFlags(shares), ['ro', 'nosuid', 'nodev'], 'the share root');
    const binds = fs.readdirSync(shares).sort().map((name) => hostMountFlags(path.join(shares, name)));
    assert.deepEqual(binds, [['rw', 'nosuid', 'nodev'], ['ro', 'nosuid', 'nodev']], 'the host directories in the share');

    await containerd.ctrChecked(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 30_000 });
    assert.equal(await waitForStatus(containerd, id, 'STOPPED', 30_000), 'STOPPED');
    await containerd.ctrChecked(['tasks', 'rm', id], { timeoutMs: 30_000 });
    await containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });
    // The suite's leak check then finds no mount under the smolvm root: the binds, the export
    // and its work tmpfs are gone with the VM.
  });
});
