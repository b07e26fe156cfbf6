import * as assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fakeMonitor, type QmpScript } from '../helpers/fake-qmp';
import { QmpChannel, QmpError, qmpExecute } from '../../shim/src/vm/backends/qmp';
import { qemuArgs } from '../../shim/src/vm/backends/tcg';
import { skipBecause } from '../helpers/skip';

type Script = QmpScript;

describe('QMP client', () => {
  let dir: string;
  let server: net.Server | null = null;
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-qmp-')); });
  afterEach(async () => {
    if (server) await new Promise((r) => server!.close(r));
    server = null;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('skips asynchronous events and returns the reply', async () => {
    const sock = path.join(dir, 'm.sock');
    server = await fakeMonitor(sock, (line, s) => {
      assert.equal(line.execute, 'stop');
      s.write('{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}\r\n{"return": {}}\r\n');
    });
    assert.deepEqual(await qmpExecute(sock, 'stop'), {});
  });

  it('turns a QMP error into a QmpError naming the command and class', async () => {
    const sock = path.join(dir, 'm.sock');
    server = await fakeMonitor(sock, (_line, s) => s.write('{"error": {"class": "GenericError", "desc": "nope"}}\r\n'));
    await assert.rejects(qmpExecute(sock, 'cont'), (err: Error) => err instanceof QmpError && /QMP cont: GenericError: nope/.test(err.message));
  });

  it('rejects a peer that does not greet with QMP, garbage, a closed connection, silence', async () => {
    const cases: Array<{ greeting: string; script: Script; expect: RegExp }> = [
      { greeting: '{"hello": 1}\r\n', script: () => undefined, expect: /did not greet with QMP/ },
      { greeting: 'not json\r\n', script: () => undefined, expect: /unparsable message/ },
      { greeting: '{"QMP": {}}\r\n', script: (_l, s) => s.destroy(), expect: /connection closed by QEMU/ },
      { greeting: '{"QMP": {}}\r\n', script: () => undefined, expect: /no answer .* within 300 ms/ },
      { greeting: '[1,2]\r\n', script: () => undefined, expect: /expected a JSON object/ },
    ];
    for (const [i, c] of cases.entries()) {
      const sock = path.join(dir, `m${i}.sock`);
      const s = await fakeMonitor(sock, c.script, c.greeting);
      try {
        await assert.rejects(qmpExecute(sock, 'stop', undefined, 300), c.expect);
      } finally {
        await new Promise((r) => s.close(r));
      }
    }
  });

  it('rejects an oversized message and a missing socket', async () => {
    const sock = path.join(dir, 'm.sock');
    server = await fakeMonitor(sock, (_l, s) => s.write(`{"return": "${'x'.repeat(1024 * 1024 + 10)}"}\r\n`));
    await assert.rejects(qmpExecute(sock, 'query-status'), /longer than/);
    await assert.rejects(qmpExecute(path.join(dir, 'absent.sock'), 'stop'), /absent\.sock: connect ENOENT/);
  });

  it('qemuArgs puts the monitor in the VM directory', () => {
    const args = qemuArgs({
      vmId: 'v', dir: '/run/x/vms/v', dataDir: '/var/x/vms/v', guest: { kernel: 'k', initramfs: 'i', cmdline: '' }, slots: [],
      shape: { memoryMiB: 64, vcpus: 1, disks: [], diskHotplug: false, nics: [], shares: [], jail: {} },
    }, '/run/x/vms/v/agent.sock');
    const i = args.indexOf('-qmp');
    assert.equal(args[i + 1], 'unix:/run/x/vms/v/qmp.sock,server=on,wait=off');
  });

  describe('against a real QEMU', function () {
    this.timeout(30_000);
    let qemu: ChildProcess | null = null;
    after(() => { qemu?.kill('SIGKILL'); });

    it('stop pauses and cont resumes (query-status), one command at a time', async function () {
      const sock = path.join(dir, 'qmp.sock');
      qemu = spawn('qemu-system-x86_64', ['-M', 'none', '-nodefaults', '-display', 'none', '-qmp', `unix:${sock},server=on,wait=off`], { stdio: 'ignore' });
      const spawned = await new Promise<boolean>((resolve) => { qemu!.once('spawn', () => resolve(true)); qemu!.once('error', () => resolve(false)); });
      if (!spawned) skipBecause(this, { lacks: 'setup', detail: 'qemu-system-x86_64 did not start (Debian package qemu-system-x86)' });
      const deadline = Date.now() + 10_000;
      while (!fs.existsSync(sock) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      const channel = new QmpChannel(sock);
      // Issued together: the channel serializes them (QEMU serves one monitor client at a time).
      const [before, , during, , after] = await Promise.all([
        channel.queryStatus(), channel.stop(), channel.queryStatus(), channel.cont(), channel.queryStatus(),
      ]);
      assert.deepEqual(before, { running: true, status: 'running' });
      assert.deepEqual(during, { running: false, status: 'paused' });
      assert.deepEqual(after, { running: true, status: 'running' });
      await assert.rejects(channel.execute('no-such-command'), /QMP no-such-command: CommandNotFound/);
    });
  });
});
