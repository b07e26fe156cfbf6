// `start` runs on every container start: it must not load protobuf code, ttrpc, gRPC or
// anything of the VM. Checked on the compiled modules in a fresh node process.
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

describe('start path stays light', () => {
  it('loads no protobuf, ttrpc, sandbox or agent code', () => {
    const dist = path.resolve(__dirname, '..', '..');
    const script = `
      require(${JSON.stringify(path.join(dist, 'shim/src/bootstrap/flags.js'))});
      require(${JSON.stringify(path.join(dist, 'shim/src/bootstrap/start.js'))});
      console.log(JSON.stringify(Object.keys(require.cache)));`;
    const loaded = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })) as string[];
    const ours = loaded.map((f) => path.relative(dist, f));
    const heavy = ours.filter((f) => /gen\/|ttrpc\/|sandbox\/|agent\/|grpc|protobuf|task\//.test(f));
    assert.deepEqual(heavy, [], `start loaded: ${ours.join(', ')}`);
    // flags, start, address, negotiate, and the identifier rule with its errdefs code.
    assert.ok(ours.length <= 6, `start loads few modules: ${ours.join(', ')}`);
  });
});
