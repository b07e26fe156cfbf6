// A pod's VM on the tcg backend, through the shim's own Container and PodRegistry (no
// containerd): containers join one VM, each in a slot pair whose placeholder files were
// rewritten in place and resized over QMP (block_resize; a read-only slot reopened writable for
// the resize only); a freed pair is refilled for the next container with other contents and
// another size; a full pod is refused; the last container to leave ends the VM.
import * as assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { smolvmPaths } from '../../shim/src/config/paths';
import { Code, RpcError } from '../../shim/src/errdefs';
import { nullLogger } from '../../shim/src/log';
import type { OciSpec } from '../../shim/src/oci/spec';
import { TcgBackend } from '../../shim/src/sandbox/backends/tcg';
import { PodRegistry } from '../../shim/src/sandbox/pod-registry';
import { Container } from '../../shim/src/task/container';
import { isSameProcessAlive, processStartTime } from '../../shim/src/util/proc';
import { makeBusyboxRootfs } from '../helpers/rootfs';

const SCRIPT = [
  'cat /marker',
  'echo "boot $(cat /proc/sys/kernel/random/boot_id)"',
  'test -e /left-by-previous && echo "stale writable layer" || echo "fresh writable layer"',
  'echo mine > /left-by-previous',
  'sha256sum /payload 2>/dev/null || echo "no payload"',
].join('; ');

function spec(): OciSpec {
  return {
    ociVersion: '1.0.2',
    process: { args: ['sh', '-c', SCRIPT], env: ['PATH=/bin'], cwd: '/', user: { uid: 0, gid: 0 } },
    root: { path: 'rootfs' },
    hostname: 'pod',
    mounts: [{ destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] }],
  } as OciSpec;
}

describe('pod VM disk slots (tcg)', function () {
  this.timeout(300_000);
  let work = '';
  let paths = smolvmPaths();
  const backend = new TcgBackend();
  const registry = new PodRegistry();
  const rootfs: Record<string, string> = {};
  const payloadSha: Record<string, string> = {};
  const running: Container[] = [];

  const templatesWere = process.env.SMOLVM_TEMPLATES;
  before(() => {
    // Cold boots: no template build in the background for this temporary root.
    process.env.SMOLVM_TEMPLATES = 'off';
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-pod-'));
    paths = smolvmPaths({ ...process.env, SMOLVM_ROOT: path.join(work, 'root') });
    for (const [name, payloadBytes] of [['a', 0], ['b', 0], ['c', 3 * 1024 * 1024 + 512]] as const) {
      const dir = makeBusyboxRootfs(work);
      fs.writeFileSync(path.join(dir, 'marker'), `image ${name}\n`);
      if (payloadBytes > 0) {
        const payload = randomBytes(payloadBytes);
        fs.writeFileSync(path.join(dir, 'payload'), payload);
        payloadSha[name] = createHash('sha256').update(payload).digest('hex');
      }
      rootfs[name] = dir;
    }
  });

  after(async () => {
    for (const c of running) await c.destroy().catch(() => undefined);
    fs.rmSync(work, { recursive: true, force: true });
    if (templatesWere === undefined) delete process.env.SMOLVM_TEMPLATES;
    else process.env.SMOLVM_TEMPLATES = templatesWere;
  });

  async function run(id: string, image: string): Promise<{ container: Container; out: string; exit: number }> {
    const stdout = new PassThrough();
    let out = '';
    stdout.on('data', (chunk: Buffer) => { out += chunk.toString(); });
    const container = await Container.create({
      id, spec: spec(), rootfs: { kind: 'dir', path: rootfs[image]! },
      stdio: { stdout, stderr: new PassThrough() },
      backend, paths, memoryMiB: 256, vcpus: 1, writableDiskBytes: 64 * 1024 * 1024, log: nullLogger,
      pod: { registry, sandboxId: 'pod-1', maxContainers: 2 },
    });
    running.push(container);
    await container.start();
    const exit = await container.init.exited;
    return { container, out, exit: exit.exitStatus };
  }

  async function remove(container: Container): Promise<void> {
    await container.destroy();
    running.splice(running.indexOf(container), 1);
  }

  it('runs two containers in one VM, each on its own image and writable layer', async () => {
    const a = await run('ctr-a', 'a');
    const b = await run('ctr-b', 'b');
    assert.equal(a.exit, 0, a.out);
    assert.equal(b.exit, 0, b.out);
    assert.match(a.out, /^image a$/m);
    assert.match(b.out, /^image b$/m);
    assert.match(a.out, /fresh writable layer/);
    assert.match(b.out, /fresh writable layer/);
    assert.equal(a.container.pid, b.container.pid, 'one VMM for the pod');
    const bootA = /^boot (\S+)$/m.exec(a.out)?.[1];
    assert.ok(bootA, a.out);
    assert.equal(/^boot (\S+)$/m.exec(b.out)?.[1], bootA, 'same guest kernel');
    assert.ok(a.container.sharesVm && b.container.sharesVm);
  });

  it('refuses a container beyond the pod\'s slot pairs, naming the limit', async () => {
    await assert.rejects(run('ctr-d', 'a'), (err: unknown) => {
      assert.ok(err instanceof RpcError && err.code === Code.ResourceExhausted, String(err));
      assert.match((err as Error).message, /pod pod-1 is full: its VM holds 2 containers/);
      return true;
    });
    assert.equal(registry.membersOf('pod-1'), 2);
  });

  it('refills a freed pair with another image of another size and a fresh writable disk', async () => {
    const [a] = running;
    const pid = a!.pid;
    const vmm = { pid, startTime: processStartTime(pid)! };
    await remove(a!);
    assert.ok(isSameProcessAlive(vmm), 'the VM outlives one container');
    const c = await run('ctr-c', 'c');
    assert.equal(c.exit, 0, c.out);
    assert.equal(c.container.pid, pid, 'joined the same VM');
    assert.match(c.out, /^image c$/m);
    assert.match(c.out, /fresh writable layer/);
    assert.ok(c.out.includes(payloadSha.c!), `payload read back whole: ${c.out}`);
  });

  it('ends the VM with the pod\'s last container and leaves nothing behind', async () => {
    const vmm = { pid: running[0]!.pid, startTime: processStartTime(running[0]!.pid)! };
    const vmDir = running[0]!.sandbox.dir;
    for (const c of [...running]) await remove(c);
    assert.equal(registry.size, 0);
    assert.ok(!isSameProcessAlive(vmm), 'qemu gone');
    assert.ok(!fs.existsSync(vmDir), 'VM directory removed');
  });
});
