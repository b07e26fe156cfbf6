// smolvm-vmm's `refresh_disk` (native-vmm/src/control/protocol.md) through the typed client:
// the file behind a slot is rewritten in place (same inode, as a pod's slot is), the VMM takes
// its new size from the descriptor it holds; an unknown serial is refused by name.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { VmmClient } from '../../shim/src/vm/vmm/client';
import { vmmBuildStatus } from '../../shim/src/vm/vmm/locate';
import { buildGuest, ensureVmmBuilt, kvmUsable, REPO_ROOT, VMM_BINARY } from '../guests/vmm-harness';
import { skipBecause } from '../helpers/skip';

function ensureAddonBuilt(): void {
  if (!vmmBuildStatus().addonBuilt) {
    execFileSync('bash', [path.join(REPO_ROOT, 'native-vmm', 'src', 'addon', 'build.sh')], { stdio: ['ignore', 'ignore', 'inherit'] });
  }
}

describe('smolvm-vmm refresh_disk', function () {
  this.timeout(30_000);
  let workDir = '';
  let guest = '';

  before(function () {
    if (!kvmUsable()) skipBecause(this, { lacks: 'kvm', detail: 'no usable /dev/kvm' });
    this.timeout(600_000);
    ensureVmmBuilt();
    ensureAddonBuilt();
    workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-refresh-'));
    guest = buildGuest('long64', workDir);
  });

  after(() => {
    if (workDir) fs.rmSync(workDir, { recursive: true, force: true });
  });

  it('takes the new size of a slot file rewritten in place, and names an unknown serial', async () => {
    const disk = path.join(workDir, 'slot0.disk');
    fs.writeFileSync(disk, '');
    const inode = fs.statSync(disk).ino;
    const client = await VmmClient.spawn({ vmDir: workDir, binary: VMM_BINARY });
    try {
      await client.configure({
        memoryMiB: 32, kernel: guest, cmdline: 's', serial: path.join(workDir, 'serial.log'),
        disks: [{ file: disk, readOnly: true, serial: 'slot0' }],
      });
      fs.writeFileSync(disk, Buffer.alloc(8 * 512 + 100, 1));  // O_TRUNC: the same inode
      assert.equal(fs.statSync(disk).ino, inode);
      assert.equal(await client.refreshDisk('slot0'), 8 * 512, 'a trailing partial sector is not addressable');
      await client.start();
      fs.truncateSync(disk, 2 * 512);
      assert.equal(await client.refreshDisk('slot0'), 2 * 512);
      await assert.rejects(client.refreshDisk('slot9'), /no disk slot with serial 'slot9'/);
      assert.equal(await client.status(), 'running', 'a refused refresh changes nothing');
      await client.stop();
    } finally {
      if (!client.exited) client.signal('SIGKILL');
      await client.terminated;
    }
  });
});
