// Templates on the kvm backend, where it can run: inside the KVM lab (a QEMU-TCG L1 VM with a
// real /dev/kvm). The template integration suite runs there against smolvm-vmm's snapshot and
// restore, then the restore-vs-cold-boot benchmark (its ratio is what counts; the lab's
// absolute times are those of an emulated machine). Each `it` boots the L1 VM once.
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { type LabRunResult, runInLab } from '../../lab/lab';
import { repoRoot } from '../../shim/src/config/paths';

const LAB_TIMEOUT_MS = 900_000;
const MOCHA = path.join(repoRoot(), 'node_modules', 'mocha', 'bin', 'mocha.js');

function note(line: string): void {
  process.stdout.write(`      [lab] ${line}\n`);
}

function describeFailure(result: LabRunResult): string {
  return `exit ${result.exitCode}\n--- stdout ---\n${result.stdout}\n--- stderr ---\n${result.stderr}` +
    `\n--- L1 console (end) ---\n${result.consoleLog.slice(-3000)}`;
}

describe('KVM lab: templates on the kvm backend', function () {
  this.timeout(LAB_TIMEOUT_MS + 60_000);

  it('passes the template integration suite (restore, clone safety, invalidation, fallback)', async () => {
    const result = await runInLab(
      [process.execPath, MOCHA, '--timeout', '600000', path.join(repoRoot(), 'dist', 'test', 'integration', 'template.test.js')],
      { timeoutMs: LAB_TIMEOUT_MS, cwd: repoRoot(), env: { SMOLVM_TEMPLATE_BACKEND: 'kvm' } },
    );
    note(`template suite (kvm) in the lab: L1 boot ${result.bootMs} ms, suite ${result.commandMs} ms`);
    assert.equal(result.exitCode, 0, describeFailure(result));
    assert.match(result.stdout, /templates \(kvm\)/);
  });

  it('bench: restore-to-ready vs cold boot on kvm (ratio)', async () => {
    const result = await runInLab(
      [process.execPath, path.join(repoRoot(), 'dist', 'bench', 'restore.js'), '--backend', 'kvm', '--n', '3'],
      { timeoutMs: LAB_TIMEOUT_MS, cwd: repoRoot() },
    );
    assert.equal(result.exitCode, 0, describeFailure(result));
    for (const line of result.stdout.trim().split('\n')) note(line);
    assert.match(result.stdout, /ratio cold\/restore: [\d.]+x/);
  });
});
