// Template keys and the on-disk store, without VMs: every input changes the key; lookups tell
// found / missing / corrupt apart; publishing is atomic; garbage collection removes superseded
// and dead builders' leftovers and keeps other families; the schedule claim dedupes bursts.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { familyOf, TEMPLATE_FORMAT, templateKey, type TemplateInputs } from '../../shim/src/vm/template/key';
import { STATE_FILE, TemplateStore, type TemplateManifest } from '../../shim/src/vm/template/store';
import { templatesEnabled } from '../../shim/src/vm/builder';
import type { VmShape } from '../../shim/src/vm/shape';
import { fileSha256 } from '../../shim/src/util/file-identity';
import { parseConfig } from '../../shim/src/config/config';

const baseShape: VmShape = {
  memoryMiB: 256, vcpus: 1, diskHotplug: false, nics: [], shares: [{ tag: 'smolvm' }], jail: {},
  disks: [{ serial: 'slot0', readOnly: true }, { serial: 'slot1', readOnly: false }],
};
const baseInputs: TemplateInputs = {
  format: TEMPLATE_FORMAT, backend: 'tcg', kernelSha256: 'k'.repeat(64), initramfsSha256: 'i'.repeat(64),
  cmdline: 'console=ttyS0', shape: baseShape,
  vmm: 'QEMU emulator version 7.2.22', machine: 'm1', host: 'tcg-any',
};
const shaped = (shape: Partial<VmShape>): Partial<TemplateInputs> => ({ shape: { ...baseShape, ...shape } });

describe('template keys', () => {
  it('change with every input and never with object construction order', () => {
    const key = templateKey(baseInputs);
    assert.match(key, /^[0-9a-f]{24}$/);
    const reordered = Object.fromEntries(Object.entries(baseInputs).reverse()) as unknown as TemplateInputs;
    assert.equal(templateKey(reordered), key);
    const variants: Partial<TemplateInputs>[] = [
      { backend: 'kvm' }, { kernelSha256: 'x'.repeat(64) }, { initramfsSha256: 'y'.repeat(64) },
      { cmdline: 'console=ttyS0 quiet' }, shaped({ memoryMiB: 512 }), shaped({ vcpus: 2 }),
      shaped({ disks: [{ serial: 'slot0', readOnly: true }] }),
      shaped({ disks: [{ serial: 'slot0', readOnly: false }, { serial: 'slot1', readOnly: false }] }),
      shaped({ disks: [{ serial: 'slotA', readOnly: true }, { serial: 'slot1', readOnly: false }] }),
      shaped({ diskHotplug: true }), shaped({ nics: [{ name: 'eth0' }] }), shaped({ shares: [] }),
      { vmm: 'QEMU emulator version 8.0.0' }, { machine: 'm2' }, { host: 'cpuid-abc' }, { format: 'v0' },
    ];
    const keys = new Set(variants.map((v) => templateKey({ ...baseInputs, ...v })));
    assert.equal(keys.size, variants.length);
    assert.ok(!keys.has(key));
  });

  it('group templates that differ only by contents into one family', () => {
    assert.equal(familyOf({ ...baseInputs, kernelSha256: 'z'.repeat(64), vmm: 'other' }), familyOf(baseInputs));
    assert.notEqual(familyOf({ ...baseInputs, ...shaped({ memoryMiB: 512 }) }), familyOf(baseInputs));
  });

  it('hash a file once per version (memo on disk), and again after a rewrite', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-tplkey-'));
    try {
      const file = path.join(dir, 'kernel');
      fs.writeFileSync(file, 'one');
      const memo = path.join(dir, 'memo');
      const first = await fileSha256(file, memo);
      assert.equal(first, '7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed');
      assert.equal(fs.readdirSync(memo).length, 1);
      fs.writeFileSync(file, 'two');
      fs.utimesSync(file, new Date(), new Date(Date.now() + 5000));
      assert.equal(await fileSha256(file, memo), '3fc4ccfe745870e2c0d99f71f30ff0656c8dedd41cc1d7d3d376b0dbe685e2f3');
      await assert.rejects(fileSha256(path.join(dir, 'missing'), memo), /missing: ENOENT/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('template store', () => {
  let root: string;
  let store: TemplateStore;
  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-tplstore-'));
    store = new TemplateStore(root);
  });
  afterEach(() => fs.rmSync(root, { recursive: true, force: true }));

  function publish(inputs: TemplateInputs, state = 'STATE'): TemplateManifest {
    const key = templateKey(inputs);
    const dir = store.makeBuildDir(key);
    fs.writeFileSync(path.join(dir, STATE_FILE), state);
    const manifest: TemplateManifest = {
      format: TEMPLATE_FORMAT, key, family: familyOf(inputs), inputs, stateBytes: state.length,
      stateSha256: 'h', createdAt: new Date().toISOString(), buildMs: 1,
    };
    store.publish(dir, manifest);
    return manifest;
  }

  it('finds a published template, and nothing before', () => {
    const key = templateKey(baseInputs);
    assert.equal(store.lookup(key).kind, 'missing');
    publish(baseInputs);
    const found = store.lookup(key);
    assert.equal(found.kind, 'found');
    if (found.kind === 'found') assert.equal(found.template.statePath, path.join(store.dirOf(key), STATE_FILE));
    assert.deepEqual(fs.readdirSync(store.root).filter((n) => n.startsWith('.build-')), []);
  });

  it('tells a truncated state, a foreign or garbled manifest, a missing manifest apart as corrupt', () => {
    const m = publish(baseInputs);
    fs.truncateSync(path.join(store.dirOf(m.key), STATE_FILE), 2);
    const truncated = store.lookup(m.key);
    assert.equal(truncated.kind, 'corrupt');
    if (truncated.kind === 'corrupt') assert.match(truncated.reason, /is 2 bytes, the manifest says 5 bytes/);
    fs.writeFileSync(path.join(store.dirOf(m.key), 'manifest.json'), JSON.stringify({ ...m, key: 'f'.repeat(24) }));
    assert.match(JSON.stringify(store.lookup(m.key)), /describes template f{24}/);
    fs.writeFileSync(path.join(store.dirOf(m.key), 'manifest.json'), '{nope');
    assert.match(JSON.stringify(store.lookup(m.key)), /not a template manifest/);
    fs.rmSync(path.join(store.dirOf(m.key), 'manifest.json'));
    assert.match(JSON.stringify(store.lookup(m.key)), /has no manifest/);
    store.remove(m.key);
    assert.equal(store.lookup(m.key).kind, 'missing');
    assert.deepEqual(fs.readdirSync(store.root), []);
  });

  it('collects superseded templates and dead builds, keeps other families', async () => {
    const old = publish({ ...baseInputs, kernelSha256: 'o'.repeat(64) });
    const otherFamily = publish({ ...baseInputs, ...shaped({ memoryMiB: 512 }) });
    const deadBuild = store.makeBuildDir('a'.repeat(24));
    const current = publish(baseInputs);
    const removed = await store.collectGarbage(current);
    assert.ok(removed.includes(old.key));
    assert.ok(removed.includes(path.basename(deadBuild)));
    assert.equal(store.lookup(current.key).kind, 'found');
    assert.equal(store.lookup(otherFamily.key).kind, 'found');
    assert.equal(store.lookup(old.key).kind, 'missing');
  });

  it('lets one scheduler claim a build at a time; a failure pauses retries', () => {
    const key = 'b'.repeat(24);
    assert.equal(store.claimSchedule(key), true);
    assert.equal(store.claimSchedule(key), false);
    assert.equal(store.claimSchedule(key, Date.now() + 120_000), true, 'a stale claim is taken over');
    store.releaseSchedule(key);
    assert.equal(store.claimSchedule(key), true);
    assert.equal(store.recentFailure(key), null);
    store.markFailed(key, 'guest did not boot');
    assert.match(store.recentFailure(key) ?? '', /guest did not boot/);
    assert.equal(store.recentFailure(key, Date.now() + 3600_000), null);
  });

  it('rebuilds a template that failed to restore once, pauses one that fails again', () => {
    const m = publish(baseInputs);
    assert.equal(store.noteRestoreFailure(m.key, 'load failed'), true, 'first failure: rebuild');
    assert.equal(store.recentFailure(m.key), null);
    assert.equal(store.noteRestoreFailure(m.key, 'load failed'), false, 'again: pause');
    assert.match(store.recentFailure(m.key) ?? '', /restores keep failing: load failed/);
    const found = store.lookup(m.key);
    assert.equal(found.kind, 'found');
    if (found.kind === 'found') store.touch(found.template);
    assert.equal(store.noteRestoreFailure(m.key, 'x'), true, 'a good restore clears the record');
  });

  it('a build lock is exclusive and reported as in progress', async () => {
    const key = 'c'.repeat(24);
    const lock = await store.tryLock(key);
    assert.ok(lock);
    assert.equal(await store.buildInProgress(key), true);
    assert.equal(await store.tryLock(key), null, 'a second builder does not get it');
    await lock.release();
    assert.equal(await store.buildInProgress(key), false);
  });
});

describe('template switch', () => {
  it('is on by default, off by config or SMOLVM_TEMPLATES', () => {
    assert.equal(templatesEnabled(undefined, {}), true);
    assert.equal(templatesEnabled(false, {}), false);
    for (const v of ['off', '0', 'false', 'no', 'OFF']) assert.equal(templatesEnabled(true, { SMOLVM_TEMPLATES: v }), false);
    assert.equal(templatesEnabled(undefined, { SMOLVM_TEMPLATES: 'on' }), true);
    assert.equal(parseConfig('templates = false\n', 'c.toml').templates, false);
    assert.equal(parseConfig('', 'c.toml').templates, true);
    assert.throws(() => parseConfig('templates = "yes"\n', 'c.toml'), /templates must be true or false/);
  });
});
