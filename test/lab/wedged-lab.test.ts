// A wedged guest on the kvm backend, in the KVM lab (the only place smolvm-vmm runs a stock
// guest here): `smolvm run --backend kvm … sleep` with agent_deadline_scale = 0.3, its
// smolvm-vmm stopped with SIGSTOP mid-run, then SIGTERM to `smolvm run` (which forwards it as
// a Kill): the Kill's deadline passes, the VM is declared lost, the stopped VMM is killed and
// the run ends with 137, naming SignalProcess. conformance/wedged-guest.test.ts does the same
// through containerd on whatever backend the host runs (tcg here). Lab timings are emulated:
// only the order of magnitude is checked.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { runInLab } from '../../lab/lab';
import { agentCallDeadlineMs } from '../../shim/src/agent/deadlines';
import { repoRoot } from '../../shim/src/config/paths';
import { makeBusyboxRootfs } from '../helpers/rootfs';
import { skipBecause } from '../helpers/skip';

const SCALE = 0.3;
const SMOLVM = path.join(repoRoot(), 'bin', 'smolvm');
/** The lab's emulation stretches everything; this bounds teardown on top of the deadline. */
const LAB_SLACK_MS = 15_000;

describe('KVM lab: a wedged kvm guest (SIGSTOP of smolvm-vmm)', function () {
  let dir = '';

  before(function () {
    // The lab is a QEMU-TCG VM (lab/lab.ts says what else it needs, clearly, when missing).
    if (!fs.existsSync('/usr/bin/qemu-system-x86_64')) skipBecause(this, { lacks: 'setup', detail: 'no qemu-system-x86_64 (Debian package qemu-system-x86)' });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-wedged-lab-'));
  });

  after(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('SIGTERM to smolvm run whose VMM is stopped: exit 137 after the Kill deadline, VMM gone, the call named', async function () {
    this.timeout(600_000);
    const rootfs = makeBusyboxRootfs(dir);
    const config = path.join(dir, 'config.toml');
    fs.writeFileSync(config, `agent_deadline_scale = ${SCALE}\ntemplates = false\n`);
    const deadlineMs = agentCallDeadlineMs('signalProcess', SCALE);
    const script = [
      'set -u',
      `SMOLVM_CONFIG=${config} ${SMOLVM} run --backend kvm --rootfs ${rootfs} -- sh -c 'echo ready; exec sleep 600' >/tmp/run.out 2>/tmp/run.err &`,
      'run=$!',
      'i=0',
      'until grep -q ready /tmp/run.out; do i=$((i+1)); if [ $i -gt 1800 ]; then echo never-ready; cat /tmp/run.err; exit 90; fi; sleep 0.1; done',
      'vmm=$(pgrep -x smolvm-vmm)',
      'kill -STOP $vmm',
      't0=$(date +%s%N)',
      'kill -TERM $run',
      'wait $run; rc=$?',
      't1=$(date +%s%N)',
      'echo "rc=$rc ms=$(( (t1 - t0) / 1000000 ))"',
      'if pgrep -x smolvm-vmm >/dev/null; then echo vmm-left; fi',
      'cat /tmp/run.err',
    ].join('\n');
    const result = await runInLab(['sh', '-c', script], { timeoutMs: 540_000 });
    process.stdout.write(`      [lab] L1 boot ${result.bootMs} ms; ${result.stdout.split('\n')[0]}\n`);
    const detail = `exit ${result.exitCode}\n--- stdout ---\n${result.stdout}\n--- stderr ---\n${result.stderr}\n--- L1 console (end) ---\n${result.consoleLog.slice(-2000)}`;
    const match = /^rc=(\d+) ms=(\d+)$/m.exec(result.stdout);
    assert.ok(match, detail);
    assert.equal(Number(match[1]), 137, detail);
    const ms = Number(match[2]);
    assert.ok(ms >= deadlineMs - 50 && ms <= deadlineMs + LAB_SLACK_MS, `ended ${ms} ms after the SIGTERM; Kill deadline ${deadlineMs} ms\n${detail}`);
    assert.doesNotMatch(result.stdout, /vmm-left/, detail);
    assert.match(result.stdout, new RegExp(`no answer from the guest agent to SignalProcess within ${deadlineMs} ms .*declared lost.*smolvm-vmm`), detail);
  });
});
