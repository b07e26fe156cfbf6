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
    if (!kernel) this.skip(); // no guest kernel built on this machine
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-agent-it-'));
    const initramfs = await ensureInitramfs({ cacheDir: work });
    const rootfs = makeBusyboxRootfs(work);
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
