// No VMM outlives the shim process that started it (issue 9, "A VM leaked"): warm-pool spares
// drained while they restore their VM (a refill), many times over, a spare told to leave
// mid-restore and a spare killed -9 mid-restore leave no VMM process, no VM directory and no
// pool entry; a shim daemon killed -9 while its early VM boots leaves nothing once containerd
// ran `delete`. Real QEMU (tcg), real
// guest kernel, restores from a real pod template, through `smolvm pool fill` / `drain`.
//
// VMM processes are looked for in /proc by what any QEMU of this root shows (its command line
// names the root's VM directories) and by the exec wrapper's environment marker
// (test/helpers/vmm-procs.ts); nothing here relies on the records under test.
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fromAddress } from '../../shim/src/bootstrap/address';
import { smolvmPaths, type Paths } from '../../shim/src/config/paths';
import { listSpares } from '../../shim/src/pool/pool';
import { TemplateStore } from '../../shim/src/vm/template';
import { vmmProcsOf, type VmmProc } from '../helpers/vmm-procs';
import { removeWorkDir, templateBuildersUnder } from '../helpers/work-dir';

const repo = path.resolve(__dirname, '..', '..', '..');
const smolvm = path.join(repo, 'bin', 'smolvm');
const shimBin = path.join(repo, 'bin', 'containerd-shim-smolvm-v1');
/** Drain-during-refill rounds (SMOLVM_DRAIN_ROUNDS overrides). */
const ROUNDS = Number(process.env.SMOLVM_DRAIN_ROUNDS ?? 24);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

const listDir = (dir: string): string[] => (fs.existsSync(dir) ? fs.readdirSync(dir) : []);

describe('orphaned VMMs: no VMM outlives the shim process that started it (tcg)', function () {
  this.timeout(600_000);
  let work = '';
  let paths: Paths;
  let env: NodeJS.ProcessEnv;
  let templateKey = '';

  const cli = (args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> => new Promise((resolve, reject) => {
    const child = spawn(smolvm, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
  const spareLogs = (): string => listSpares(paths)
    .map((s) => `${s.name}:\n${fs.existsSync(path.join(s.dir, 'spare.log')) ? fs.readFileSync(path.join(s.dir, 'spare.log'), 'utf8') : '(no log)'}`)
    .join('\n');
  /** Nothing of the pool left: no VMM process (waited for a moment), no VM directory, no entry. */
  const assertNothingLeft = async (what: string): Promise<void> => {
    const deadline = Date.now() + 5_000;
    while (vmmProcsOf(paths.stateDir).length > 0 && Date.now() < deadline) await sleep(50);
    const left = vmmProcsOf(paths.stateDir);
    assert.deepEqual(left, [], `${what}: VMM processes left`);
    assert.deepEqual(listDir(path.join(paths.stateDir, 'vms')), [], `${what}: VM directories left`);
    assert.deepEqual(listSpares(paths).map((s) => s.name), [], `${what}: pool entries left`);
  };
  /** Waits until a spare's VMM restores (started, its spare not taking claims yet). */
  const waitForRestore = async (timeoutMs: number): Promise<VmmProc | null> => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const booting = new Set(listSpares(paths).filter((s) => !s.ready && s.owner).map((s) => s.owner!.pid));
      const restoring = vmmProcsOf(paths.stateDir).find((v) => v.restoring && booting.has(v.ppid));
      if (restoring) return restoring;
      await sleep(3);
    }
    return null;
  };

  // Each test judges what it leaves itself: what an earlier failing one left goes first.
  beforeEach(async () => {
    await cli(['pool', 'drain']);
    for (const vmm of vmmProcsOf(paths.stateDir)) process.kill(vmm.pid, 'SIGKILL');
    await sleep(100);
    fs.rmSync(path.join(paths.stateDir, 'vms'), { recursive: true, force: true });
  });

  before(async function () {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-orphans-'));
    const config = path.join(work, 'config.toml');
    fs.writeFileSync(config, 'pool_size = 2\n');
    env = { ...process.env, SMOLVM_ROOT: path.join(work, 'smolvm'), SMOLVM_CONFIG: config };
    paths = smolvmPaths(env);
    // The pod template every spare restores from: the first spare cold-boots and builds it.
    const filled = await cli(['pool', 'fill', '--size', '1', '--wait']);
    assert.equal(filled.code, 0, `${filled.stderr}\n${spareLogs()}`);
    templateKey = /vm cold boot: no template (\S+) \(building\)/.exec(spareLogs())?.[1] ?? '';
    assert.ok(templateKey, `the first spare cold-boots and builds a template:\n${spareLogs()}`);
    const drained = await cli(['pool', 'drain']);
    assert.equal(drained.code, 0, drained.stderr);
    const store = new TemplateStore(paths.cacheDir);
    const deadline = Date.now() + 300_000;
    while (store.lookup(templateKey).kind !== 'found' || templateBuildersUnder(work).length > 0) {
      assert.ok(Date.now() < deadline, `template ${templateKey} not built in time`);
      await sleep(200);
    }
    await assertNothingLeft('after the first drain');
  });

  after(async function () {
    if (!work) return;
    await cli(['pool', 'drain']).catch(() => undefined);
    for (const vmm of vmmProcsOf(paths.stateDir)) process.kill(vmm.pid, 'SIGKILL');
    await removeWorkDir(work);
  });

  it(`drained during a refill, ${ROUNDS} times over, the spares leave no VMM, VM directory or pool entry`, async () => {
    let midRestore = 0;
    for (let round = 0; round < ROUNDS; round++) {
      const filled = await cli(['pool', 'fill', '--size', '2']);
      assert.equal(filled.code, 0, filled.stderr);
      // Drain at different points of the spares' start: while a VM restores, at once, or a
      // moment later.
      if (round % 3 === 0) {
        if (await waitForRestore(60_000)) midRestore += 1;
      } else if (round % 3 === 2) {
        await sleep(Math.floor(Math.random() * 400));
      }
      const restoringNow = vmmProcsOf(paths.stateDir).some((v) => v.restoring) && listSpares(paths).some((s) => !s.ready);
      const drained = await cli(['pool', 'drain']);
      assert.equal(drained.code, 0, `round ${round}: ${drained.stderr}`);
      if (restoringNow && round % 3 !== 0) midRestore += 1;
      await assertNothingLeft(`round ${round} (${restoringNow ? 'a VM was restoring' : 'no VM restoring'} at the drain)`);
    }
    assert.ok(midRestore >= Math.ceil(ROUNDS / 3), `only ${midRestore} of ${ROUNDS} drains came while a VM restored`);
    // Killing a restore on the way out never blames the template.
    assert.equal(new TemplateStore(paths.cacheDir).lookup(templateKey).kind, 'found', 'the template is still there');
  });

  it('a spare told to leave (SIGTERM) while its VM restores kills it and removes its directory itself', async () => {
    const filled = await cli(['pool', 'fill', '--size', '1']);
    assert.equal(filled.code, 0, filled.stderr);
    const vmm = await waitForRestore(60_000);
    assert.ok(vmm, `no VM restoring within 60 s:\n${spareLogs()}`);
    const vmDirs = listDir(path.join(paths.stateDir, 'vms'));
    process.kill(vmm.ppid, 'SIGTERM');
    const deadline = Date.now() + 10_000;
    while (fs.existsSync(`/proc/${vmm.ppid}`) && Date.now() < deadline) await sleep(10);
    // No drain, no sweep: what the spare did on its way out.
    assert.deepEqual(vmmProcsOf(paths.stateDir), [], 'its VMM is gone');
    assert.deepEqual(listDir(path.join(paths.stateDir, 'vms')).filter((d) => vmDirs.includes(d)), [], 'and its VM directory');
    assert.deepEqual(listSpares(paths).map((s) => s.name), [], 'and its pool entry');
    assert.equal(new TemplateStore(paths.cacheDir).lookup(templateKey).kind, 'found', 'the template was not blamed');
  });

  it('a shim daemon killed -9 while its early VM boots, before any Create: `delete` leaves no VMM and no VM directory', async () => {
    // As containerd 1.6 starts a shim (the launcher answers `start`); no Create ever comes.
    const id = `early-${process.pid}`;
    const bundle = fs.mkdtempSync(path.join(work, 'bundle-'));
    const shimEnv = { ...env, TTRPC_ADDRESS: path.join(work, 'containerd.sock.ttrpc') };
    const started = spawnSync(shimBin, ['-namespace', 'ns1', '-address', path.join(work, 'containerd.sock'), '-publish-binary', '/usr/bin/containerd', '-id', id, 'start'],
      { cwd: bundle, env: shimEnv, encoding: 'utf8', timeout: 30_000 });
    assert.equal(started.status, 0, `${started.stdout}${started.stderr}`);
    const socket = fromAddress(started.stdout.trim());
    try {
      const deadline = Date.now() + 60_000;
      let vmm: VmmProc | undefined;
      while (!vmm && Date.now() < deadline) {
        vmm = vmmProcsOf(paths.stateDir).find((v) => !v.templateBuild);
        if (!vmm) await sleep(3);
      }
      assert.ok(vmm, 'the daemon starts its early VM');
      process.kill(vmm.ppid, 'SIGKILL');
      const gone = Date.now() + 5_000;
      while (vmmProcsOf(paths.stateDir).length > 0 && Date.now() < gone) await sleep(20);
      assert.deepEqual(vmmProcsOf(paths.stateDir), [], 'the VMM died with its daemon');
      // containerd then runs `delete` for the dead shim.
      const deleted = spawnSync(shimBin, ['-namespace', 'ns1', '-address', path.join(work, 'containerd.sock'), '-publish-binary', '/usr/bin/containerd', '-id', id, '-bundle', bundle, 'delete'],
        { cwd: bundle, env: shimEnv, timeout: 30_000 });
      assert.equal(deleted.status, 0, deleted.stderr.toString());
      assert.deepEqual(listDir(path.join(paths.stateDir, 'vms')), [], 'the VM directory the daemon left is gone');
      assert.deepEqual(listDir(path.join(paths.stateDir, 'tasks', 'ns1')), [], 'and its state file');
    } finally {
      fs.rmSync(socket, { force: true });
    }
  });

  it('a spare killed -9 while its VM restores takes the VMM along; the sweep removes the VM directory', async () => {
    const filled = await cli(['pool', 'fill', '--size', '1']);
    assert.equal(filled.code, 0, filled.stderr);
    const vmm = await waitForRestore(60_000);
    assert.ok(vmm, `no VM restoring within 60 s:\n${spareLogs()}`);
    process.kill(vmm.ppid, 'SIGKILL');
    const deadline = Date.now() + 5_000;
    while (vmmProcsOf(paths.stateDir).length > 0 && Date.now() < deadline) await sleep(20);
    assert.deepEqual(vmmProcsOf(paths.stateDir), [], 'the VMM died with its spare');
    const drained = await cli(['pool', 'drain']);
    assert.equal(drained.code, 0, drained.stderr);
    await assertNothingLeft('after the drain');
  });
});
