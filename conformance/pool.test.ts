// The warm pool (pool/), through real ctr on a private containerd whose config says
// pool_size = 1: the first container's daemon (whose VM it started itself, pool/early-vm.ts,
// while containerd sent the Create) fills the pool; the next `ctr run` claims the
// spare (its daemon and its VM, restored and reseeded before anyone asked) and the container
// runs in that VM with its own output and exit code; the pool refills by itself. A spare
// refuses claimers of another environment (and stays), bad claims (and stays), and claims
// after the config changed (and leaves: never a stale guest). A container that does not fit
// the warm VM boots its own and the spare's VM goes. A pod's sandbox brings the spare's VM and
// its app joins it. A claimed daemon that exits unused takes its VM along. A spare killed -9
// takes its VMM along (the exec wrapper's PDEATHSIG) and is swept. Draining while the pool
// refills after a burst of `ctr run --rm`, over and over, leaves no VMM (looked for in /proc),
// VM directory or pool entry. Draining leaves nothing behind: no process, VM directory or pool
// entry.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { smolvmPaths, type Paths } from '../shim/src/config/paths';
import { claimOne, claimSpare } from '../shim/src/pool/claim';
import { drainPool, listSpares, sweepPool, topUpPool, waitForReady, type SpareEntry } from '../shim/src/pool/pool';
import { encodeClaim, smolvmEnv, type ClaimRequest } from '../shim/src/pool/protocol';
import { isSameProcessAlive, waitGone } from '../shim/src/util/proc';
import { PrivateContainerd, RUN_MARKER_ENV } from './harness/containerd';
import { describeResult } from './harness/exec';
import { busyboxImage, importImage, type OciImage } from './harness/image';
import { waitForNoLeaks } from './harness/leaks';
import { vmmProcsOf } from '../test/helpers/vmm-procs';
import { repoRoot, selectedRuntime, SMOLVM_RUNTIME } from './harness/suite';
import { skipBecause } from '../test/helpers/skip';

const READY_MS = 120_000;

describe(`warm pool [${SMOLVM_RUNTIME}]`, function () {
  let containerd: PrivateContainerd | undefined;
  let image: OciImage;
  let configDir = '';
  let configFile = '';
  let paths: Paths;
  const ids: string[] = [];
  let counter = 0;

  const ctrd = (): PrivateContainerd => {
    if (!containerd) throw new Error('containerd is not running');
    return containerd;
  };
  const nextId = (): string => {
    const id = `pool-${process.pid}-${++counter}`;
    ids.push(id);
    return id;
  };
  const run = async (command: string[], flags: string[] = []): Promise<{ id: string; stdout: string; exitCode: number | null; log: string }> => {
    const id = nextId();
    const offset = ctrd().logOffset();
    const result = await ctrd().ctr(['run', '--rm', '--runtime', SMOLVM_RUNTIME, ...flags, image.ref, id, ...command], { timeoutMs: 120_000 });
    if (result.exitCode === null || result.timedOut) assert.fail(describeResult(result));
    return { id, stdout: result.stdout.toString('utf8'), exitCode: result.exitCode, log: ctrd().logSince(offset) };
  };
  const readySpare = async (): Promise<SpareEntry> => {
    assert.ok(await waitForReady(paths, 1, READY_MS), `no spare ready within ${READY_MS / 1000} s:\n${spareLogs()}`);
    const spare = listSpares(paths).find((s) => s.ready);
    assert.ok(spare?.owner && spare.vm, 'a ready spare names its daemon and its VMM');
    return spare;
  };
  const spareLogs = (): string => listSpares(paths)
    .map((s) => `${s.name}:\n${fs.existsSync(path.join(s.dir, 'spare.log')) ? fs.readFileSync(path.join(s.dir, 'spare.log'), 'utf8') : '(no log)'}`)
    .join('\n');
  /** A claim as `start` would send it for this containerd, with overrides. */
  const claim = (over: Partial<ClaimRequest> = {}): ClaimRequest => ({
    namespace: ctrd().namespace, id: `never-${process.pid}`, bundle: '/nonexistent-bundle', group: `never-${process.pid}`,
    address: ctrd().address, publishBinary: '/usr/bin/containerd', ttrpcAddress: `${ctrd().address}.ttrpc`,
    socketDir: '', debug: false, env: smolvmEnv({ ...process.env, SMOLVM_ROOT: ctrd().smolvmRoot, SMOLVM_CONFIG: configFile, [RUN_MARKER_ENV]: ctrd().marker }),
    ...over,
  });

  before(async function () {
    if (selectedRuntime() !== SMOLVM_RUNTIME) skipBecause(this, { notHere: 'the warm pool is smolvm\'s' });
    this.timeout(180_000);
    configDir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-pool-'));
    configFile = path.join(configDir, 'config.toml');
    fs.writeFileSync(configFile, 'pool_size = 1\n');
    image = busyboxImage();
    containerd = await PrivateContainerd.start({ repoRoot: repoRoot(), env: { SMOLVM_CONFIG: configFile } });
    paths = smolvmPaths({ SMOLVM_ROOT: containerd.smolvmRoot });
    await importImage(containerd, image);
  });

  after(async function () {
    this.timeout(120_000);
    if (!containerd) return;
    try {
      await drainPool(paths);
      assert.deepEqual(listSpares(paths), [], 'drain removes every pool entry');
      const leaks = await waitForNoLeaks({ containerd, containerIds: ids });
      assert.deepEqual(leaks, [], 'nothing is left after the pool is drained');
      for (const vms of [path.join(paths.stateDir, 'vms'), path.join(paths.cacheDir, 'vms')]) {
        assert.deepEqual(fs.existsSync(vms) ? fs.readdirSync(vms) : [], [], `no VM directory is left in ${vms}`);
      }
    } finally {
      await containerd.stop();
      fs.rmSync(configDir, { recursive: true, force: true });
    }
  });

  it('the first daemon fills the pool; the next container takes the spare, its VM and its exit code; the pool refills', async function () {
    this.timeout(300_000);
    const first = await run(['sh', '-c', 'echo first']);
    assert.equal(first.exitCode, 0, first.log);
    assert.equal(first.stdout.trim(), 'first');
    // No spare yet: the daemon started its VM itself, while containerd sent the Create.
    assert.match(first.log, new RegExp(`vm taken from the warm pool.*id=${first.id} spare=early-`));
    const spare = await readySpare();

    const second = await run(['sh', '-c', 'echo $((6*7)); exit 3']);
    assert.equal(second.exitCode, 3, second.log);
    assert.equal(second.stdout.trim(), '42');
    assert.match(second.log, new RegExp(`claimed from the warm pool.*id=${second.id} spare=${spare.name}`));
    assert.match(second.log, new RegExp(`vm taken from the warm pool.*id=${second.id}`));
    assert.doesNotMatch(second.log, new RegExp(`vm (cold boot|restored from template).*id=${second.id}`), 'no VM was started for it');
    assert.ok(await waitGone(spare.vm!, 10_000), 'the spare\'s VM ends with its container');

    const refill = await readySpare();
    assert.notEqual(refill.name, spare.name, 'a new spare took its place');
    assert.ok(!fs.existsSync(spare.dir), 'the claimed entry left the pool');
  });

  it('refuses claims from another environment and malformed ones, and stays in the pool', async function () {
    this.timeout(180_000);
    const spare = await readySpare();
    const other = await claimOne(path.join(spare.dir, 'claim.sock'), encodeClaim(claim({ env: { SMOLVM_TEMPLATES: 'off' } })));
    assert.deepEqual(other, { kind: 'refused', reason: 'another SMOLVM_* environment' });
    const garbage = await new Promise<string>((resolve, reject) => {
      const conn = net.connect(path.join(spare.dir, 'claim.sock'));
      let text = '';
      conn.on('connect', () => conn.write('GET / HTTP/1.0\n\n'));
      conn.on('data', (d) => { text += d.toString('utf8'); });
      conn.on('end', () => resolve(text));
      conn.on('error', reject);
    });
    assert.match(garbage, /^refused claim: expected "smolvm-claim 1"/);
    const relative = await claimOne(path.join(spare.dir, 'claim.sock'), Buffer.from('smolvm-claim 1\nnamespace=a\nid=b\ngroup=b\nbundle=rel/dir\n\n'));
    assert.equal(relative.kind, 'refused');
    assert.match(relative.kind === 'refused' ? relative.reason : '', /bundle "rel\/dir" is not absolute/);
    const still = listSpares(paths).find((s) => s.name === spare.name);
    assert.ok(still?.ready && isSameProcessAlive(still.owner!), 'the spare still takes claims');
  });

  it('after the config changed a spare refuses and leaves the pool; the container runs on a fresh VM', async function () {
    this.timeout(300_000);
    const spare = await readySpare();
    fs.writeFileSync(configFile, 'pool_size = 1\nwritable_disk_mib = 512\n');
    const refused: string[] = [];
    const answer = await claimSpare(path.join(paths.stateDir, 'pool'), claim(), (_name, reason) => refused.push(reason));
    assert.equal(answer, null);
    assert.deepEqual(refused, ['the config changed since it booted']);
    assert.ok(await waitGone(spare.owner!, 10_000), 'the stale spare exits');
    assert.ok(await waitGone(spare.vm!, 10_000), 'with its VM');

    const ran = await run(['sh', '-c', 'df -m / | tail -1']);
    assert.equal(ran.exitCode, 0, ran.log);
    assert.doesNotMatch(ran.log, /claimed from the warm pool/);
    const refill = await readySpare();
    assert.notEqual(refill.name, spare.name);
  });

  it('a container that does not fit the warm VM boots its own; the spare\'s VM goes', async function () {
    this.timeout(300_000);
    const spare = await readySpare();
    // 600 MiB does not fit the 256 MiB class the spare booted with.
    const ran = await run(['sh', '-c', 'cat /sys/fs/cgroup/memory.max'], ['--memory-limit', String(600 * 1024 * 1024)]);
    assert.equal(ran.exitCode, 0, ran.log);
    assert.equal(ran.stdout.trim(), String(600 * 1024 * 1024));
    assert.match(ran.log, /warm vm does not fit the container; booting one/);
    assert.match(ran.log, new RegExp(`vm (cold boot|restored from template).*id=${ran.id}`));
    assert.ok(await waitGone(spare.vm!, 10_000), 'the unused warm VM was torn down');
  });

  it('a pod\'s sandbox container brings the spare\'s VM; the pod\'s app joins that VM', async function () {
    this.timeout(300_000);
    const spare = await readySpare();
    const pod = `pod-${process.pid}`;
    const [sandbox, app] = [nextId(), nextId()];
    for (const [id, script] of [[sandbox, 'sleep 300'], [app, 'echo app; sleep 300']] as const) {
      const started = await ctrd().ctr(['run', '-d', '--runtime', SMOLVM_RUNTIME, '--annotation', `io.kubernetes.cri.sandbox-id=${pod}`, image.ref, id, 'sh', '-c', script], { timeoutMs: 120_000 });
      assert.equal(started.exitCode, 0, describeResult(started));
    }
    const listing = (await ctrd().ctrChecked(['tasks', 'ls'], { timeoutMs: 15_000 })).stdout.toString('utf8');
    const pidOf = (id: string): number => Number(new RegExp(`^${id}\\s+(\\d+)`, 'm').exec(listing)?.[1]);
    assert.equal(pidOf(sandbox), spare.vm!.pid, `the sandbox runs in the spare's VM:\n${listing}`);
    assert.equal(pidOf(app), spare.vm!.pid, `the app joins it:\n${listing}`);
    for (const id of [app, sandbox]) {
      await ctrd().ctr(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 30_000 });
      const deadline = Date.now() + 30_000;
      while (Date.now() < deadline && !/STOPPED/.test((await ctrd().ctr(['tasks', 'ls'], { timeoutMs: 15_000 })).stdout.toString('utf8').split('\n').find((l) => l.startsWith(id)) ?? '')) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal((await ctrd().ctr(['tasks', 'rm', id], { timeoutMs: 60_000 })).exitCode, 0);
      assert.equal((await ctrd().ctr(['containers', 'rm', id], { timeoutMs: 60_000 })).exitCode, 0);
    }
    assert.ok(await waitGone(spare.vm!, 10_000), 'the pod\'s VM ends with its last container');
  });

  it('a claimed daemon that never got its container tears the warm VM down when it exits', async function () {
    this.timeout(180_000);
    const spare = await readySpare();
    const bundle = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-pool-bundle-'));
    try {
      const id = `idle-${process.pid}`;
      const claimed = await claimSpare(path.join(paths.stateDir, 'pool'), claim({ id, group: id, bundle }));
      assert.ok(claimed, 'claimed');
      assert.ok(isSameProcessAlive(spare.vm!), 'its VM waits for the container');
      process.kill(spare.owner!.pid, 'SIGTERM');
      assert.ok(await waitGone(spare.owner!, 10_000), 'the daemon exits');
      assert.ok(await waitGone(spare.vm!, 10_000), 'and takes the unused VM with it');
      assert.ok(!fs.existsSync(claimed.address.slice('unix://'.length)), 'its shim socket is gone');
      // It left before its refill timer: top the pool up as the next daemon would.
      await topUpPool(paths, 1, { ...process.env, SMOLVM_ROOT: ctrd().smolvmRoot, SMOLVM_CONFIG: configFile, [RUN_MARKER_ENV]: ctrd().marker });
    } finally {
      fs.rmSync(bundle, { recursive: true, force: true });
    }
  });

  it('a spare killed -9 takes its VMM along; the sweep removes its entry and VM directory', async function () {
    this.timeout(180_000);
    const spare = await readySpare();
    process.kill(spare.owner!.pid, 'SIGKILL');
    assert.ok(await waitGone(spare.owner!, 5_000));
    assert.ok(await waitGone(spare.vm!, 5_000), 'its VMM died with it');
    assert.ok((await sweepPool(paths)) >= 1);
    assert.ok(!fs.existsSync(spare.dir));
    assert.ok(spare.vm!.dir && !fs.existsSync(spare.vm!.dir), 'and removed its VM directory');
  });

  it('drained while the pool refills after a `ctr run --rm`, over and over: no VMM, VM directory or pool entry is left', async function () {
    this.timeout(900_000);
    const rounds = 6;
    let midRestore = 0;
    for (let round = 0; round < rounds; round++) {
      // It claims the spare (or boots its own VM); its daemon refills the pool right after.
      const ran = await run(['true']);
      assert.equal(ran.exitCode, 0, ran.log);
      // Drained while the refill's spare restores its VM.
      const deadline = Date.now() + 60_000;
      let restoring = false;
      while (!restoring && Date.now() < deadline) {
        const booting = new Set(listSpares(paths).filter((s) => !s.ready && s.owner).map((s) => s.owner!.pid));
        restoring = vmmProcsOf(paths.stateDir).some((v) => v.restoring && booting.has(v.ppid));
        if (!restoring) await new Promise((r) => setTimeout(r, 3));
      }
      if (restoring) midRestore += 1;
      await drainPool(paths);
      const gone = Date.now() + 5_000;
      while (vmmProcsOf(paths.stateDir).some((v) => !v.templateBuild) && Date.now() < gone) await new Promise((r) => setTimeout(r, 50));
      assert.deepEqual(vmmProcsOf(paths.stateDir).filter((v) => !v.templateBuild), [], `round ${round}: VMM processes left after the drain`);
      const vms = path.join(paths.stateDir, 'vms');
      assert.deepEqual(fs.existsSync(vms) ? fs.readdirSync(vms) : [], [], `round ${round}: VM directories left`);
      assert.deepEqual(listSpares(paths), [], `round ${round}: pool entries left`);
    }
    assert.ok(midRestore >= rounds / 2, `only ${midRestore} of ${rounds} drains came while a spare restored its VM`);
  });
});
