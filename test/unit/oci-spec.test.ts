import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Code, RpcError } from '../../shim/src/errdefs';
import { loadBundleSpec, validateSpec } from '../../shim/src/oci/spec';

const good = {
  ociVersion: '1.0.2',
  process: { args: ['/bin/sh'], env: ['A=1'], cwd: '/', user: { uid: 0, gid: 0 } },
  root: { path: 'rootfs' },
};

function invalid(raw: unknown, pattern: RegExp): void {
  assert.throws(() => validateSpec(raw, 'config.json'), (err: unknown) => {
    assert.ok(err instanceof RpcError);
    assert.equal(err.code, Code.InvalidArgument);
    assert.match(err.message, pattern);
    return true;
  });
}

describe('OCI spec validation', () => {
  it('accepts a minimal spec', () => {
    assert.equal(validateSpec(good, 'x').process!.args![0], '/bin/sh');
  });

  it('names the bad field', () => {
    invalid([], /\(document\) is not a JSON object/);
    invalid({ ...good, process: { ...good.process, args: [] } }, /process\.args must name the program/);
    invalid({ ...good, process: { ...good.process, cwd: 'rel' } }, /process\.cwd must be an absolute path/);
    invalid({ ...good, process: { ...good.process, user: { uid: -1, gid: 0 } } }, /process\.user\.uid must be a uint32/);
    invalid({ ...good, process: { ...good.process, env: [1] } }, /process\.env must be an array of strings/);
    invalid({ ...good, mounts: [{}] }, /mounts\[0\]\.destination/);
  });

  it('reports unreadable and malformed config.json files', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-spec-'));
    try {
      assert.throws(() => loadBundleSpec(dir), /cannot read .*config\.json/);
      fs.writeFileSync(path.join(dir, 'config.json'), '{"ociVersion":');
      assert.throws(() => loadBundleSpec(dir), /config\.json is not valid JSON/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
