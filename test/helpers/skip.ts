// Skipping a test always says why, in a form CI can judge (scripts/ci-summary.js):
//  - `lacks`: the machine lacks something the test needs (root, containerd, /dev/kvm, a built
//    artefact). CI machines have all of these, so there such a skip fails the run: a suite that
//    must run here and silently did not is a failure. `setup`: what scripts/setup.sh installs
//    or builds (QEMU, the VMM, the guest kernel), so CI has it too.
//  - `notHere`: the test does not apply to this machine or runtime by design (a PVM-only case
//    on a hardware host, a VM-only case against runc). Reported, never a failure.
// The reason travels on the mocha runnable; test/helpers/ci-reporter.ts writes it out.

/** What a CI machine of this project always has (scripts/setup.sh provides the rest). */
export type MachineFeature = 'root' | 'containerd' | 'kvm' | 'setup';

export type SkipReason = { lacks: MachineFeature; detail: string } | { notHere: string };

/** The property a reason is kept under, on the test (or, from a hook, on its suite). */
export const SKIP_REASON = Symbol.for('smolvm.skipReason');

type Carrier = { [SKIP_REASON]?: SkipReason };

/** Skips the current test (or, from a `before` hook, the rest of its suite), saying why. */
export function skipBecause(ctx: Mocha.Context, reason: SkipReason): never {
  const runnable = ctx.test;
  // In a hook, the reason belongs to every test of the suite it skips.
  const isHook = (runnable as { type?: string } | undefined)?.type === 'hook';
  const carrier = (isHook ? runnable?.parent : runnable) as Carrier | undefined;
  if (carrier) carrier[SKIP_REASON] = reason;
  const text = 'lacks' in reason ? `this machine lacks ${reason.lacks}: ${reason.detail}` : reason.notHere;
  console.warn(`    skipped: ${text}`);
  ctx.skip();
}

/** The reason recorded for a pending test: its own, else its nearest suite's. */
export function skipReasonOf(test: Mocha.Runnable): SkipReason | undefined {
  for (let node: unknown = test; node; node = (node as { parent?: unknown }).parent) {
    const reason = (node as Carrier)[SKIP_REASON];
    if (reason) return reason;
  }
  return undefined;
}
