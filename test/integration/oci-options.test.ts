// The host-side translation of the OCI spec for the guest agent (shim/src/oci/guest-config.ts)
// and the tcg backend's 9p arguments: no VM needed, runs in milliseconds.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Code, codeOf } from '../../shim/src/errdefs';
import {
  guestCapabilities, guestContainerConfig, guestMounts, guestSeccomp, guestSysctls, MAX_HOST_DIRECTORIES, MS, parseMountOptions,
  withShareSubpaths,
} from '../../shim/src/oci/guest-config';
import type { OciSpec } from '../../shim/src/oci/spec';
import { ninePShareArgs, qemuArgs } from '../../shim/src/vm/backends/tcg';
import { removeWorkDir } from '../helpers/work-dir';
import { containerVmShape } from '../../shim/src/vm/shape';
import { TcgBackend } from '../../shim/src/vm/backends/tcg';

const invalid = (pattern: RegExp) => (err: unknown): boolean => {
  assert.equal(codeOf(err), Code.InvalidArgument, (err as Error).message);
  assert.match((err as Error).message, pattern);
  return true;
};

describe('OCI spec → guest agent (mount options, capabilities, seccomp, sysctls)', () => {
  let work: string;
  before(() => { work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-oci-opts-')); });
  after(() => removeWorkDir(work));

  it('splits mount options into flags, propagation and data as runc does', () => {
    const p = parseMountOptions(['nosuid', 'noexec', 'nodev', 'ro', 'rprivate', 'mode=755', 'size=65536k', 'defaults'], 'm');
    assert.equal(p.flags, MS.NOSUID | MS.NOEXEC | MS.NODEV | MS.RDONLY);
    assert.equal(p.propagation, MS.PRIVATE | MS.REC);
    assert.equal(p.data, 'mode=755,size=65536k');
    assert.equal(p.bind, false);
    const b = parseMountOptions(['rbind', 'ro', 'rw'], 'm');
    assert.deepEqual([b.bind, b.recursive, b.flags], [true, true, 0n], 'rw after ro clears it');
    assert.throws(() => parseMountOptions(['tmpcopyup'], 'mount /x'), invalid(/mount \/x: option "tmpcopyup" is not supported/));
  });

  it('maps fs mounts, copies host files in, and sends host directories through the VM\'s 9p share', () => {
    const file = path.join(work, 'resolv.conf');
    fs.writeFileSync(file, 'nameserver 10.0.0.1\n', { mode: 0o640 });
    const dir = path.join(work, 'dir');
    fs.mkdirSync(dir);
    const { mounts, shares } = guestMounts([
      { destination: '/sys/fs/cgroup', type: 'cgroup', source: 'cgroup', options: ['ro'] },
      { destination: '/etc/resolv.conf', type: 'bind', source: file, options: ['rbind', 'ro'] },
      { destination: '/data', source: dir, options: ['rbind'] },
    ], 'c1');
    assert.equal(mounts[0]!.type, 'cgroup2');
    assert.equal(mounts[1]!.type, 'bind');
    assert.equal(mounts[1]!.file!.content.toString(), 'nameserver 10.0.0.1\n');
    assert.equal(mounts[1]!.file!.mode, 0o640);
    assert.equal(mounts[1]!.flags, MS.RDONLY);
    assert.equal(mounts[2]!.shareTag, undefined);
    assert.equal(mounts[2]!.shareSubpath, undefined, 'known once the host has bind-mounted it');
    assert.deepEqual(shares, [{ hostPath: dir, readOnly: false, recursive: true, destination: '/data', mountIndex: 2 }]);
    const filled = withShareSubpaths({ mounts }, shares, ['7'])!;
    assert.equal(filled.mounts[2]!.shareSubpath, '7');
    assert.equal(mounts[2]!.shareSubpath, undefined, 'the input is not changed');
    assert.throws(() => withShareSubpaths({ mounts }, shares, []), /1 host directories but 0 share subpaths/);
    const ro = guestMounts([{ destination: '/ro', type: 'bind', source: dir, options: ['bind', 'ro'] }], 'c1');
    assert.deepEqual(ro.shares, [{ hostPath: dir, readOnly: true, recursive: false, destination: '/ro', mountIndex: 0 }]);
  });

  it("gives CRI's /dev/shm bind of a host directory a guest tmpfs instead of a 9p share", () => {
    const { mounts, shares } = guestMounts([{ destination: '/dev/shm', type: 'bind', source: work, options: ['rbind', 'ro'] }], 'c1');
    assert.deepEqual(shares, []);
    assert.equal(mounts[0]!.type, 'tmpfs');
    assert.equal(mounts[0]!.data, 'mode=1777,size=65536k');
    assert.equal(mounts[0]!.flags, MS.RDONLY | MS.NOSUID | MS.NODEV | MS.NOEXEC);
  });

  it('refuses what the guest cannot serve, naming the mount', () => {
    assert.throws(() => guestMounts([{ destination: '/n', type: 'nfs', source: 'h:/e' }], 'c1'),
      invalid(/container c1: mount \/n \(mounts\[0\]\): type "nfs" cannot be served in the guest/));
    assert.throws(() => guestMounts([{ destination: '/x', type: 'bind', source: '/no/such/path', options: ['rbind'] }], 'c1'),
      invalid(/mount \/x .*bind source \/no\/such\/path: does not exist/));
    assert.throws(() => guestMounts([{ destination: '/x', type: 'bind', source: 'relative', options: ['rbind'] }], 'c1'),
      invalid(/must be an absolute host path/));
    assert.throws(() => guestMounts([{ destination: '/null', type: 'bind', source: '/dev/null', options: ['rbind'] }], 'c1'),
      invalid(/\/dev\/null is a character device/));
    assert.throws(() => guestMounts([{ destination: 'rel', type: 'tmpfs' }], 'c1'), invalid(/absolute path other than \//));
    const big = path.join(work, 'big');
    fs.writeFileSync(big, Buffer.alloc((1 << 20) + 1));
    assert.throws(() => guestMounts([{ destination: '/big', type: 'bind', source: big, options: ['bind'] }], 'c1'),
      invalid(/is 1048577 bytes; .* at most 1048576 bytes/));
    const many = Array.from({ length: MAX_HOST_DIRECTORIES + 1 }, (_, i) => ({ destination: `/d${i}`, type: 'bind', source: work, options: ['rbind'] }));
    assert.throws(() => guestMounts(many, 'c1'), invalid(/at most 64 host directories/));
    assert.equal(guestMounts(many.slice(0, 12), 'c1').shares.length, 12, 'more than virtio-mmio has transports');
  });

  it('checks capability names', () => {
    const proc = { cwd: '/', user: { uid: 0, gid: 0 }, capabilities: { bounding: ['CAP_CHOWN'], ambient: ['CAP_NOPE'] } };
    assert.throws(() => guestCapabilities(proc, 'container c1'), invalid(/container c1: process.capabilities.ambient: unknown capability "CAP_NOPE"/));
    assert.equal(guestCapabilities({ cwd: '/', user: { uid: 0, gid: 0 } }, 'c'), undefined, 'absent: the full set is kept');
    assert.deepEqual(guestCapabilities({ cwd: '/', user: { uid: 0, gid: 0 }, capabilities: { bounding: ['CAP_KILL'] } }, 'c'),
      { bounding: ['CAP_KILL'], effective: [], inheritable: [], permitted: [], ambient: [] });
  });

  it('translates linux.seccomp and refuses what cannot be compiled', () => {
    const sc = guestSeccomp({
      defaultAction: 'SCMP_ACT_ERRNO', defaultErrnoRet: 1, architectures: ['SCMP_ARCH_X86_64'],
      syscalls: [{ names: ['personality'], action: 'SCMP_ACT_ALLOW', args: [{ index: 0, value: 0xffffffff, op: 'SCMP_CMP_EQ' }] }],
    }, 'c1')!;
    assert.equal(sc.defaultErrno, 1);
    assert.equal(sc.syscalls[0]!.args[0]!.value, 0xffffffffn);
    assert.equal(sc.syscalls[0]!.args[0]!.valueTwo, 0n);
    assert.equal(guestSeccomp(undefined, 'c1'), undefined);
    assert.throws(() => guestSeccomp({ defaultAction: 'SCMP_ACT_NOTIFY' }, 'c1'), invalid(/SCMP_ACT_NOTIFY is not supported/));
    assert.throws(() => guestSeccomp({ defaultAction: 'SCMP_ACT_ALLOW', listenerPath: '/run/x.sock' }, 'c1'), invalid(/listenerPath/));
    assert.throws(() => guestSeccomp({ defaultAction: 'SCMP_ACT_ALLOW', syscalls: [{ names: ['read'], action: 'SCMP_ACT_ALLOW', args: [{ index: 7, op: 'SCMP_CMP_EQ' }] }] }, 'c1'),
      invalid(/syscalls\[0\].args\[0\].index must be 0-5/));
    assert.throws(() => guestSeccomp({ defaultAction: 'SCMP_ACT_ALLOW', flags: ['SECCOMP_FILTER_FLAG_NEW_LISTENER'] }, 'c1'), invalid(/unsupported flag/));
  });

  it('accepts only namespaced sysctls, as runc does', () => {
    assert.deepEqual(guestSysctls({ 'net.ipv4.ip_forward': '1', 'kernel.shmmax': '1' }, 'c1').map((s) => s.name), ['net.ipv4.ip_forward', 'kernel.shmmax']);
    assert.throws(() => guestSysctls({ 'vm.swappiness': '1' }, 'c1'), invalid(/linux.sysctl vm.swappiness is not in a namespace the container owns/));
    assert.throws(() => guestSysctls({ 'net/../../x': '1' }, 'c1'), invalid(/invalid name/));
  });

  it('keeps mounts undefined when the spec has none (the agent defaults apply)', () => {
    const spec: OciSpec = { ociVersion: '1.0.2', linux: { maskedPaths: ['/proc/kcore'] } };
    const cfg = guestContainerConfig(spec, 'c1');
    assert.equal(cfg.mounts, undefined);
    assert.deepEqual(cfg.linux.maskedPaths, ['/proc/kcore']);
    assert.throws(() => guestContainerConfig({ ociVersion: '1', linux: { readonlyPaths: ['proc/sys'] } }, 'c1'), invalid(/not an absolute path/));
  });

  it('gives every tcg VM exactly one virtio-9p-device: <vmDir>/shares, commas escaped', () => {
    assert.deepEqual(ninePShareArgs('/a,b/shares'), [
      '-fsdev', 'local,id=share,path=/a,,b/shares,security_model=passthrough,multidevs=remap',
      '-device', 'virtio-9p-device,fsdev=share,mount_tag=smolvm',
    ]);
    const args = qemuArgs({
      vmId: 'v', dir: '/vm', dataDir: '/data/v', shape: containerVmShape(new TcgBackend(), 128, 1),
      guest: { kernel: '/k', initramfs: '/i', cmdline: '' },
      slots: [{ serial: 'slot0', path: '/vm/a', readOnly: true }, { serial: 'slot1', path: '/vm/b', readOnly: false }],
    }, '/vm/agent.sock');
    assert.equal(args.filter((a) => a.startsWith('virtio-9p-device')).length, 1);
    assert.ok(args.includes('local,id=share,path=/vm/shares,security_model=passthrough,multidevs=remap'));
  });
});
