// Templates end to end (real VMM, real guest kernel, smolvm-init), on the tcg backend; with
// SMOLVM_TEMPLATE_BACKEND=kvm on the kvm backend (inside the KVM lab: test/lab/template-lab). The
// first VM cold-boots and schedules a background build; later VMs restore from it; restored
// VMs are clone-safe (different /dev/urandom); a changed input gives another key and a cold
// boot; a corrupt template falls back to a cold boot with a warning and is rebuilt; a warm pod
// VM (a pool spare's) takes a container. Needs a
// built kernel, the agent, qemu-system-x86, erofs-utils, e2fsprogs and busybox-static.
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { createWritableDisk, ensureImage, type GuestImage } from '../../shim/src/image';
import type { Paths } from '../../shim/src/config/paths';
import type { Logger } from '../../shim/src/log';
import { KvmBackend } from '../../shim/src/vm/backends/kvm';
import { TcgBackend } from '../../shim/src/vm/backends/tcg';
import { VmBuilder } from '../../shim/src/vm/builder';
import { VmPlacer } from '../../shim/src/vm/placement';
import { containerVmShape, podVmShape, type VmShape } from '../../shim/src/vm/shape';
import { STATE_FILE, TemplateStore, templateInputs } from '../../shim/src/vm/template';
import type { Vm } from '../../shim/src/vm/vm';
import type { OciSpec } from '../../shim/src/oci/spec';
import { PodVm } from '../../shim/src/vm/pod-vm';
import { Container } from '../../shim/src/task/container';
import { isSameProcessAlive } from '../../shim/src/util/proc';
import { makeBusyboxRootfs } from '../helpers/rootfs';

interface LogLine {
  level: string;
  msg: string;
  fields: Record<string, unknown>;
}

function recordingLogger(lines: LogLine[], base: Record<string, unknown> = {}): Logger {
  const at = (level: string) => (msg: string, fields?: Record<string, unknown>): void => {
    lines.push({ level, msg, fields: { ...base, ...fields } });
  };
  return {
    debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'),
    child: (fields) => recordingLogger(lines, { ...base, ...fields }),
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Processes whose command line names `needle` (our QEMUs and builders). */
function processesNaming(needle: string): string[] {
  const found: string[] = [];
  for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
      if (cmdline.includes(needle) && Number(pid) !== process.pid) found.push(`${pid}: ${cmdline.slice(0, 200)}`);
    } catch {
      // gone
    }
  }
  return found;
}

const BACKEND = process.env.SMOLVM_TEMPLATE_BACKEND === 'kvm' ? 'kvm' : 'tcg';

describe(`templates (${BACKEND}): restore instead of boot`, function () {
  this.timeout(240_000);
  const backend = BACKEND === 'kvm' ? new KvmBackend() : new TcgBackend();
  let work: string;
  let paths: Paths;
  let builder: VmBuilder;
  let image: GuestImage;
  let store: TemplateStore;
  let rootfsDir = '';
  const running: Vm[] = [];

  before(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-template-'));
    paths = { stateDir: path.join(work, 'run'), cacheDir: path.join(work, 'lib') };
    store = new TemplateStore(paths.cacheDir);
    builder = new VmBuilder({ backend, paths, templates: true });
    rootfsDir = makeBusyboxRootfs(work);
    image = await ensureImage({ kind: 'dir', path: rootfsDir }, { cacheDir: paths.cacheDir });
  });

  afterEach(async () => {
    for (const vm of running.splice(0)) await vm.destroy();
  });

  after(async () => {
    // Nothing may outlive the suite: no QEMU, no builder (a build in flight is waited for).
    const deadline = Date.now() + 60_000;
    while (processesNaming(work).length > 0 && Date.now() < deadline) await sleep(200);
    const left = processesNaming(work);
    fs.rmSync(work, { recursive: true, force: true });
    assert.deepEqual(left, [], 'processes left behind');
  });

  /** A VM of one container: the image and a fresh 64 MiB writable disk behind its slots. */
  function containerShape(memoryMiB = 256): VmShape {
    return containerVmShape(backend, memoryMiB, 1);
  }

  async function start(shape: VmShape, lines: LogLine[] = []): Promise<Vm> {
    const vm = await builder.start({
      shape, log: recordingLogger(lines),
      slotFiles: async (dirs) => {
        const writable = path.join(dirs.dataDir, 'writable.ext4');
        await createWritableDisk(writable, 64 * 1024 * 1024, { cacheDir: paths.cacheDir });
        return [image.path, writable];
      },
    });
    running.push(vm);
    return vm;
  }

  /** Runs `sh -c script` as a container in the VM; its stdout. */
  async function run(vm: Vm, script: string): Promise<string> {
    const out = new PassThrough();
    const err = new PassThrough();
    let stdout = '';
    let stderr = '';
    out.on('data', (d: Buffer) => { stdout += d.toString(); });
    err.on('data', (d: Buffer) => { stderr += d.toString(); });
    const id = `c-${randomBytes(3).toString('hex')}`;
    const created = await vm.agent.createContainer({
      containerId: id,
      image: { serial: 'slot0', fsType: 'erofs', readOnly: true, sizeBytes: undefined },
      writable: { serial: 'slot1', fsType: 'ext4', readOnly: false, sizeBytes: undefined },
      process: {
        args: ['sh', '-c', script], env: ['PATH=/bin:/usr/bin'], cwd: '/',
        user: { uid: 0, gid: 0, additionalGids: [] }, terminal: false, rlimits: [], noNewPrivileges: false, consoleSize: undefined,
      },
      hostname: 'tpl-test', readonlyRootfs: false,
    }, { stdout: out, stderr: err });
    await vm.agent.startProcess(id);
    const exit = await vm.agent.waitProcess(id);
    await created.io.outputDone;
    assert.equal(exit.exitStatus, 0, `container ${id} failed: ${stderr}`);
    return stdout;
  }

  async function waitForTemplate(key: string, timeoutMs = 120_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (store.lookup(key).kind !== 'found') {
      if (Date.now() > deadline) {
        const log = fs.readFileSync(path.join(store.root, `${key}.build.log`), 'utf8');
        throw new Error(`template ${key} not built within ${timeoutMs} ms; build log:\n${log}`);
      }
      await sleep(200);
    }
    // The builder process exits right after publishing.
    while (await store.buildInProgress(key)) await sleep(50);
  }

  async function keyOf(shape: VmShape): Promise<string> {
    return (await templateInputs(backend, shape, await builder.guest(), store.memoDir)).key;
  }

  let key: string;

  it('cold-boots the first VM and builds the template in the background', async () => {
    key = await keyOf(containerShape());
    const lines: LogLine[] = [];
    const vm = await start(containerShape(), lines);
    assert.equal(vm.restoredFrom, null);
    assert.ok(lines.some((l) => l.msg === `vm cold boot: no template ${key} (building)`), JSON.stringify(lines));
    assert.match(await run(vm, 'echo cold'), /^cold\n$/);
    await waitForTemplate(key);
    const manifest = store.lookup(key);
    assert.equal(manifest.kind, 'found');
  });

  it('restores later VMs, each with its own RNG state, disks and capacity', async () => {
    const lines: LogLine[] = [];
    const [a, b] = [await start(containerShape(), lines), await start(containerShape(), lines)];
    const warnings = (): string => JSON.stringify(lines.filter((l) => l.level === 'warn'));
    assert.equal(a.restoredFrom, key, warnings());
    assert.equal(b.restoredFrom, key, warnings());
    assert.equal(lines.filter((l) => l.msg === `vm restored from template ${key}`).length, 2, JSON.stringify(lines));
    const script = 'head -c 32 /dev/urandom | od -x; cat /proc/sys/kernel/random/boot_id; cat /sys/block/vdb/size; echo data > /f; cat /f';
    const [outA, outB] = await Promise.all([run(a, script), run(b, script)]);
    const parse = (out: string): { random: string; bootId: string; sectors: string } => {
      const m = /^(0000000( [0-9a-f]{4}){8}\n0000020( [0-9a-f]{4}){8})\n0000040\n([0-9a-f-]{36})\n(\d+)\ndata\n$/.exec(out);
      assert.ok(m, `unexpected output ${JSON.stringify(out)}`);
      return { random: m[1]!, bootId: m[4]!, sectors: m[5]! };
    };
    const [pa, pb] = [parse(outA), parse(outB)];
    assert.notEqual(pa.random, pb.random, 'two clones of one template read the same /dev/urandom bytes');
    assert.notEqual(pa.bootId, pb.bootId, 'two clones of one template share a boot id');
    // The writable disk's real capacity (64 MiB = 131072 sectors), not the placeholder's.
    assert.equal(pa.sectors, '131072');
    assert.equal(pb.sectors, '131072');
  });

  it('a changed input (memory) is another key: cold boot, and that template is built too', async () => {
    const otherKey = await keyOf(containerShape(192));
    assert.notEqual(otherKey, key);
    const lines: LogLine[] = [];
    const vm = await start(containerShape(192), lines);
    assert.equal(vm.restoredFrom, null);
    assert.ok(lines.some((l) => l.msg === `vm cold boot: no template ${otherKey} (building)`), JSON.stringify(lines));
    await waitForTemplate(otherKey);
    // Another family (memory differs): the first template stays.
    assert.equal(store.lookup(key).kind, 'found');
    const againLines: LogLine[] = [];
    const again = await start(containerShape(192), againLines);
    assert.equal(again.restoredFrom, otherKey, JSON.stringify(againLines.filter((l) => l.level === 'warn')));
  });

  it('a corrupt template falls back to a cold boot with a warning and is rebuilt', async () => {
    const statePath = path.join(store.dirOf(key), STATE_FILE);
    const fd = fs.openSync(statePath, 'r+');
    fs.writeSync(fd, Buffer.from('this is not a saved VM state, just garbage'), 0);
    fs.closeSync(fd);
    const lines: LogLine[] = [];
    const vm = await start(containerShape(), lines);
    assert.equal(vm.restoredFrom, null);
    const warning = lines.find((l) => l.level === 'warn' && l.msg.startsWith(`vm cold boot: template ${key} did not restore`));
    assert.ok(warning, JSON.stringify(lines));
    assert.match(await run(vm, 'echo fallback'), /^fallback\n$/);
    await waitForTemplate(key);
    const rebuiltLines: LogLine[] = [];
    const rebuilt = await start(containerShape(), rebuiltLines);
    assert.equal(rebuilt.restoredFrom, key, JSON.stringify(rebuiltLines.filter((l) => l.level === 'warn')));
  });

  it('a truncated template is found unusable before any VM starts, removed and rebuilt', async () => {
    fs.truncateSync(path.join(store.dirOf(key), STATE_FILE), 1000);
    const lines: LogLine[] = [];
    const vm = await start(containerShape(), lines);
    assert.equal(vm.restoredFrom, null);
    assert.ok(lines.some((l) => l.level === 'warn' && l.msg === 'template unusable: removing it'), JSON.stringify(lines));
    await waitForTemplate(key);
    const rebuiltLines: LogLine[] = [];
    const rebuilt = await start(containerShape(), rebuiltLines);
    assert.equal(rebuilt.restoredFrom, key, JSON.stringify(rebuiltLines.filter((l) => l.level === 'warn')));
  });

  it('SMOLVM_TEMPLATES=off cold-boots even with a valid template', async () => {
    process.env.SMOLVM_TEMPLATES = 'off';
    try {
      const lines: LogLine[] = [];
      const vm = await start(containerShape(), lines);
      assert.equal(vm.restoredFrom, null);
      assert.ok(lines.some((l) => l.msg === 'vm cold boot: templates off'), JSON.stringify(lines));
    } finally {
      delete process.env.SMOLVM_TEMPLATES;
    }
  });

  // A warm-pool spare (pool/spare.ts) holds a pod-shaped VM restored from its own template,
  // with no container; the first Create that fits takes it: disks hot-added (tcg) or written
  // into a slot pair (kvm), and the VM ends with that container.
  it('a warm pod VM restored from its template takes a container: its disks, output and exit code', async () => {
    const lines: LogLine[] = [];
    const log = recordingLogger(lines);
    const boot = (): Promise<PodVm> => PodVm.start(builder, {
      podId: 'spare-test', shape: podVmShape(backend, 256, 1, 2), maxContainers: 2, log,
    });
    const cold = await boot();
    const podKey = /^vm cold boot: no template (\S+) \(building\)$/.exec(lines.find((l) => l.msg.startsWith('vm cold boot'))?.msg ?? '')?.[1];
    await cold.destroy();
    assert.ok(podKey, JSON.stringify(lines));
    await waitForTemplate(podKey);
    const pod = await boot();
    assert.equal(pod.vm.restoredFrom, podKey, JSON.stringify(lines.filter((l) => l.level === 'warn')));
    await pod.prepareWritable(64 * 1024 * 1024, paths.cacheDir);

    const stdout = new PassThrough();
    let out = '';
    stdout.on('data', (d: Buffer) => { out += d.toString(); });
    let offered = 0;
    const container = await Container.create({
      id: 'warm-c', rootfs: { kind: 'dir', path: rootfsDir }, stdio: { stdout, stderr: new PassThrough() },
      spec: {
        ociVersion: '1.0.2', root: { path: 'rootfs' }, hostname: 'warm',
        process: { args: ['sh', '-c', 'echo data > /f; cat /f; hostname; exit 5'], env: ['PATH=/bin'], cwd: '/', user: { uid: 0, gid: 0 } },
      } as OciSpec,
      sizing: { memoryMiB: 256, vcpus: 1, writableDiskBytes: 64 * 1024 * 1024 }, podId: null, record: () => undefined, log,
      placer: new VmPlacer(builder, {
        podMaxContainers: 2,
        warm: { take: async (memoryMiB, vcpus) => (memoryMiB === 256 && vcpus === 1 && offered++ === 0 ? pod : null) },
      }),
    });
    try {
      assert.equal(offered, 1);
      assert.equal(container.pid, pod.vm.vmm.identity.pid, 'the container runs in the warm VM');
      assert.ok(lines.some((l) => l.msg === 'vm taken from the warm pool'), JSON.stringify(lines));
      await container.start();
      const exit = await container.init.exited;
      assert.equal(exit.exitStatus, 5);
      assert.equal(out, 'data\nwarm\n');
    } finally {
      await container.destroy();
    }
    assert.ok(!isSameProcessAlive(pod.vm.vmm.identity), 'the warm VM ends with its container');
    const left = fs.existsSync(pod.vm.dir) ? fs.readdirSync(pod.vm.dir) : [];
    assert.ok(!fs.existsSync(pod.vm.dir), `its directory is removed; left: ${JSON.stringify(left)}; warnings: ${JSON.stringify(lines.filter((l) => l.level !== 'info' && l.level !== 'debug'))}`);
  });
});
