// A pod's VM on the tcg backend, through the shim's own Container and PodRegistry (no
// containerd): the VM boots with a virtio-scsi controller and no disk; each joining container's
// disks are hot-added over QMP (blockdev-add + device_add scsi-hd): its erofs image from the
// cache read-only as it is (no copy), a fresh sparse ext4 file in the VM dir. A leaving
// container's disks are hot-removed (device_del, DEVICE_DELETED, blockdev-del) and its file
// deleted; the next container gets another image of another size; pod_max_containers refuses
// one too many; the last container to leave ends the VM. Then: a pod VM restored from its own
// template (saved with the controller and no disk) still takes hot-added disks.
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
import { QMP_SOCKET_NAME, TcgBackend } from '../../shim/src/vm/backends/tcg';
import { qmpExecute } from '../../shim/src/vm/backends/qmp';
import { templateInputs, TemplateStore } from '../../shim/src/vm/template';
import { VmBuilder } from '../../shim/src/vm/builder';
import { VmPlacer } from '../../shim/src/vm/placement';
import { podVmShape, type VmShape } from '../../shim/src/vm/shape';
import type { Vm } from '../../shim/src/vm/vm';
import { createWritableDisk, ensureImage } from '../../shim/src/image';
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

/** The block nodes QEMU holds open, by node name → file (the hot-added disks). */
async function blockNodes(vmDir: string): Promise<Map<string, string>> {
  const nodes = await qmpExecute(path.join(vmDir, QMP_SOCKET_NAME), 'query-named-block-nodes');
  const map = new Map<string, string>();
  for (const n of nodes as Array<{ 'node-name': string; file: string }>) map.set(n['node-name'], n.file);
  return map;
}

const podDisks = (vmDir: string): string[] => fs.readdirSync(vmDir).filter((f) => f.endsWith('.ext4') || f.endsWith('.disk'));

describe('pod VM disks by hotplug (tcg)', function () {
  this.timeout(300_000);
  let work = '';
  let paths = smolvmPaths();
  const backend = new TcgBackend();
  let placer: VmPlacer;
  const rootfs: Record<string, string> = {};
  const payloadSha: Record<string, string> = {};
  const running: Container[] = [];

  const templatesWere = process.env.SMOLVM_TEMPLATES;
  before(() => {
    // Cold boots: no template build in the background for this temporary root.
    process.env.SMOLVM_TEMPLATES = 'off';
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-pod-'));
    paths = smolvmPaths({ ...process.env, SMOLVM_ROOT: path.join(work, 'root') });
    placer = new VmPlacer(new VmBuilder({ backend, paths, templates: false }), { podMaxContainers: 2 });
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
      placer, sizing: { memoryMiB: 256, vcpus: 1, writableDiskBytes: 64 * 1024 * 1024 }, log: nullLogger,
      podId: 'pod-1', record: () => undefined,
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

  it('hot-added the image from the cache as it is and a writable file in the VM\'s data dir per container', async () => {
    const vmDir = running[0]!.vm.dir;
    const dataDir = running[0]!.vm.dataDir;
    assert.equal(dataDir, path.join(paths.cacheDir, 'vms', path.basename(vmDir)), 'the data dir is <cacheDir>/vms/<vm>');
    const nodes = await blockNodes(vmDir);
    const files = [...nodes.values()];
    assert.equal(nodes.size, 8, `two nodes per disk, two disks per container: ${JSON.stringify([...nodes])}`);
    const images = fs.readdirSync(path.join(paths.cacheDir, 'images'), { recursive: true }).map(String).filter((f) => f.endsWith('.erofs'));
    assert.ok(images.length >= 2, `images in the cache: ${images.join(' ')}`);
    for (const f of files.filter((f) => f.endsWith('.erofs'))) assert.ok(f.startsWith(path.join(paths.cacheDir, 'images')), `image not used from the cache: ${f}`);
    assert.deepEqual(podDisks(dataDir).sort(), ['pod0-rw.ext4', 'pod1-rw.ext4']);
    assert.deepEqual(podDisks(vmDir), [], 'no disk in the state dir');
  });

  it('refuses a container beyond pod_max_containers, naming the limit', async () => {
    await assert.rejects(run('ctr-d', 'a'), (err: unknown) => {
      assert.ok(err instanceof RpcError && err.code === Code.ResourceExhausted, String(err));
      assert.match((err as Error).message, /pod pod-1 is full: its VM holds 2 containers/);
      return true;
    });
    assert.equal(placer.podMembers('pod-1'), 2);
  });

  it('hot-removes a leaving container\'s disks; another image of another size joins', async () => {
    const [a] = running;
    const pid = a!.pid;
    const vmDir = a!.vm.dir;
    const dataDir = a!.vm.dataDir;
    const vmm = { pid, startTime: processStartTime(pid)! };
    await remove(a!);
    assert.ok(isSameProcessAlive(vmm), 'the VM outlives one container');
    assert.equal((await blockNodes(vmDir)).size, 4, 'the leaving container\'s block nodes are gone');
    assert.deepEqual(podDisks(dataDir), ['pod1-rw.ext4'], 'the leaving container\'s writable disk is gone');
    const c = await run('ctr-c', 'c');
    assert.equal(c.exit, 0, c.out);
    assert.equal(c.container.pid, pid, 'joined the same VM');
    assert.match(c.out, /^image c$/m);
    assert.match(c.out, /fresh writable layer/);
    assert.ok(c.out.includes(payloadSha.c!), `payload read back whole: ${c.out}`);
    assert.equal((await blockNodes(vmDir)).size, 8);
  });

  it('ends the VM with the pod\'s last container and leaves nothing behind', async () => {
    const vmm = { pid: running[0]!.pid, startTime: processStartTime(running[0]!.pid)! };
    const vmDir = running[0]!.vm.dir;
    const dataDir = running[0]!.vm.dataDir;
    for (const c of [...running]) await remove(c);
    assert.equal(placer.podCount, 0);
    assert.ok(!isSameProcessAlive(vmm), 'qemu gone');
    assert.ok(!fs.existsSync(vmDir), 'VM directory removed');
    assert.ok(!fs.existsSync(dataDir), 'VM data directory removed');
  });
});

describe('pod VM from a template (tcg): hotplug after a restore', function () {
  this.timeout(300_000);
  const backend = new TcgBackend();
  let work = '';
  let paths = smolvmPaths();
  let builder: VmBuilder;
  const started: Vm[] = [];

  before(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-podtpl-'));
    paths = smolvmPaths({ ...process.env, SMOLVM_ROOT: path.join(work, 'root') });
    builder = new VmBuilder({ backend, paths, templates: true, bootTimeoutMs: 90_000 });
  });

  after(async () => {
    for (const vm of started) await vm.destroy();
    const store = new TemplateStore(paths.cacheDir);
    const deadline = Date.now() + 60_000;
    // A template build still in flight is waited for: nothing outlives the suite.
    for (const key of keys) while ((await store.buildInProgress(key)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    fs.rmSync(work, { recursive: true, force: true });
  });
  const keys: string[] = [];

  /** A pod VM's shape on tcg: no disk, a hotplug controller. */
  const podShape = (): VmShape => podVmShape(backend, 256, 1, 2);

  it('has its own template key, restores from it and takes hot-added disks', async () => {
    const store = new TemplateStore(paths.cacheDir);
    const guest = await builder.guest();
    const key = (await templateInputs(backend, podShape(), guest, store.memoDir)).key;
    keys.push(key);
    const plain = (await templateInputs(backend, { ...podShape(), diskHotplug: false }, guest, store.memoDir)).key;
    assert.notEqual(key, plain, 'a pod VM (scsi controller) is its own template');
    const first = await builder.start({ shape: podShape(), log: nullLogger });
    started.push(first);
    assert.equal(first.restoredFrom, null);
    const deadline = Date.now() + 180_000;
    while (store.lookup(key).kind !== 'found') {
      assert.ok(Date.now() < deadline, 'pod template not built in time');
      await new Promise((r) => setTimeout(r, 250));
    }
    while (await store.buildInProgress(key)) await new Promise((r) => setTimeout(r, 50));

    const vm = await builder.start({ shape: podShape(), log: nullLogger });
    started.push(vm);
    assert.equal(vm.restoredFrom, key);
    const rootfs = makeBusyboxRootfs(work);
    fs.writeFileSync(path.join(rootfs, 'marker'), 'restored pod\n');
    const image = await ensureImage({ kind: 'dir', path: rootfs }, { cacheDir: paths.cacheDir });
    const writable = path.join(vm.dataDir, 'w0-rw.ext4');
    await createWritableDisk(writable, 64 * 1024 * 1024, { cacheDir: paths.cacheDir });
    await vm.vmm.attachDisk!({ serial: 'w0-img', path: image.path, readOnly: true });
    await vm.vmm.attachDisk!({ serial: 'w0-rw', path: writable, readOnly: false });
    // Bad input: a clear error naming the serial, nothing attached.
    await assert.rejects(vm.vmm.attachDisk!({ serial: 'w0-img', path: image.path, readOnly: true }), /"w0-img": the VM already has a disk/);
    await assert.rejects(vm.vmm.attachDisk!({ serial: 'w1-img', path: path.join(work, 'nope'), readOnly: true }), /"w1-img".*no such file/);
    assert.equal((await blockNodes(vm.dir)).size, 4);

    const stdout = new PassThrough();
    let out = '';
    stdout.on('data', (d: Buffer) => { out += d.toString(); });
    const created = await vm.agent.createContainer({
      containerId: 'c1',
      image: { serial: 'w0-img', fsType: 'erofs', readOnly: true, sizeBytes: undefined },
      writable: { serial: 'w0-rw', fsType: 'ext4', readOnly: false, sizeBytes: undefined },
      process: {
        args: ['sh', '-c', 'cat /marker; echo x > /w && cat /w'], env: ['PATH=/bin'], cwd: '/',
        user: { uid: 0, gid: 0, additionalGids: [] }, terminal: false, rlimits: [], noNewPrivileges: false, consoleSize: undefined,
      },
      hostname: 'pod', readonlyRootfs: false,
    }, { stdout, stderr: new PassThrough() });
    await vm.agent.startProcess('c1');
    const exit = await vm.agent.waitProcess('c1');
    await created.io.outputDone;
    assert.equal(exit.exitStatus, 0, out);
    assert.equal(out, 'restored pod\nx\n');
    await vm.agent.removeContainer('c1');
    await vm.vmm.detachDisk!('w0-img');
    await vm.vmm.detachDisk!('w0-rw');
    await vm.vmm.detachDisk!('w0-rw');
    assert.equal((await blockNodes(vm.dir)).size, 0, 'QEMU holds no disk after the detach');
    // A disk never attached is unknown to the agent: a clear error naming its serial.
    await assert.rejects(vm.agent.createContainer({
      containerId: 'c2',
      image: { serial: 'w9-img', fsType: 'erofs', readOnly: true, sizeBytes: undefined },
      writable: undefined,
      process: {
        args: ['true'], env: [], cwd: '/', user: { uid: 0, gid: 0, additionalGids: [] }, terminal: false, rlimits: [],
        noNewPrivileges: false, consoleSize: undefined,
      },
      hostname: 'pod', readonlyRootfs: false,
    }, { stdout: new PassThrough(), stderr: new PassThrough() }), /no disk with serial "w9-img"/);
  });
});
