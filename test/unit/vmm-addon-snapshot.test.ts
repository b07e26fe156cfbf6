// Snapshot and restore through the shim's typed control surface (the node addon + VmmClient):
// a counting tiny guest is paused and snapshotted, its VMM stopped, and the snapshot restored
// into a new VMM process whose count carries on. Host files travel as descriptors.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { VmmClient } from '../../shim/src/vm/vmm';
import { buildGuest, ensureVmmBuilt, kvmUsable } from '../guests/vmm-harness';
import { skipBecause } from '../helpers/skip';

const countsIn = (text: string): number[] => [...text.matchAll(/count=(\d+)\n/g)].map((m) => Number(m[1]));

async function waitForCounts(file: string, atLeast: number, timeoutMs = 20_000): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const counts = countsIn(fs.existsSync(file) ? fs.readFileSync(file, 'latin1') : '');
    if (counts.length >= atLeast) return counts;
    if (Date.now() > deadline) throw new Error(`fewer than ${atLeast} counts in ${file} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('VmmClient snapshot and restore (addon, /dev/kvm)', function () {
  this.timeout(60_000);
  let work = '';
  let guest = '';
  const clients: VmmClient[] = [];

  before(function () {
    if (!kvmUsable()) skipBecause(this, { lacks: 'kvm', detail: 'no usable /dev/kvm' });
    this.timeout(600_000);
    ensureVmmBuilt();
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-addon-snap-'));
    guest = buildGuest('counter', work);
  });
  after(async () => {
    for (const c of clients) {
      if (!c.exited) c.signal('SIGKILL');
      await c.terminated;
    }
    if (work) fs.rmSync(work, { recursive: true, force: true });
  });

  it('pauses, snapshots, and a new VMM restored from it keeps counting', async () => {
    const first = await VmmClient.spawn({ vmDir: work });
    clients.push(first);
    const serialA = path.join(work, 'serial-a.log');
    await first.configure({ memoryMiB: 32, kernel: guest, cmdline: 'counter', serial: serialA, rng: false });
    await first.start();
    await waitForCounts(serialA, 5);
    await first.pause();
    const state = path.join(work, 'vm.state');
    const memory = path.join(work, 'vm.mem');
    const info = await first.snapshot({ state, memory });
    assert.match(info.snapshotId, /^[0-9a-f]{32}$/);
    assert.equal(info.stateBytes, fs.statSync(state).size);
    await first.stop();
    await first.terminated;
    const before = fs.readFileSync(serialA, 'latin1');

    const second = await VmmClient.spawn({ vmDir: work });
    clients.push(second);
    const serialB = path.join(work, 'serial-b.log');
    const restored = await second.restore({ restore: { state, memory }, serial: serialB });
    assert.equal(restored.boot, `restored snapshot ${info.snapshotId}`);
    await second.start();
    await waitForCounts(serialB, 3);
    // The pause may land mid-line: the restored guest finishes that line. Together the two
    // VMMs printed one unbroken sequence from 1: nothing replayed, nothing lost.
    const counts = countsIn(before + fs.readFileSync(serialB, 'latin1'));
    assert.equal(counts[0], 1);
    counts.forEach((n, i) => assert.equal(n, i + 1, `count ${counts[i - 1]} is followed by ${n}`));
    await second.stop();
    const end = await second.terminated;
    assert.equal(end.code, 0);
  });

  it('refuses a restore from a state file that is not a snapshot, naming it', async () => {
    const client = await VmmClient.spawn({ vmDir: work });
    clients.push(client);
    const bogus = path.join(work, 'bogus.state');
    fs.writeFileSync(bogus, 'not a snapshot');
    await assert.rejects(client.restore({ restore: { state: bogus, memory: bogus } }), /restore\.state/);
    await client.stop();
    await client.terminated;
  });
});
