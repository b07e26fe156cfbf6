// A shim daemon killed -9 while its container's VM boots (restored from a template, or
// cold-booted) takes that VMM along (the exec wrapper's PDEATHSIG) and `delete` sweeps the VM
// directory it left: no VMM process of the root and no VM directory remain, through real
// containerd + ctr, several times over. VMMs are looked for in /proc, not in smolvm's records.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { sleep } from './harness/exec';
import { describeConformance } from './harness/suite';
import { cmdlineOf, vmmProcsOf, type VmmProc } from '../test/helpers/vmm-procs';
import { skipBecause } from '../test/helpers/skip';

const ROUNDS = 4;

describeConformance('orphaned VMMs', (test) => {
  test('the shim daemon killed -9 while its container\'s VM boots: its VMM dies with it, nothing stays', 400_000, async (env, ctx) => {
    if (!env.vm) skipBecause(ctx, { notHere: 'runc has no VMM' });
    const stateDir = path.join(env.containerd.smolvmRoot, 'run');
    const vmsDir = path.join(stateDir, 'vms');
    /** The first VMM a shim daemon (not a template builder) starts. */
    const daemonVmm = async (timeoutMs: number): Promise<VmmProc | null> => {
      const deadline = Date.now() + timeoutMs;
      while (Date.now() < deadline) {
        const vmm = vmmProcsOf(stateDir).find((v) => !v.templateBuild && / daemon$/.test(cmdlineOf(v.ppid)));
        if (vmm) return vmm;
        await sleep(3);
      }
      return null;
    };
    const kinds: string[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      const id = env.newId('bootkill');
      const running = env.run(id, ['sleep', '300'], { keep: true, ctrFlags: ['-d'], timeoutMs: 120_000 });
      const vmm = await daemonVmm(60_000);
      assert.ok(vmm, `round ${round}: no VMM started by a shim daemon within 60 s`);
      process.kill(vmm.ppid, 'SIGKILL');
      kinds.push(vmm.restoring ? 'restoring' : 'booting');
      const deadline = Date.now() + 5_000;
      while (vmmProcsOf(stateDir).some((v) => v.pid === vmm.pid) && Date.now() < deadline) await sleep(20);
      assert.ok(!vmmProcsOf(stateDir).some((v) => v.pid === vmm.pid), `round ${round}: the VMM ${vmm.pid} (${vmm.cmdline}) outlived its daemon`);
      await running; // fails or not, depending on how far the Create got: the task is gone either way
      await env.containerd.ctr(['tasks', 'rm', '-f', id], { timeoutMs: 30_000 });
      await env.containerd.ctr(['containers', 'rm', id], { timeoutMs: 30_000 });
      // containerd ran `delete` for the dead shim: it swept what the daemon left.
      const swept = Date.now() + 10_000;
      while ((fs.existsSync(vmsDir) ? fs.readdirSync(vmsDir) : []).length > 0 && Date.now() < swept) await sleep(50);
      assert.deepEqual(fs.existsSync(vmsDir) ? fs.readdirSync(vmsDir) : [], [], `round ${round}: VM directories left`);
      assert.deepEqual(vmmProcsOf(stateDir).filter((v) => !v.templateBuild), [], `round ${round}: VMM processes left`);
    }
    if (process.env.SMOLVM_TEST_VERBOSE) console.log(`      killed while the VM was: ${kinds.join(', ')}`);
  });
});
