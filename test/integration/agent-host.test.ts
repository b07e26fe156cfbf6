// smolvm-init end to end: a real QEMU (tcg) guest with the cached kernel and our initramfs,
// driven over the virtserialport by the shim's real AgentClient. Needs a built kernel
// (`smolvm kernel build`), the agent (`make -C rootfs-builder/agent`), qemu-system-x86,
// erofs-utils, e2fsprogs and busybox-static.
import * as assert from 'node:assert/strict';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough, Writable } from 'node:stream';

import { cachedKernel } from '../../rootfs-builder/kernel/build';
import { ensureInitramfs } from '../../rootfs-builder/initramfs/build';
import { AgentClient } from '../../shim/src/agent/client';
import { Code, codeOf } from '../../shim/src/errdefs';
import type { CreateContainerRequest, Process as AgentProcess } from '../../shim/src/gen/smolvm/agent';
import { makeBusyboxRootfs } from '../helpers/rootfs';
import { skipBecause } from '../helpers/skip';

const KERNEL_CACHE = '/var/lib/smolvm';
// reboot=t: a triple fault resets at once; reboot=k polls a keyboard controller that the
// microvm machine does not have (~1.5 s).
const CMDLINE = 'console=ttyS0 reboot=t panic=-1 quiet';

class Collector extends Writable {
  readonly chunks: Buffer[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, done: (err?: Error | null) => void): void {
    this.chunks.push(chunk);
    done();
  }
  get bytes(): Buffer {
    return Buffer.concat(this.chunks);
  }
}

function guestProcess(args: string[], extra: Partial<AgentProcess> = {}): AgentProcess {
  return {
    args,
    env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin'],
    cwd: '/',
    user: { uid: 0, gid: 0, additionalGids: [] },
    terminal: false,
    rlimits: [],
    noNewPrivileges: false,
    consoleSize: undefined,
    ...extra,
  };
}

/** Resolves once the collector's text matches (the guest is slow under TCG). */
async function waitForOutput(collector: Collector, pattern: RegExp, timeoutMs = 20_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = collector.bytes.toString();
    if (pattern.test(text)) return text;
    if (Date.now() > deadline) throw new Error(`output ${JSON.stringify(text)} never matched ${pattern}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function request(id: string, args: string[]): Omit<CreateContainerRequest, 'stdio'> {
  return {
    containerId: id,
    image: { serial: 'slot0', fsType: 'erofs', readOnly: true },
    writable: { serial: 'slot1', fsType: 'ext4', readOnly: false },
    process: {
      args,
      env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin'],
      cwd: '/',
      user: { uid: 0, gid: 0, additionalGids: [] },
      terminal: false,
      rlimits: [],
      noNewPrivileges: false,
      consoleSize: undefined,
    },
    hostname: id,
    readonlyRootfs: false,
  };
}

async function connectWhenListening(socketPath: string, deadline: number): Promise<net.Socket> {
  for (;;) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect(socketPath);
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      });
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 20));
    }
  }
}

describe('smolvm-init in a QEMU guest (AgentClient over virtio-serial)', function () {
  this.timeout(120_000);
  let work: string;
  let qemu: ChildProcess | undefined;
  let qemuExit: Promise<number | null>;
  let agent: AgentClient;

  before(async function () {
    const kernel = cachedKernel(KERNEL_CACHE);
    if (!kernel) skipBecause(this, { lacks: 'setup', detail: 'no guest kernel built (smolvm kernel build)' });
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-agent-it-'));
    const initramfs = await ensureInitramfs({ cacheDir: work });
    const rootfs = makeBusyboxRootfs(work);
    fs.chmodSync(rootfs, 0o755); // mkdtemp made it 0700; the container's / has the image root's mode
    execFileSync('mkfs.erofs', ['--quiet', path.join(work, 'image.erofs'), rootfs]);
    fs.writeFileSync(path.join(work, 'disk.ext4'), '');
    fs.truncateSync(path.join(work, 'disk.ext4'), 64 << 20);
    execFileSync('mkfs.ext4', ['-q', '-F', path.join(work, 'disk.ext4')]);
    const sock = path.join(work, 'agent.sock');
    qemu = spawn('qemu-system-x86_64', [
      '-M', 'microvm,acpi=off', '-accel', 'tcg', '-cpu', 'max', '-m', '256', '-nodefaults', '-no-user-config',
      '-nographic', '-no-reboot', '-kernel', kernel!.vmlinux, '-initrd', initramfs.path, '-append', CMDLINE,
      '-serial', `file:${path.join(work, 'console.log')}`,
      '-drive', `id=s0,file=${path.join(work, 'image.erofs')},format=raw,if=none,readonly=on`,
      '-device', 'virtio-blk-device,drive=s0,serial=slot0',
      '-drive', `id=s1,file=${path.join(work, 'disk.ext4')},format=raw,if=none`,
      '-device', 'virtio-blk-device,drive=s1,serial=slot1',
      '-device', 'virtio-rng-device', '-device', 'virtio-serial-device',
      '-chardev', `socket,id=agent,path=${sock},server=on,wait=off`,
      '-device', 'virtserialport,chardev=agent,name=smolvm.agent',
    ], { stdio: ['ignore', 'ignore', 'inherit'] });
    qemuExit = new Promise((resolve) => qemu!.once('exit', (code) => resolve(code)));
    const channel = await connectWhenListening(sock, Date.now() + 10_000);
    agent = await AgentClient.connect(channel, { timeoutMs: 30_000, name: 'agent-host test' });
  });

  after(async () => {
    agent?.close();
    if (qemu && qemu.exitCode === null && qemu.signalCode === null) {
      qemu.kill('SIGKILL');
      await qemuExit;
    }
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('hands over the guest kernel release in the handshake', () => {
    assert.equal(agent.info.protocolVersion, 1);
    assert.match(agent.info.kernelRelease, /smolvm/);
    assert.ok(agent.info.initialStreamCredit > 0);
  });

  it('runs echo: output on stdout, exit status 0', async () => {
    const stdout = new Collector();
    const stderr = new Collector();
    const { io } = await agent.createContainer(request('echo', ['echo', 'hi']), { stdout, stderr });
    await agent.startProcess('echo');
    const result = await agent.waitProcess('echo');
    await io.outputDone;
    assert.equal(result.exitStatus, 0);
    assert.equal(stdout.bytes.toString(), 'hi\n');
    assert.equal(stderr.bytes.length, 0);
    await agent.removeContainer('echo');
  });

  it('reports a failing command\'s exit status and keeps stderr apart', async () => {
    const stdout = new Collector();
    const stderr = new Collector();
    const { io } = await agent.createContainer(request('fail', ['sh', '-c', 'echo out; echo err >&2; exit 3']), { stdout, stderr });
    await agent.startProcess('fail');
    const result = await agent.waitProcess('fail');
    await io.outputDone;
    assert.equal(result.exitStatus, 3);
    assert.equal(stdout.bytes.toString(), 'out\n');
    assert.equal(stderr.bytes.toString(), 'err\n');
    await agent.removeContainer('fail');
  });

  it('fails CreateContainer with NotFound for a missing executable', async () => {
    const started = Date.now();
    await assert.rejects(agent.createContainer(request('nope', ['nope']), { stdout: new Collector() }), (err: unknown) => {
      assert.equal(codeOf(err), Code.NotFound);
      assert.match((err as Error).message, /exec: "nope": executable file not found in \$PATH/);
      return true;
    });
    assert.ok(Date.now() - started < 5000);
    // Nothing is left behind: the id can be used again.
    await agent.createContainer(request('nope', ['true']), {});
    await agent.removeContainer('nope');
  });

  it('delivers 1 MiB of stdout byte-exact', async () => {
    const stdout = new Collector();
    const { io } = await agent.createContainer(request('big', ['head', '-c', '1048576', '/dev/urandom']), { stdout });
    await agent.startProcess('big');
    const result = await agent.waitProcess('big');
    await io.outputDone;
    assert.equal(result.exitStatus, 0);
    assert.equal(stdout.bytes.length, 1 << 20);
    await agent.removeContainer('big');

    // Known content (1.2 MiB) to compare byte for byte.
    const seq = new Collector();
    const run = await agent.createContainer(request('seq', ['seq', '1', '200000']), { stdout: seq });
    await agent.startProcess('seq');
    await agent.waitProcess('seq');
    await run.io.outputDone;
    let expected = '';
    for (let i = 1; i <= 200000; i++) expected += `${i}\n`;
    assert.equal(crypto.createHash('sha256').update(seq.bytes).digest('hex'),
      crypto.createHash('sha256').update(expected).digest('hex'));
    await agent.removeContainer('seq');
  });

  it('pipes stdin through and ends it with EOF', async () => {
    const stdin = new PassThrough();
    const stdout = new Collector();
    const { io } = await agent.createContainer(request('cat', ['cat']), { stdin, stdout });
    await agent.startProcess('cat');
    stdin.end('hello from the host\n');
    const result = await agent.waitProcess('cat');
    await io.outputDone;
    assert.equal(result.exitStatus, 0);
    assert.equal(stdout.bytes.toString(), 'hello from the host\n');
    await agent.removeContainer('cat');
  });

  it('signals, lists processes, and reports 128+signal', async () => {
    await agent.createContainer(request('sleep', ['sh', '-c', 'sleep 100 & wait']), {});
    await agent.startProcess('sleep');
    let processes = await agent.listProcesses('sleep');
    for (let i = 0; i < 50 && processes.length < 2; i++) {
      await new Promise((r) => setTimeout(r, 100));
      processes = await agent.listProcesses('sleep');
    }
    assert.equal(processes.length, 2);
    const wait = agent.waitProcess('sleep');
    await agent.signalProcess('sleep', '', 9);
    assert.equal((await wait).exitStatus, 137);
    await assert.rejects(agent.signalProcess('sleep', '', 9), (err: unknown) => codeOf(err) === Code.NotFound);
    await agent.removeContainer('sleep');
    await assert.rejects(agent.waitProcess('sleep'), (err: unknown) => codeOf(err) === Code.NotFound);
  });

  it('announces protocol 1.1 (exec, terminals)', () => {
    assert.ok(agent.info.protocolMinor >= 1);
  });

  it('runs an exec in the container\'s namespaces with its own args, env, cwd and exit code', async () => {
    await agent.createContainer(request('ex', ['sleep', '1000']), {});
    await agent.startProcess('ex');
    const stdout = new Collector();
    const stderr = new Collector();
    const script = 'hostname; tr "\\0" " " < /proc/1/cmdline; echo; echo "$FOO"; pwd; ls /run/smolvm 2>&1 | head -1; exit 5';
    const { io } = await agent.execProcess('ex', 'e1', guestProcess(['sh', '-c', script], {
      env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin', 'FOO=bar'], cwd: '/tmp',
    }), { stdout, stderr });
    await agent.startProcess('ex', 'e1');
    const result = await agent.waitProcess('ex', 'e1');
    await io.outputDone;
    assert.equal(result.exitStatus, 5);
    const lines = stdout.bytes.toString().split('\n');
    assert.equal(lines[0], 'ex', 'the container\'s uts namespace (hostname)');
    assert.equal(lines[1]!.trim(), 'sleep 1000', 'pid 1 of its pid namespace is the container\'s init');
    assert.equal(lines[2], 'bar');
    assert.equal(lines[3], '/tmp');
    assert.match(lines[4]!, /No such file/, 'the container\'s root, not the agent\'s');
    assert.equal(stderr.bytes.length, 0);
    const processes = await agent.listProcesses('ex');
    assert.deepEqual(processes.map((p) => p.execId), [''], 'the finished exec is no longer listed');
    await agent.removeProcess('ex', 'e1');
    await assert.rejects(agent.waitProcess('ex', 'e1'), (err: unknown) => codeOf(err) === Code.NotFound);
    // The container is untouched.
    assert.equal((await agent.listProcesses('ex')).length, 1);
  });

  it('runs two execs at once with separate output and exit codes', async () => {
    const outs = [new Collector(), new Collector()];
    const errs = [new Collector(), new Collector()];
    const made = await Promise.all([0, 1].map((i) => agent.execProcess('ex', `par${i}`,
      guestProcess(['sh', '-c', `sleep 1; echo out${i}; echo err${i} >&2; exit ${10 + i}`]), { stdout: outs[i], stderr: errs[i] })));
    await Promise.all([0, 1].map((i) => agent.startProcess('ex', `par${i}`)));
    const listed = await agent.listProcesses('ex');
    assert.deepEqual(listed.map((p) => p.execId).filter((e) => e).sort(), ['par0', 'par1']);
    const results = await Promise.all([0, 1].map((i) => agent.waitProcess('ex', `par${i}`)));
    await Promise.all(made.map((m) => m.io.outputDone));
    for (const i of [0, 1]) {
      assert.equal(results[i]!.exitStatus, 10 + i);
      assert.equal(outs[i]!.bytes.toString(), `out${i}\n`);
      assert.equal(errs[i]!.bytes.toString(), `err${i}\n`);
    }
    await Promise.all([0, 1].map((i) => agent.removeProcess('ex', `par${i}`)));
  });

  it('fails an exec of a missing binary with NotFound and leaves nothing behind', async () => {
    await assert.rejects(agent.execProcess('ex', 'missing', guestProcess(['no-such-binary']), { stdout: new Collector() }),
      (err: unknown) => {
        assert.equal(codeOf(err), Code.NotFound);
        assert.match((err as Error).message, /exec missing.*executable file not found/);
        return true;
      });
    assert.equal((await agent.listProcesses('ex')).length, 1);
    // The exec id is free again.
    await agent.execProcess('ex', 'missing', guestProcess(['true']), {});
    await agent.startProcess('ex', 'missing');
    assert.equal((await agent.waitProcess('ex', 'missing')).exitStatus, 0);
    await agent.removeProcess('ex', 'missing');
  });

  it('refuses duplicate exec ids and bad requests clearly', async () => {
    await agent.execProcess('ex', 'dup', guestProcess(['true']), {});
    await assert.rejects(agent.execProcess('ex', 'dup', guestProcess(['true']), {}), (err: unknown) => codeOf(err) === Code.AlreadyExists);
    await agent.removeProcess('ex', 'dup'); // never started: killed and forgotten
    await assert.rejects(agent.execProcess('nosuch', 'x', guestProcess(['true']), {}), (err: unknown) => codeOf(err) === Code.NotFound);
    await assert.rejects(agent.execProcess('ex', 'bad/id', guestProcess(['true']), {}), (err: unknown) => codeOf(err) === Code.InvalidArgument);
    await assert.rejects(agent.resizePty('ex', '', 80, 24), (err: unknown) => codeOf(err) === Code.FailedPrecondition);
  });

  it('gives an exec a terminal: pty on stdout, console size at start, ResizePty', async () => {
    const stdin = new PassThrough();
    const stdout = new Collector();
    const { io } = await agent.execProcess('ex', 'tty', guestProcess(['sh', '-c', 'tty; stty size; read line; stty size; echo "got $line"; exit 3'], {
      terminal: true, consoleSize: { height: 24, width: 80 },
    }), { stdin, stdout, stderr: new Collector() });
    assert.equal(io.streams.stderr, 0, 'a terminal has no stderr stream');
    await agent.startProcess('ex', 'tty');
    await waitForOutput(stdout, /24 80/);
    await agent.resizePty('ex', 'tty', 100, 30);
    stdin.write('hello\n');
    const result = await agent.waitProcess('ex', 'tty');
    await io.outputDone;
    assert.equal(result.exitStatus, 3);
    const text = stdout.bytes.toString();
    assert.match(text, /^\/dev\/pts\/\d+\r\n/, `tty names the container's devpts: ${JSON.stringify(text)}`);
    assert.match(text, /30 100\r\n/);
    assert.match(text, /got hello\r\n/);
    await agent.resizePty('ex', 'tty', 10, 10); // exited: a no-op
    await agent.removeProcess('ex', 'tty');
  });

  it('gives the init process a terminal (stderr on the pty too)', async () => {
    const stdout = new Collector();
    const req = request('ttyinit', ['sh', '-c', 'echo out; echo err >&2; stty size']);
    req.process = { ...req.process!, terminal: true, consoleSize: { height: 40, width: 120 } };
    const { io } = await agent.createContainer(req, { stdout, stderr: new Collector() });
    await agent.startProcess('ttyinit');
    const result = await agent.waitProcess('ttyinit');
    await io.outputDone;
    assert.equal(result.exitStatus, 0);
    assert.equal(stdout.bytes.toString(), 'out\r\nerr\r\n40 120\r\n');
    await agent.removeContainer('ttyinit');
  });

  it('kills every process of the container with all=true, execs included', async () => {
    const exec = await agent.execProcess('ex', 'sleeper', guestProcess(['sh', '-c', 'sleep 1000 & wait']), {});
    await agent.startProcess('ex', 'sleeper');
    let processes = await agent.listProcesses('ex');
    for (let i = 0; i < 50 && processes.length < 3; i++) {
      await new Promise((r) => setTimeout(r, 100));
      processes = await agent.listProcesses('ex');
    }
    assert.equal(processes.length, 3, JSON.stringify(processes));
    assert.ok(processes.some((p) => p.execId === 'sleeper'));
    const waits = [agent.waitProcess('ex'), agent.waitProcess('ex', 'sleeper')];
    await agent.signalProcess('ex', '', 9, true);
    const [init, sleeper] = await Promise.all(waits);
    assert.equal(init!.exitStatus, 137);
    assert.equal(sleeper!.exitStatus, 137);
    await exec.io.outputDone;
    await assert.rejects(agent.execProcess('ex', 'late', guestProcess(['true']), {}),
      (err: unknown) => codeOf(err) === Code.FailedPrecondition && /stopped/.test((err as Error).message));
    await agent.removeContainer('ex');
  });

  it('execs into a created (not yet started) container', async () => {
    await agent.createContainer(request('pre', ['sleep', '1000']), {});
    const stdout = new Collector();
    const { io } = await agent.execProcess('pre', 'early', guestProcess(['hostname']), { stdout });
    await agent.startProcess('pre', 'early');
    assert.equal((await agent.waitProcess('pre', 'early')).exitStatus, 0);
    await io.outputDone;
    assert.equal(stdout.bytes.toString(), 'pre\n');
    await agent.removeContainer('pre');
    await assert.rejects(agent.waitProcess('pre', 'early'), (err: unknown) => codeOf(err) === Code.NotFound);
  });

  it('removes a running exec (killing it) without touching the container', async () => {
    await agent.createContainer(request('rm', ['sleep', '1000']), {});
    await agent.startProcess('rm');
    await agent.execProcess('rm', 'long', guestProcess(['sleep', '1000']), {});
    await agent.startProcess('rm', 'long');
    const wait = agent.waitProcess('rm', 'long');
    await agent.removeProcess('rm', 'long');
    assert.equal((await wait).exitStatus, 137, 'Wait still gets the exit status');
    assert.equal((await agent.listProcesses('rm')).length, 1);
    await agent.removeContainer('rm');
  });

  // --- protocol 1.2: the OCI spec applied as runc would ---

  /** Creates, starts and waits for a container; returns its exit status and output. */
  async function runContainer(req: Omit<CreateContainerRequest, 'stdio'>): Promise<{ status: number; out: string; err: string }> {
    const stdout = new Collector();
    const stderr = new Collector();
    const { io } = await agent.createContainer(req, { stdout, stderr });
    await agent.startProcess(req.containerId);
    const result = await agent.waitProcess(req.containerId);
    await io.outputDone;
    await agent.removeContainer(req.containerId);
    return { status: result.exitStatus, out: stdout.bytes.toString(), err: stderr.bytes.toString() };
  }

  const DEFAULT_CAPS = ['CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_FSETID', 'CAP_FOWNER', 'CAP_MKNOD', 'CAP_NET_RAW',
    'CAP_SETGID', 'CAP_SETUID', 'CAP_SETFCAP', 'CAP_SETPCAP', 'CAP_NET_BIND_SERVICE', 'CAP_SYS_CHROOT', 'CAP_KILL',
    'CAP_AUDIT_WRITE'];
  const capSets = (names: string[]) => ({ bounding: names, effective: names, inheritable: [], permitted: names, ambient: [] });
  const fsMount = (destination: string, type: string, flags = 0n, data = '') =>
    ({ destination, type, source: type, flags, propagation: 0n, data, recursive: false, file: undefined, shareTag: undefined });
  const MS_RDONLY = 1n, MS_NOSUID = 2n, MS_NODEV = 4n, MS_NOEXEC = 8n;
  const SPEC_MOUNTS = [
    fsMount('/proc', 'proc', MS_NOSUID | MS_NODEV | MS_NOEXEC),
    fsMount('/dev', 'tmpfs', MS_NOSUID, 'mode=755,size=65536k'),
    fsMount('/dev/pts', 'devpts', MS_NOSUID | MS_NOEXEC, 'newinstance,ptmxmode=0666,mode=0620,gid=5'),
    fsMount('/dev/shm', 'tmpfs', MS_NOSUID | MS_NODEV | MS_NOEXEC, 'mode=1777,size=65536k'),
    fsMount('/dev/mqueue', 'mqueue', MS_NOSUID | MS_NODEV | MS_NOEXEC),
    fsMount('/sys', 'sysfs', MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC),
    fsMount('/sys/fs/cgroup', 'cgroup2', MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC),
  ];

  it('announces protocol 1.2 (OCI security settings and mounts)', () => {
    assert.ok(agent.info.protocolMinor >= 2);
  });

  it('runs the container process as PID 1 of its own pid namespace', async () => {
    const r = await runContainer(request('pid1', ['sh', '-c', 'echo $$; ls /proc | grep -c "^[0-9]"']));
    assert.equal(r.status, 0, r.err);
    assert.equal(r.out.split('\n')[0], '1');
  });

  it('applies capabilities: a dropped CAP_CHOWN is refused, the bounding set follows the spec', async () => {
    const script = 'touch /tmp/f; busybox chown 1 /tmp/f && echo chown-ok; grep -E "^Cap(Bnd|Eff|Prm)" /proc/self/status';
    const without = DEFAULT_CAPS.filter((c) => c !== 'CAP_CHOWN');
    const denied = await runContainer({ ...request('capdrop', ['sh', '-c', script]),
      process: guestProcess(['sh', '-c', script], { capabilities: capSets(without) }) });
    assert.doesNotMatch(denied.out, /chown-ok/);
    assert.match(denied.err, /Operation not permitted/);
    // 14 default capabilities without CHOWN (bit 0): 0x...a80425fa
    assert.match(denied.out, /CapBnd:\t00000000a80425fa/);
    const allowed = await runContainer({ ...request('capkeep', ['sh', '-c', script]),
      process: guestProcess(['sh', '-c', script], { capabilities: capSets(DEFAULT_CAPS) }) });
    assert.match(allowed.out, /chown-ok/);
    assert.match(allowed.out, /CapEff:\t00000000a80425fb/);
  });

  it('gives a non-root user its ambient capabilities, groups and umask; no_new_privs', async () => {
    const script = 'id; umask; grep -E "^(CapEff|NoNewPrivs)" /proc/self/status';
    const r = await runContainer({ ...request('user', ['sh', '-c', script]),
      process: guestProcess(['sh', '-c', script], {
        user: { uid: 1234, gid: 2345, additionalGids: [5, 77] }, umask: 0o027, noNewPrivileges: true,
        capabilities: { bounding: ['CAP_NET_BIND_SERVICE'], effective: ['CAP_NET_BIND_SERVICE'], inheritable: ['CAP_NET_BIND_SERVICE'],
          permitted: ['CAP_NET_BIND_SERVICE'], ambient: ['CAP_NET_BIND_SERVICE'] },
      }) });
    assert.equal(r.status, 0, r.err);
    assert.match(r.out, /uid=1234 gid=2345 groups=5,77/);
    assert.match(r.out, /^0027$/m);
    assert.match(r.out, /CapEff:\t0000000000000400/);
    assert.match(r.out, /NoNewPrivs:\t1/);
  });

  it('applies rlimits', async () => {
    const r = await runContainer({ ...request('rlim', ['sh', '-c', 'ulimit -n; ulimit -Hn']),
      process: guestProcess(['sh', '-c', 'ulimit -n; ulimit -Hn'], { rlimits: [{ type: 'RLIMIT_NOFILE', soft: 123n, hard: 456n }] }) });
    assert.equal(r.out, '123\n456\n');
  });

  it('compiles linux.seccomp into a filter: denied syscalls fail with the errno, argument rules match', async () => {
    const script = 'busybox mkdir /tmp/d || echo mkdir-denied; touch /tmp/f; busybox chmod 640 /tmp/f && echo 640-ok; busybox chmod 777 /tmp/f || echo 777-denied';
    const r = await runContainer({ ...request('seccomp', ['sh', '-c', script]),
      linux: { maskedPaths: [], readonlyPaths: [], sysctls: [], seccomp: {
        defaultAction: 'SCMP_ACT_ALLOW', defaultErrno: undefined, architectures: ['SCMP_ARCH_X86_64'], flags: [],
        syscalls: [
          { names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO', errno: undefined, args: [] },
          { names: ['chmod'], action: 'SCMP_ACT_ERRNO', errno: 13, args: [{ index: 1, value: 0o777n, valueTwo: 0n, op: 'SCMP_CMP_EQ' }] },
          { names: ['fchmodat'], action: 'SCMP_ACT_ERRNO', errno: 13, args: [{ index: 2, value: 0o777n, valueTwo: 0n, op: 'SCMP_CMP_EQ' }] },
          { names: ['not_a_syscall_anywhere'], action: 'SCMP_ACT_ERRNO', errno: undefined, args: [] },
        ] } } });
    assert.match(r.out, /mkdir-denied/);
    assert.match(r.err, /mkdir: can't create directory '\/tmp\/d': Operation not permitted/);
    assert.match(r.out, /640-ok/);
    assert.match(r.out, /777-denied/);
    assert.match(r.err, /Permission denied/);
  });

  it('applies the filter to execs too, and a default-deny profile', async () => {
    const seccomp = { defaultAction: 'SCMP_ACT_ERRNO', defaultErrno: 38, architectures: [], flags: [], syscalls: [
      // Everything busybox sh, sleep and echo need, but not mkdir.
      { names: ['read', 'write', 'close', 'fstat', 'newfstatat', 'stat', 'lstat', 'mmap', 'munmap', 'mprotect', 'brk', 'rt_sigaction',
        'rt_sigprocmask', 'rt_sigreturn', 'ioctl', 'execve', 'exit', 'exit_group', 'wait4', 'clone', 'fork', 'vfork', 'getpid',
        'getppid', 'getuid', 'geteuid', 'getgid', 'getegid', 'fcntl', 'dup2', 'dup3', 'open', 'openat', 'nanosleep', 'clock_nanosleep',
        'setgroups', 'setgid', 'setuid', 'capget', 'capset', 'prctl', 'umask', 'chdir',
        'arch_prctl', 'set_tid_address', 'set_robust_list', 'rseq', 'prlimit64', 'getrandom', 'access', 'faccessat', 'faccessat2',
        'readlink', 'getcwd', 'chdir', 'lseek', 'pipe', 'pipe2', 'uname_not_listed', 'futex', 'sigaltstack', 'getpgrp', 'setpgid',
        'getpgid', 'gettid', 'tgkill', 'kill', 'poll', 'ppoll', 'pselect6', 'select', 'statx', 'readv', 'writev'],
      action: 'SCMP_ACT_ALLOW', errno: undefined, args: [] },
    ] };
    const stdout = new Collector();
    const stderr = new Collector();
    await agent.createContainer({ ...request('scx', ['sleep', '1000']), linux: { maskedPaths: [], readonlyPaths: [], sysctls: [], seccomp } }, {});
    await agent.startProcess('scx');
    const { io } = await agent.execProcess('scx', 'un', guestProcess(['sh', '-c', 'echo before; busybox mkdir /d || echo mkdir-failed']), { stdout, stderr });
    await agent.startProcess('scx', 'un');
    await agent.waitProcess('scx', 'un');
    await io.outputDone;
    assert.match(stdout.bytes.toString(), /before\n/);
    assert.match(stdout.bytes.toString(), /mkdir-failed/);
    assert.match(stderr.bytes.toString(), /Function not implemented/, 'defaultErrnoRet 38 (ENOSYS)');
    await agent.removeContainer('scx');
  });

  it('makes the spec mounts, masked and read-only paths, sysctls and a read-only root', async () => {
    const hosts = Buffer.from('127.0.0.1 localhost\n10.1.2.3 spec-host\n');
    const script = [
      'echo hosts=$(grep -c spec-host /etc/hosts)', 'echo x >> /etc/hosts || echo hosts-ro',
      'echo cmdline=$(wc -c < /proc/cmdline)', 'echo fw=$(ls -A /sys/firmware | wc -l)', 'echo shmmax=$(cat /proc/sys/kernel/shmmax)',
      'echo 1 > /proc/sys/kernel/shmmni || echo procsys-ro', 'touch /newfile || echo root-ro',
      'touch /tmp/ok && echo tmp-rw', 'grep -E " /(tmp|dev/mqueue|sys/fs/cgroup) " /proc/mounts | cut -d" " -f2,3',
      'ls /dev/null /dev/zero /dev/ptmx', 'hostname',
    ].join('; ');
    const r = await runContainer({ ...request('mounts', ['sh', '-c', script]),
      hostname: 'oci-host',
      readonlyRootfs: true,
      mounts: { mounts: [
        ...SPEC_MOUNTS,
        fsMount('/tmp', 'tmpfs', MS_NOSUID | MS_NODEV, 'size=1m,mode=1777'),
        { destination: '/etc/hosts', type: 'bind', source: '/host/hosts', flags: MS_RDONLY, propagation: 0n, data: '', recursive: true,
          file: { content: hosts, mode: 0o644, uid: 0, gid: 0 }, shareTag: undefined },
      ] },
      linux: {
        // /proc/kcore does not exist in the guest kernel: skipped, like any missing path.
        maskedPaths: ['/proc/kcore', '/proc/cmdline', '/sys/firmware', '/proc/does-not-exist'],
        readonlyPaths: ['/proc/sys'],
        sysctls: [{ name: 'kernel.shmmax', value: '12345678' }],
        seccomp: undefined,
      } });
    const out = r.out.split('\n');
    const detail = `${r.out}\n${r.err}`;
    assert.ok(out.includes('hosts=1'), detail);
    assert.ok(out.includes('hosts-ro'), detail);
    assert.ok(out.includes('cmdline=0'), `masked /proc/cmdline reads empty: ${detail}`);
    assert.ok(out.includes('fw=0'), `masked /sys/firmware is an empty tmpfs: ${detail}`);
    assert.ok(out.includes('shmmax=12345678'), detail);
    assert.ok(out.includes('procsys-ro'));
    assert.ok(out.includes('root-ro'));
    assert.ok(out.includes('tmp-rw'));
    assert.ok(out.includes('/tmp tmpfs'));
    assert.ok(out.includes('/dev/mqueue mqueue'));
    assert.ok(out.includes('/sys/fs/cgroup cgroup2'));
    assert.ok(out.includes('oci-host'));
    assert.match(r.out, /\/dev\/ptmx/);
  });

  it('refuses bad OCI settings clearly, before anything is made', async () => {
    const cases: [Partial<Omit<CreateContainerRequest, 'stdio'>>, RegExp][] = [
      [{ mounts: { mounts: [fsMount('/mnt', 'nfs')] } }, /mount \/mnt: type "nfs" is not supported/],
      [{ mounts: { mounts: [{ ...fsMount('/mnt', 'bind') }] } }, /mount \/mnt: a bind mount needs/],
      [{ mounts: { mounts: [fsMount('relative', 'tmpfs')] } }, /destination "relative" must be an absolute path/],
      [{ linux: { maskedPaths: [], readonlyPaths: [], sysctls: [{ name: 'vm.swappiness', value: '1' }], seccomp: undefined } }, /vm.swappiness" is not in a namespace/],
      [{ linux: { maskedPaths: [], readonlyPaths: [], sysctls: [], seccomp: { defaultAction: 'SCMP_ACT_BOGUS', defaultErrno: undefined, architectures: [], flags: [], syscalls: [] } } }, /unknown action "SCMP_ACT_BOGUS"/],
      [{ process: guestProcess(['true'], { capabilities: { ...capSets([]), bounding: ['CAP_NOPE'] } }) }, /unknown capability "CAP_NOPE"/],
    ];
    for (const [extra, pattern] of cases) {
      await assert.rejects(agent.createContainer({ ...request('bad', ['true']), ...extra }, {}), (err: unknown) => {
        assert.equal(codeOf(err), Code.InvalidArgument, (err as Error).message);
        assert.match((err as Error).message, pattern);
        return true;
      });
    }
    // Nothing is left behind: the id can be used again.
    await agent.createContainer(request('bad', ['true']), {});
    await agent.removeContainer('bad');
  });

  it('shuts the VM down: QEMU exits', async () => {
    await agent.shutdown();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => resolve('timeout'), 20_000);
    });
    const code = await Promise.race([qemuExit, timeout]);
    clearTimeout(timer);
    assert.equal(code, 0);
  });
});
