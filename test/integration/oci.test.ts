// The OCI spec applied in the guest, end to end through the shim's Container (via
// `smolvm run --bundle`) on the tcg backend: bind mounts of host files (copied in) and host
// directories (virtio-9p), read-only binds, a full containerd-style mount list, capabilities,
// and the clear errors for what a backend cannot serve.
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { makeBusyboxRootfs } from '../helpers/rootfs';
import { removeWorkDir } from '../helpers/work-dir';

const repo = path.resolve(__dirname, '..', '..', '..');
const smolvm = path.join(repo, 'bin', 'smolvm');

/** containerd 1.6's default mounts for `ctr run` (oci.WithDefaultSpec). */
const CONTAINERD_MOUNTS = [
  { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
  { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
  { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
  { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
  { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
  { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
  { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['ro', 'nosuid', 'noexec', 'nodev'] },
];

describe('OCI spec in the guest (smolvm run --bundle, tcg)', function () {
  this.timeout(180_000);
  let work: string;
  let env: NodeJS.ProcessEnv;
  let hostDir: string;
  let hostFile: string;

  before(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-oci-'));
    env = { ...process.env, SMOLVM_ROOT: path.join(work, 'smolvm') };
    hostDir = path.join(work, 'shared');
    fs.mkdirSync(hostDir);
    fs.writeFileSync(path.join(hostDir, 'from-host.txt'), 'hello from the host directory\n');
    hostFile = path.join(work, 'hosts');
    fs.writeFileSync(hostFile, '127.0.0.1 localhost\n10.9.8.7 from-host-file\n');
  });
  after(() => removeWorkDir(work));

  /** A bundle (rootfs + config.json) with the given spec changes; returns smolvm run's result. */
  function runBundle(name: string, args: string[], change: (spec: Record<string, any>) => void) {
    const bundle = path.join(work, name);
    fs.mkdirSync(bundle);
    const rootfs = makeBusyboxRootfs(bundle);
    const spec: Record<string, any> = {
      ociVersion: '1.0.2',
      process: { args, env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin'], cwd: '/', user: { uid: 0, gid: 0 } },
      root: { path: path.basename(rootfs) },
      hostname: name,
      mounts: structuredClone(CONTAINERD_MOUNTS),
      linux: {},
    };
    change(spec);
    fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec));
    const r = spawnSync(smolvm, ['run', '--backend', 'tcg', '--bundle', bundle], { env, timeout: 150_000 });
    return { status: r.status, out: r.stdout.toString(), err: r.stderr.toString() };
  }

  it('bind-mounts a host file (copied in, read-only) and a host directory (9p, read-write)', () => {
    const script = [
      'cat /etc/hosts', 'echo x >> /etc/hosts || echo file-ro',
      'cat /data/from-host.txt', 'echo written-in-guest > /data/from-guest.txt && echo dir-rw',
      'grep " /data " /proc/mounts | cut -d" " -f3',
    ].join('; ');
    const r = runBundle('binds', ['sh', '-c', script], (spec) => {
      spec.mounts.push(
        { destination: '/etc/hosts', type: 'bind', source: hostFile, options: ['rbind', 'ro'] },
        { destination: '/data', type: 'bind', source: hostDir, options: ['rbind', 'rw'] },
      );
    });
    assert.equal(r.status, 0, r.err);
    assert.match(r.out, /10\.9\.8\.7 from-host-file/);
    assert.match(r.out, /file-ro/);
    assert.match(r.out, /hello from the host directory/);
    assert.match(r.out, /dir-rw/);
    assert.match(r.out, /^9p$/m);
    // 9p is a live share: the guest's write is on the host.
    assert.equal(fs.readFileSync(path.join(hostDir, 'from-guest.txt'), 'utf8'), 'written-in-guest\n');
    // The host file is a copy: unchanged.
    assert.doesNotMatch(fs.readFileSync(hostFile, 'utf8'), /x/);
  });

  it('a read-only host directory cannot be written from the guest', () => {
    const r = runBundle('robind', ['sh', '-c', 'cat /ro/from-host.txt; touch /ro/nope || echo dir-ro'], (spec) => {
      spec.mounts.push({ destination: '/ro', type: 'bind', source: hostDir, options: ['rbind', 'ro'] });
    });
    assert.equal(r.status, 0, r.err);
    assert.match(r.out, /hello from the host directory/);
    assert.match(r.out, /dir-ro/);
    assert.equal(fs.existsSync(path.join(hostDir, 'nope')), false);
  });

  it('applies capabilities, no_new_privs, sysctls, masked paths and a read-only root from config.json', () => {
    const caps = ['CAP_DAC_OVERRIDE', 'CAP_FOWNER', 'CAP_SETUID', 'CAP_SETGID', 'CAP_KILL'];
    const script = 'busybox chown 1 /tmp/f 2>&1 || echo chown-refused; cat /proc/sys/net/ipv4/ip_forward; wc -c < /proc/cmdline; touch /x || echo root-ro; hostname';
    const r = runBundle('security', ['sh', '-c', `touch /tmp/f; ${script}`], (spec) => {
      spec.process.capabilities = { bounding: caps, effective: caps, permitted: caps, inheritable: [], ambient: [] };
      spec.process.noNewPrivileges = true;
      spec.root.readonly = true;
      spec.mounts.push({ destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'size=1m'] });
      spec.linux = { sysctl: { 'net.ipv4.ip_forward': '1' }, maskedPaths: ['/proc/kcore', '/proc/cmdline'], readonlyPaths: ['/proc/sys'] };
    });
    assert.equal(r.status, 0, r.err);
    const lines = r.out.split('\n');
    assert.ok(lines.includes('chown-refused'), r.out);
    assert.ok(lines.includes('1'), 'sysctl applied');
    assert.ok(lines.includes('0'), 'masked /proc/cmdline is empty');
    assert.ok(lines.includes('root-ro'));
    assert.ok(lines.includes('security'));
  });

  it('refuses an unsupported mount type, naming the mount, before booting a VM', () => {
    const started = Date.now();
    const r = runBundle('badmount', ['true'], (spec) => {
      spec.mounts.push({ destination: '/nfs', type: 'nfs', source: 'server:/export', options: [] });
    });
    assert.notEqual(r.status, 0);
    assert.match(r.err, /mount \/nfs .*type "nfs" cannot be served in the guest/);
    assert.ok(Date.now() - started < 10_000, 'fails before any VM boots');
    assert.deepEqual(fs.readdirSync(path.join(work, 'smolvm', 'run', 'vms')).length, 0);
    const dataDirs = path.join(work, 'smolvm', 'lib', 'vms');
    assert.deepEqual(fs.existsSync(dataDirs) ? fs.readdirSync(dataDirs) : [], []);
  });

  it('refuses a bind of a missing host path and of a socket, clearly', () => {
    const missing = runBundle('badsrc', ['true'], (spec) => {
      spec.mounts.push({ destination: '/x', type: 'bind', source: path.join(work, 'no-such-path'), options: ['rbind'] });
    });
    assert.notEqual(missing.status, 0);
    assert.match(missing.err, /mount \/x .*bind source .*no-such-path: does not exist/);
    const tooBig = path.join(work, 'big.bin');
    fs.writeFileSync(tooBig, Buffer.alloc((1 << 20) + 1));
    const big = runBundle('bigfile', ['true'], (spec) => {
      spec.mounts.push({ destination: '/big', type: 'bind', source: tooBig, options: ['rbind', 'ro'] });
    });
    assert.notEqual(big.status, 0);
    assert.match(big.err, /mount \/big .*host file .*big\.bin is 1048577 bytes; .* at most 1048576 bytes/);
  });

  it('refuses a host directory bind on the kvm backend, naming the mount', function () {
    const bundle = path.join(work, 'kvmdir');
    fs.mkdirSync(bundle);
    const rootfs = makeBusyboxRootfs(bundle);
    fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({
      ociVersion: '1.0.2', process: { args: ['true'], cwd: '/', user: { uid: 0, gid: 0 } }, root: { path: path.basename(rootfs) },
      mounts: [{ destination: '/data', type: 'bind', source: hostDir, options: ['rbind'] }],
    }));
    const r = spawnSync(smolvm, ['run', '--backend', 'kvm', '--bundle', bundle], { env: { ...env, SMOLVM_KVM_ON_PVM: '1' }, timeout: 60_000 });
    assert.notEqual(r.status, 0);
    assert.match(r.stderr.toString(), /mount \/data: bind mounts of host directories .* need virtio-9p, which the kvm backend does not have yet/);
  });
});
