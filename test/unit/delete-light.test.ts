// containerd 1.6 runs `delete` after every shim disconnect and `ctr run --rm` waits for it:
// with no state left (the daemon deleted the container) it must load no protobuf or VM code,
// and its hand-made DeleteResponse must be what the generated code encodes.
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { encodeDeleteResponse, EXIT_STATUS_KILLED } from '../../shim/src/bootstrap/delete';
import { DeleteResponse } from '../../shim/src/gen/containerd/task/v2/shim';

describe('delete path stays light', () => {
  it('loads no protobuf, ttrpc, sandbox or agent code when no state is left', () => {
    const dist = path.resolve(__dirname, '..', '..');
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-delete-light-'));
    const bundle = path.join(root, 'bundle');
    fs.mkdirSync(bundle);
    fs.writeFileSync(path.join(bundle, 'options.pb'), 'x');
    try {
      const script = `
        const { parseShimFlags } = require(${JSON.stringify(path.join(dist, 'shim/src/bootstrap/flags.js'))});
        const { deleteShim } = require(${JSON.stringify(path.join(dist, 'shim/src/bootstrap/delete.js'))});
        deleteShim(parseShimFlags(['-namespace', 'ns', '-id', 'gone', '-bundle', ${JSON.stringify(bundle)}, 'delete'])).then((b) => {
          console.log(JSON.stringify({ loaded: Object.keys(require.cache), response: b.toString('hex') }));
        });`;
      const out = JSON.parse(execFileSync(process.execPath, ['-e', script], {
        encoding: 'utf8', env: { ...process.env, SMOLVM_ROOT: root },
      })) as { loaded: string[]; response: string };
      const ours = out.loaded.map((f) => path.relative(dist, f));
      const heavy = ours.filter((f) => /gen\/|ttrpc\/|sandbox\/|agent\/|grpc|protobuf|task\//.test(f));
      assert.deepEqual(heavy, [], `delete loaded: ${ours.join(', ')}`);
      const decoded = DeleteResponse.decode(Buffer.from(out.response, 'hex'));
      assert.equal(decoded.pid, 0);
      assert.equal(decoded.exitStatus, EXIT_STATUS_KILLED);
      assert.ok(decoded.exitedAt && Math.abs(decoded.exitedAt.seconds - Date.now() / 1000) < 60);
      assert.equal(fs.existsSync(path.join(bundle, 'options.pb')), false);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  it('encodes DeleteResponse exactly as the generated code does', () => {
    const dates = [new Date(0), new Date(1000), new Date(999), new Date(1_790_000_000_123), new Date(4_102_444_800_000)];
    for (const pid of [0, 1, 127, 128, 4_194_304, 0xffffffff]) {
      for (const exitStatus of [0, 137, 255, 0xffffffff]) {
        for (const date of dates) {
          const ms = date.getTime();
          const want = Buffer.from(DeleteResponse.encode({
            pid, exitStatus, exitedAt: { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1_000_000 },
          }).finish());
          assert.deepEqual(encodeDeleteResponse(pid, exitStatus, date), want, `pid ${pid} status ${exitStatus} at ${ms}`);
        }
      }
    }
  });
});
