/**
 * The VMM core's own unit tests (native-vmm/tests, C++: guest-memory bounds, bus, serial,
 * i8042, MP table, hostile kernel files, JSON, the control channel with SCM_RIGHTS, configure
 * validation). They need no /dev/kvm; this runs the binary and checks its summary line.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { ensureVmmBuilt, REPO_ROOT } from '../guests/vmm-harness';

describe('smolvm-vmm core (C++ unit tests)', function () {
  this.timeout(600_000);  // builds the VMM first when it is missing or stale

  it('passes every core test', () => {
    ensureVmmBuilt();
    const binary = process.env.SMOLVM_VMM_TESTS_BINARY ?? path.join(REPO_ROOT, 'native-vmm', 'build', 'smolvm-vmm-tests');
    const run = spawnSync(binary, { encoding: 'utf8', timeout: 60_000 });
    const failures = run.stdout.split('\n').filter((line) => line.startsWith('FAIL'));
    assert.deepEqual(failures, []);
    assert.match(run.stdout, /^\d+ passed, 0 failed$/m);
    assert.equal(run.status, 0, run.stderr);
  });
});
