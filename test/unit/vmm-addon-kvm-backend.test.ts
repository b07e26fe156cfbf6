/**
 * The kvm backend's pieces that need no guest kernel: the hybrid vsock handshake that opens
 * the agent channel (against a fake VMM socket), backend selection and the host probe.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { connectHybridVsock, KvmBackend } from '../../shim/src/vm/backends/kvm';
import { TcgBackend } from '../../shim/src/vm/backends/tcg';
import { probeHost } from '../../shim/src/vm/host';
import { createBackend } from '../../shim/src/vm/backends';
import { vmmBuildStatus } from '../../shim/src/vm/vmm/locate';
import { skipBecause } from '../helpers/skip';

/** A fake VMM host socket: `answer` decides what a client's CONNECT line gets. */
function fakeVsock(socketPath: string, answer: (line: string, conn: net.Socket) => void): Promise<net.Server> {
  const server = net.createServer((conn) => {
    let text = '';
    conn.on('data', (chunk) => {
      text += chunk.toString('latin1');
      const newline = text.indexOf('\n');
      if (newline >= 0) answer(text.slice(0, newline), conn);
    });
    conn.on('error', () => undefined);
  });
  return new Promise((resolve) => server.listen(socketPath, () => resolve(server)));
}

function readAll(stream: net.Socket, bytes: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    stream.on('data', (chunk: Buffer) => {
      text += chunk.toString('latin1');
      if (text.length >= bytes) resolve(text);
    });
    stream.on('error', reject);
  });
}

describe('kvm backend: hybrid vsock handshake', () => {
  let dir = '';
  const servers: net.Server[] = [];
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-vsock-')); });
  afterEach(() => {
    for (const server of servers.splice(0)) server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('sends CONNECT <port> and returns the stream right after OK <port>, losing no byte', async () => {
    const socketPath = path.join(dir, 'vsock.sock');
    let asked = '';
    servers.push(await fakeVsock(socketPath, (line, conn) => {
      asked = line;
      // The OK line and the agent's first bytes in one write: they must not be swallowed.
      conn.write('OK 1073741824\nagent-bytes');
      setTimeout(() => conn.write('-more'), 20);
    }));
    const stream = await connectHybridVsock(socketPath, 1024, 2000);
    assert.equal(asked, 'CONNECT 1024');
    assert.equal(await readAll(stream, 'agent-bytes-more'.length), 'agent-bytes-more');
    stream.destroy();
  });

  it('rejects when the VMM closes the connection (nothing listening in the guest yet)', async () => {
    const socketPath = path.join(dir, 'vsock.sock');
    servers.push(await fakeVsock(socketPath, (_line, conn) => conn.end()));
    await assert.rejects(connectHybridVsock(socketPath, 1024, 2000), /closed the connection to vsock port 1024/);
  });

  it('rejects an answer that is not OK <port>, and an over-long one', async () => {
    const socketPath = path.join(dir, 'vsock.sock');
    servers.push(await fakeVsock(socketPath, (_line, conn) => conn.write('NOPE\n')));
    await assert.rejects(connectHybridVsock(socketPath, 1024, 2000), /expected "OK <port>", got "NOPE"/);
    const longPath = path.join(dir, 'long.sock');
    servers.push(await fakeVsock(longPath, (_line, conn) => conn.write('x'.repeat(200))));
    await assert.rejects(connectHybridVsock(longPath, 1024, 2000), /answer too long/);
  });

  it('rejects a missing socket and a silent VMM within the bound', async () => {
    await assert.rejects(connectHybridVsock(path.join(dir, 'absent.sock'), 1024, 2000), /ENOENT/);
    const socketPath = path.join(dir, 'silent.sock');
    servers.push(await fakeVsock(socketPath, () => undefined));
    const started = Date.now();
    await assert.rejects(connectHybridVsock(socketPath, 1024, 200), /no answer to CONNECT 1024 within 200 ms/);
    assert.ok(Date.now() - started < 1000);
  });
});

describe('backend selection and host kind', () => {
  const saved = process.env.SMOLVM_VMM_BINARY;
  afterEach(() => {
    if (saved === undefined) delete process.env.SMOLVM_VMM_BINARY;
    else process.env.SMOLVM_VMM_BINARY = saved;
  });

  it('kvm is the native VMM when it is built, a clear error naming the build command when not', function () {
    if (vmmBuildStatus().problem) skipBecause(this, { lacks: 'setup', detail: `smolvm-vmm: ${vmmBuildStatus().problem}` });
    assert.ok(createBackend('kvm') instanceof KvmBackend);
    process.env.SMOLVM_VMM_BINARY = '/nonexistent/smolvm-vmm';
    assert.throws(() => createBackend('kvm'), /backend "kvm" is not available: smolvm-vmm is not built \(\/nonexistent\/smolvm-vmm\): run `npm run build:vmm`/);
  });

  it('auto picks kvm only on hardware virtualization not provided by kvm_pvm', () => {
    const probe = probeHost(true);
    const pvm = fs.existsSync('/sys/module/kvm_pvm') && fs.existsSync('/dev/kvm');
    if (pvm) {
      assert.equal(probe.kind, 'pvm');
      assert.match(probe.reason, /kvm_pvm/);
    }
    assert.equal(probe.auto, probe.kind === 'hardware' ? 'kvm' : 'tcg');
    const expected = probe.kind === 'hardware' && !vmmBuildStatus().problem ? KvmBackend : TcgBackend;
    assert.ok(createBackend('auto') instanceof expected);
    assert.equal(probeHost(false).auto, 'tcg', 'never kvm when the VMM is not built');
    if (probe.cpuVendor === 'GenuineIntel') assert.match(probe.notes.join('\n'), /Intel VMX is not exercised/);
  });
});
