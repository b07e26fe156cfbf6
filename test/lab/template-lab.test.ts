// Templates on the kvm backend, where it can run: inside the KVM lab (a QEMU-TCG L1 VM with a
// real /dev/kvm). The template integration suite runs there against smolvm-vmm's snapshot and
// restore, then the restore-vs-cold-boot benchmark (its ratio is what counts; the lab's
// absolute times are those of an emulated machine). Each `it` boots the L1 VM once.
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import { type LabRunResult, runInLab } from '../../lab/lab';
import { repoRoot } from '../../shim/src/config/paths';

/** The suite takes ~45 s in the lab; one inner test is bounded well below the outer bound. */
const LAB_TIMEOUT_MS = 360_000;
const INNER_TEST_TIMEOUT_MS = '120000';
/** The bench takes ~70 s in the lab: a stalled run is cut at under three times that. */
const BENCH_TIMEOUT_MS = 200_000;
const MOCHA = path.join(repoRoot(), 'node_modules', 'mocha', 'bin', 'mocha.js');

function note(line: string): void {
  process.stdout.write(`      [lab] ${line}\n`);
}

function describeFailure(result: LabRunResult): string {
  return `exit ${result.exitCode}\n--- stdout ---\n${result.stdout}\n--- stderr ---\n${result.stderr}` +
    `\n--- L1 console (end) ---\n${result.consoleLog.slice(-3000)}`;
}

/**
 * A failed or stalled lab run gets one more try, reported with what it showed; the second
 * run's result is the one the test judges, so a real failure still fails.
 */
async function withOneRetry(what: string, run: () => Promise<LabRunResult>): Promise<LabRunResult> {
  try {
    const first = await run();
    if (first.exitCode === 0) return first;
    note(`${what} failed once in the lab, trying again; it said:\n${describeFailure(first).slice(-2000)}`);
  } catch (err) {
    note(`${what} failed once in the lab, trying again; it said:\n${String((err as Error).message).slice(-2000)}`);
  }
  return run();
}

describe('KVM lab: templates on the kvm backend', function () {
  // Each test may run twice (one retry).
  this.timeout(2 * LAB_TIMEOUT_MS + 60_000);

  it('passes the template integration suite (restore, clone safety, invalidation, fallback)', async () => {
    const suite = (): Promise<LabRunResult> => runInLab(
      [process.execPath, MOCHA, '--exit', '--timeout', INNER_TEST_TIMEOUT_MS, path.join(repoRoot(), 'dist', 'test', 'integration', 'template.test.js')],
      { timeoutMs: LAB_TIMEOUT_MS, cwd: repoRoot(), env: { SMOLVM_TEMPLATE_BACKEND: 'kvm' } },
    );
    // Nested KVM emulated by TCG has stalled this suite once in CI (no output for minutes,
    // while it passes in ~45 s otherwise).
    const result = await withOneRetry('template suite', suite);
    note(`template suite (kvm) in the lab: L1 boot ${result.bootMs} ms, suite ${result.commandMs} ms`);
    assert.equal(result.exitCode, 0, describeFailure(result));
    assert.match(result.stdout, /templates \(kvm\)/);
  });

  it('bench: restore-to-ready vs cold boot on kvm (ratio)', async () => {
    const bench = (): Promise<LabRunResult> => runInLab(
      [process.execPath, path.join(repoRoot(), 'dist', 'bench', 'restore.js'), '--backend', 'kvm', '--n', '3'],
      { timeoutMs: BENCH_TIMEOUT_MS, cwd: repoRoot() },
    );
    // The same nested-KVM stall has hit this once (the L1 kernel reported its VMM thread stuck
    // in KVM_RUN for minutes).
    const result = await withOneRetry('restore bench', bench);
    assert.equal(result.exitCode, 0, describeFailure(result));
    for (const line of result.stdout.trim().split('\n')) note(line);
    assert.match(result.stdout, /ratio cold\/restore: [\d.]+x/);
  });
});
