import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { MAX_SOCKET_PATH, socketPath } from '../../shim/src/bootstrap/address';
import { parseShimFlags } from '../../shim/src/bootstrap/flags';
import { groupOf } from '../../shim/src/bootstrap/start';

describe('shim bootstrap', () => {
  it('parses containerd 1.6 start flags', () => {
    const f = parseShimFlags(['-namespace', 'default', '-address', '/run/containerd/containerd.sock',
      '-publish-binary', '/usr/bin/containerd', '-id', 'c1', '-debug', 'start']);
    assert.equal(f.namespace, 'default');
    assert.equal(f.address, '/run/containerd/containerd.sock');
    assert.equal(f.publishBinary, '/usr/bin/containerd');
    assert.equal(f.id, 'c1');
    assert.equal(f.debug, true);
    assert.equal(f.action, 'start');
  });

  it('parses delete flags with -bundle and --flag=value forms', () => {
    const f = parseShimFlags(['--namespace=k8s.io', '-id', 'x', '-bundle', '/b', 'delete']);
    assert.deepEqual([f.namespace, f.id, f.bundle, f.action], ['k8s.io', 'x', '/b', 'delete']);
  });

  it('rejects a flag without its value and a second action', () => {
    assert.throws(() => parseShimFlags(['-id']), /needs an argument: -id/);
    assert.throws(() => parseShimFlags(['start', 'delete']), /unexpected argument/);
  });

  it('skips unknown flags from newer containerd versions', () => {
    const f = parseShimFlags(['-future-flag', 'v', '-id', 'a', 'start']);
    assert.equal(f.id, 'a');
    assert.equal(f.action, 'start');
  });

  it('makes short, deterministic socket paths per (address, namespace, group)', () => {
    const a = socketPath('/run/containerd/containerd.sock', 'default', 'g1');
    assert.equal(a, socketPath('/run/containerd/containerd.sock', 'default', 'g1'));
    assert.notEqual(a, socketPath('/run/containerd/containerd.sock', 'other', 'g1'));
    assert.ok(Buffer.byteLength(a) <= MAX_SOCKET_PATH);
    assert.match(a, /^\/run\/containerd\/s\/[0-9a-f]{64}$/);
    assert.throws(() => socketPath('/x', 'ns', 'g', '/' + 'd'.repeat(60)), /longer than 106 bytes/);
  });

  it('groups a pod by its sandbox id annotation, else by container id', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-bundle-'));
    try {
      assert.equal(groupOf(dir, 'c1'), 'c1');
      fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ annotations: { 'io.kubernetes.cri.sandbox-id': 'pod9' } }));
      assert.equal(groupOf(dir, 'c1'), 'pod9');
      fs.writeFileSync(path.join(dir, 'config.json'), '{not json');
      assert.equal(groupOf(dir, 'c1'), 'c1');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
