import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { StateStore, validateId, type ContainerState } from '../../shim/src/state/store';
import { isSameProcessAlive, killIdentified, processStartTime, waitGone } from '../../shim/src/util/proc';

describe('state store', () => {
  let dir: string;
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-state-')); });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const sample = (): ContainerState => ({
    version: 1, id: 'c1', namespace: 'default', bundle: '/b', status: 'created', shimPid: 1,
    vm: { backend: 'tcg', pid: 42, pidStartTime: '100', dir: '/x', sockets: { agent: '/x/a' }, disks: {} },
  });

  it('round-trips atomically and leaves no temp files', () => {
    const store = new StateStore(dir);
    store.write(sample());
    assert.deepEqual(store.read('default', 'c1'), sample());
    assert.deepEqual(fs.readdirSync(path.join(dir, 'tasks', 'default')), ['c1.json']);
    store.remove('default', 'c1');
    assert.equal(store.read('default', 'c1'), null);
  });

  it('refuses a state file of another version', () => {
    const store = new StateStore(dir);
    store.write({ ...sample(), version: 99 });
    assert.throws(() => store.read('default', 'c1'), /has version 99/);
  });

  it('validates ids that become file names', () => {
    validateId('abc-1.2_3');
    assert.throws(() => validateId('../etc'), /invalid container id/);
    assert.throws(() => validateId(''), /invalid container id/);
  });
});

describe('process identity', () => {
  it('kills only the process with the recorded start time', async () => {
    const child = spawn('sleep', ['30'], { stdio: 'ignore' });
    await new Promise((r) => child.once('spawn', r));
    const id = { pid: child.pid!, startTime: processStartTime(child.pid!)! };
    assert.ok(isSameProcessAlive(id));
    assert.equal(killIdentified({ ...id, startTime: '1' }), false, 'a different start time is another process');
    assert.ok(isSameProcessAlive(id));
    const exited = new Promise((r) => child.once('exit', r));
    assert.equal(killIdentified(id), true);
    await exited;
    assert.ok(await waitGone(id, 1000));
  });
});
