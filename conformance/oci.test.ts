// The OCI spec applied as runc applies it, through real `ctr run` flags (--cap-drop,
// --read-only, --mount, --seccomp, --seccomp-profile) and, for what ctr 1.6 has no flag for
// (hostname, sysctls, rlimits, user ids, umask), a full spec with `ctr run --config`. Every
// test holds for runc too (SMOLVM_RUNTIME=io.containerd.runc.v2).
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { makeBusyboxRootfs } from '../test/helpers/rootfs';
import { describeResult, sleep } from './harness/exec';
import { mountsUnder } from './harness/host';
import { describeConformance, type ConformanceEnv } from './harness/suite';
import { skipBecause } from '../test/helpers/skip';

/** containerd's default capability set (oci.populateDefaultUnixSpec). */
const DEFAULT_CAPS = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW',
  'CAP_SETGID', 'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL',
  'CAP_AUDIT_WRITE'];

/** containerd 1.6's default mounts and masked/read-only paths (oci.populateDefaultUnixSpec). */
function fullSpec(rootfs: string, args: string[]): Record<string, any> {
  return {
    ociVersion: '1.0.2-dev',
    process: {
      args, env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], cwd: '/', user: { uid: 0, gid: 0 },
      capabilities: { bounding: DEFAULT_CAPS, effective: DEFAULT_CAPS, permitted: DEFAULT_CAPS, inheritable: [], ambient: [] },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: 1024, soft: 1024 }],
      noNewPrivileges: true,
    },
    root: { path: rootfs },
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      { destination: '/dev/pts', type: 'devpts', source: 'devpts', options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'] },
      { destination: '/dev/shm', type: 'tmpfs', source: 'shm', options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'] },
      { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
      { destination: '/run', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
    ],
    linux: {
      namespaces: [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }, { type: 'network' }],
      maskedPaths: ['/proc/acpi', '/proc/asound', '/proc/kcore', '/proc/keys', '/proc/latency_stats', '/proc/timer_list',
        '/proc/timer_stats', '/proc/sched_debug', '/sys/firmware', '/proc/scsi'],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

describeConformance('OCI spec in the container (ctr run)', (test) => {
  let work: string | undefined;
  const workDir = (): string => (work ??= fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-cf-oci-')));
  after(() => {
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  /** `ctr run --config SPEC ID`: the whole spec from a file (no image, root.path absolute). */
  async function runSpec(env: ConformanceEnv, label: string, spec: Record<string, any>) {
    const id = env.newId(label);
    const file = path.join(workDir(), `${id}.json`);
    fs.writeFileSync(file, JSON.stringify(spec));
    return env.containerd.ctr(['run', '--runtime', env.runtime, '--rm', '--config', file, id], { timeoutMs: 90_000 });
  }

  test('runs the process as PID 1 with the default capabilities and rlimits', 60_000, async (env) => {
    const r = await env.run(env.newId('pid1'), ['sh', '-c', 'echo $$; grep -E "^Cap(Bnd|Eff)" /proc/self/status; ulimit -n']);
    assert.equal(r.exitCode, 0, describeResult(r));
    assert.deepEqual(r.stdout.toString().split('\n'), ['1', 'CapEff:\t00000000a80425fb', 'CapBnd:\t00000000a80425fb', '1024', ''], describeResult(r));
  });

  test('--cap-drop CAP_CHOWN: chown is refused; without it, allowed', 90_000, async (env) => {
    const script = 'touch /tmp/f && busybox chown 1 /tmp/f && echo chown-ok';
    const dropped = await env.run(env.newId('capdrop'), ['sh', '-c', script], { ctrFlags: ['--cap-drop', 'CAP_CHOWN'] });
    assert.notEqual(dropped.exitCode, 0, describeResult(dropped));
    assert.match(dropped.stderr.toString(), /Operation not permitted/, describeResult(dropped));
    assert.doesNotMatch(dropped.stdout.toString(), /chown-ok/);
    const kept = await env.run(env.newId('capkeep'), ['sh', '-c', script]);
    assert.equal(kept.exitCode, 0, describeResult(kept));
    assert.match(kept.stdout.toString(), /chown-ok/);
  });

  test('--read-only: the root filesystem refuses writes', 60_000, async (env) => {
    const r = await env.run(env.newId('ro'), ['sh', '-c', 'touch /newfile || echo refused'], { ctrFlags: ['--read-only'] });
    assert.equal(r.exitCode, 0, describeResult(r));
    assert.match(r.stdout.toString(), /refused/);
    assert.match(r.stderr.toString(), /Read-only file system/);
  });

  test('--mount of a host file (ro) and of a host directory (rw): content visible in the container', 90_000, async (env) => {
    const dir = fs.mkdtempSync(path.join(workDir(), 'share-'));
    fs.writeFileSync(path.join(dir, 'in-dir.txt'), 'from the host directory\n');
    const file = path.join(workDir(), 'hostfile.txt');
    fs.writeFileSync(file, 'from the host file\n');
    const script = 'cat /hostfile /data/in-dir.txt; echo x >> /hostfile || echo file-ro; echo from-container > /data/out.txt && echo dir-rw';
    const r = await env.run(env.newId('mounts'), ['sh', '-c', script], { ctrFlags: [
      '--mount', `type=bind,src=${file},dst=/hostfile,options=rbind:ro`,
      '--mount', `type=bind,src=${dir},dst=/data,options=rbind:rw`,
    ] });
    assert.equal(r.exitCode, 0, describeResult(r));
    assert.deepEqual(r.stdout.toString().split('\n'), ['from the host file', 'from the host directory', 'file-ro', 'dir-rw', '']);
    assert.equal(fs.readFileSync(path.join(dir, 'out.txt'), 'utf8'), 'from-container\n');
    assert.equal(fs.readFileSync(file, 'utf8'), 'from the host file\n');
  });

  test('--mount of 10 host directories (more than a VM has virtio transports): rw, ro, rbind; host files survive', 120_000, async (env) => {
    const count = 10;
    const dirs = Array.from({ length: count }, (_, i) => {
      const dir = fs.mkdtempSync(path.join(workDir(), `many-${i}-`));
      fs.writeFileSync(path.join(dir, 'in.txt'), `dir ${i}\n`);
      return dir;
    });
    // Even: read-write; odd: read-only. Half of each kind non-recursive (bind), half rbind.
    const rw = (i: number): boolean => i % 2 === 0;
    const flags = dirs.flatMap((dir, i) => ['--mount', `type=bind,src=${dir},dst=/m${i},options=${i < count / 2 ? 'bind' : 'rbind'}:${rw(i) ? 'rw' : 'ro'}`]);
    const script = dirs.map((_, i) => rw(i)
      ? `cat /m${i}/in.txt; echo c${i} > /m${i}/out.txt && echo rw${i}`
      : `cat /m${i}/in.txt; echo x > /m${i}/out.txt 2>/dev/null || echo ro${i}`).join('; ');
    const r = await env.run(env.newId('manydirs'), ['sh', '-c', script], { ctrFlags: flags, timeoutMs: 90_000 });
    assert.equal(r.exitCode, 0, describeResult(r));
    const expected = dirs.flatMap((_, i) => [`dir ${i}`, rw(i) ? `rw${i}` : `ro${i}`]);
    assert.deepEqual(r.stdout.toString().split('\n'), [...expected, ''], describeResult(r));
    dirs.forEach((dir, i) => {
      assert.equal(fs.readFileSync(path.join(dir, 'in.txt'), 'utf8'), `dir ${i}\n`, `host file of ${dir}`);
      if (rw(i)) assert.equal(fs.readFileSync(path.join(dir, 'out.txt'), 'utf8'), `c${i}\n`);
      else assert.ok(!fs.existsSync(path.join(dir, 'out.txt')), `a read-only mount was written: ${dir}`);
    });
    if (env.vm) {
      // `ctr run --rm` has returned: the shim's bind mounts into the VM's share must be gone
      // (the suite's leak check looks again, with a bound).
      const deadline = Date.now() + 15_000;
      while (mountsUnder(env.containerd.smolvmRoot).length > 0 && Date.now() < deadline) await sleep(200);
      assert.deepEqual(mountsUnder(env.containerd.smolvmRoot), [], 'host bind mounts left behind');
    }
  });

  test('--seccomp: the default profile runs a normal container; a custom profile denies with EPERM', 120_000, async (env) => {
    const normal = await env.run(env.newId('seccompdef'), ['sh', '-c', 'grep ^Seccomp: /proc/self/status; mkdir /tmp/d && echo ok'], { ctrFlags: ['--seccomp'] });
    assert.equal(normal.exitCode, 0, describeResult(normal));
    assert.deepEqual(normal.stdout.toString().split('\n'), ['Seccomp:\t2', 'ok', '']);
    const profile = path.join(workDir(), 'deny-mkdir.json');
    fs.writeFileSync(profile, JSON.stringify({
      defaultAction: 'SCMP_ACT_ALLOW', architectures: ['SCMP_ARCH_X86_64', 'SCMP_ARCH_X86', 'SCMP_ARCH_X32'],
      syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO' }],
    }));
    const denied = await env.run(env.newId('seccompdeny'), ['sh', '-c', 'mkdir /tmp/d || echo denied'],
      { ctrFlags: ['--seccomp', '--seccomp-profile', profile] });
    assert.equal(denied.exitCode, 0, describeResult(denied));
    assert.match(denied.stdout.toString(), /denied/);
    assert.match(denied.stderr.toString(), /Operation not permitted/);
  });

  test('masks /proc/kcore and /sys/firmware; /proc/sys is read-only', 60_000, async (env) => {
    const script = 'echo kcore=$(cat /proc/kcore 2>/dev/null | wc -c); echo firmware=$(ls -A /sys/firmware | wc -l); echo 1 > /proc/sys/kernel/shmmni || echo sys-ro';
    const r = await env.run(env.newId('masked'), ['sh', '-c', script]);
    assert.equal(r.exitCode, 0, describeResult(r));
    assert.deepEqual(r.stdout.toString().split('\n'), ['kcore=0', 'firmware=0', 'sys-ro', '']);
  });

  test('--config: hostname, sysctl, rlimits, a username-less uid/gid with extra groups, umask, masked paths', 90_000, async (env) => {
    const rootfs = makeBusyboxRootfs(workDir());
    fs.chmodSync(rootfs, 0o755); // mkdtemp made it 0700: a non-root uid could not traverse /
    const spec = fullSpec(rootfs, ['sh', '-c', 'hostname; cat /proc/sys/kernel/msgmax; ulimit -n; ulimit -Hn; id; umask; touch /x 2>/dev/null || echo root-ro']);
    spec.hostname = 'oci-conformance';
    spec.root.readonly = true;
    spec.linux.sysctl = { 'kernel.msgmax': '4242' };
    spec.process.rlimits = [{ type: 'RLIMIT_NOFILE', hard: 777, soft: 555 }];
    spec.process.user = { uid: 4321, gid: 4322, additionalGids: [4323], umask: 0o077 };
    const r = await runSpec(env, 'config', spec);
    assert.equal(r.exitCode, 0, describeResult(r));
    assert.deepEqual(r.stdout.toString().split('\n'),
      ['oci-conformance', '4242', '555', '777', 'uid=4321 gid=4322 groups=4323', '0077', 'root-ro', ''], describeResult(r));
  });

  test('--config: an unknown mount type is refused, naming the mount', 60_000, async (env, ctx) => {
    if (!env.vm) skipBecause(ctx, { notHere: 'runc mounts whatever the host kernel has' });
    const rootfs = makeBusyboxRootfs(workDir());
    const spec = fullSpec(rootfs, ['true']);
    spec.mounts.push({ destination: '/remote', type: 'nfs', source: 'server:/export', options: [] });
    const r = await runSpec(env, 'badmount', spec);
    assert.notEqual(r.exitCode, 0, describeResult(r));
    assert.match(r.stderr.toString(), /mount \/remote .*type "nfs" cannot be served in the guest/, describeResult(r));
  });
});
