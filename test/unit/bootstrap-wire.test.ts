// The hand-written containerd 2.3+ bootstrap codec that `start` uses, checked against the code
// generated from proto/containerd/bootstrap/v1/bootstrap.proto, and the stdin classification
// (BootstrapParams or the legacy runtime options Any) as upstream's shim library does it.
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import {
  decodeBootstrapParams, encodeAny, encodeBootstrapResult, readBootstrapParams, WireError,
} from '../../shim/src/bootstrap/wire';
import { BootstrapParams, BootstrapResult, LogLevel } from '../../shim/src/gen/containerd/bootstrap/v1/bootstrap';
import { Any } from '../../shim/src/gen/google/protobuf/any';
import { Options as RuntimeOptions } from '../../shim/src/gen/runtimeoptions/runtimeoptions';

const runtimeOptions: Any = {
  typeUrl: 'runtimeoptions.v1.Options',
  value: Buffer.from(RuntimeOptions.encode({ typeUrl: '', configPath: '/etc/smolvm/config.toml', configBody: '' }).finish()),
};

function params(overrides: Partial<BootstrapParams> = {}): Buffer {
  return Buffer.from(BootstrapParams.encode({
    instanceId: 'c1', namespace: 'k8s.io', logLevel: LogLevel.LOG_LEVEL_DEBUG, containerdVersion: 'v2.3.0',
    containerdTtrpcAddress: 'unix:///run/containerd/containerd.sock.ttrpc',
    containerdGrpcAddress: 'unix:///run/containerd/containerd.sock', containerdBinary: '/usr/bin/containerd',
    extensions: [{ value: runtimeOptions }, { value: { typeUrl: 'containerd.io/other', value: Buffer.from([1, 2, 3]) } }],
    socketDir: '/run/c/s', ...overrides,
  }).finish());
}

describe('bootstrap wire codec (containerd 2.3+)', () => {
  it('decodes every BootstrapParams field the generated encoder writes', () => {
    const p = decodeBootstrapParams(params());
    assert.equal(p.instanceId, 'c1');
    assert.equal(p.namespace, 'k8s.io');
    assert.equal(p.logLevel, -4, 'negative enum values (10-byte varints) survive');
    assert.equal(p.containerdVersion, 'v2.3.0');
    assert.equal(p.containerdTtrpcAddress, 'unix:///run/containerd/containerd.sock.ttrpc');
    assert.equal(p.containerdGrpcAddress, 'unix:///run/containerd/containerd.sock');
    assert.equal(p.containerdBinary, '/usr/bin/containerd');
    assert.equal(p.socketDir, '/run/c/s');
    assert.equal(p.extensions.length, 2);
    assert.equal(p.extensions[0]!.typeUrl, 'runtimeoptions.v1.Options');
    assert.deepEqual(RuntimeOptions.decode(p.extensions[0]!.value).configPath, '/etc/smolvm/config.toml');
    assert.deepEqual([...p.extensions[1]!.value], [1, 2, 3]);
  });

  it('tells an absent socket_dir from an empty one, and keeps every log level', () => {
    assert.equal(decodeBootstrapParams(params({ socketDir: undefined })).socketDir, undefined);
    assert.equal(decodeBootstrapParams(params({ socketDir: '' })).socketDir, '');
    for (const level of [LogLevel.LOG_LEVEL_TRACE, LogLevel.LOG_LEVEL_INFO, LogLevel.LOG_LEVEL_PANIC]) {
      assert.equal(decodeBootstrapParams(params({ logLevel: level })).logLevel, level);
    }
  });

  it('skips fields it does not know, as protobuf requires', () => {
    const extra = Buffer.concat([params(), Buffer.from([0xa0, 0x06, 0x01]), Buffer.from([0xaa, 0x06, 0x02, 0x41, 0x42])]);
    assert.equal(decodeBootstrapParams(extra).instanceId, 'c1');
  });

  it('rejects malformed input with a WireError naming the problem', () => {
    const good = params();
    assert.throws(() => decodeBootstrapParams(good.subarray(0, good.length - 3)), WireError);
    assert.throws(() => decodeBootstrapParams(Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f])), /runs past the end/);
    assert.throws(() => decodeBootstrapParams(Buffer.from([0x0a, 0x02, 0xc3, 0x28])), /not valid UTF-8/);
    assert.throws(() => decodeBootstrapParams(Buffer.from([0x08, 0x01])), /field 1 has wire type 0, want 2/);
    assert.throws(() => decodeBootstrapParams(Buffer.from([0xa7, 0x06])), /unsupported wire type 7/);
    assert.throws(() => decodeBootstrapParams(Buffer.from([0x80])), /truncated varint/);
  });

  it('encodes a BootstrapResult the generated decoder reads back', () => {
    const bytes = encodeBootstrapResult({ version: 3, address: 'unix:///run/containerd/s/abc', protocol: 'grpc', metadata: { backend: 'tcg' } });
    const decoded = BootstrapResult.decode(bytes);
    assert.deepEqual(decoded, { version: 3, address: 'unix:///run/containerd/s/abc', protocol: 'grpc', capabilities: [], metadata: { backend: 'tcg' } });
    assert.deepEqual(bytes, Buffer.from(BootstrapResult.encode({ version: 3, address: 'unix:///run/containerd/s/abc', protocol: 'grpc', capabilities: [], metadata: { backend: 'tcg' } }).finish()));
    assert.throws(() => encodeBootstrapResult({ version: -1, address: '', protocol: '', metadata: {} }), /not a non-negative int32/);
  });

  it('encodes an Any the generated decoder reads back', () => {
    assert.deepEqual(Any.decode(encodeAny({ typeUrl: runtimeOptions.typeUrl, value: Buffer.from(runtimeOptions.value) })), runtimeOptions);
  });

  describe('readBootstrapParams: BootstrapParams or legacy stdin', () => {
    it('accepts params whose instance id and namespace match the flags', () => {
      assert.equal(readBootstrapParams(params(), 'c1', 'k8s.io')?.containerdVersion, 'v2.3.0');
    });

    it('treats params for another id or namespace as not bootstrap params', () => {
      assert.equal(readBootstrapParams(params(), 'c2', 'k8s.io'), undefined);
      assert.equal(readBootstrapParams(params(), 'c1', 'default'), undefined);
    });

    it('treats the runtime options Any older containerd sends as not bootstrap params', () => {
      const legacy = Buffer.from(Any.encode(runtimeOptions).finish());
      // It does decode (field 1 and 2 are strings/bytes in both), which is why the ids are checked.
      assert.doesNotThrow(() => decodeBootstrapParams(legacy));
      assert.equal(readBootstrapParams(legacy, 'c1', 'k8s.io'), undefined);
      assert.equal(readBootstrapParams(Buffer.alloc(0), 'c1', 'k8s.io'), undefined);
      assert.equal(readBootstrapParams(Buffer.from('garbage\xff\xff', 'latin1'), 'c1', 'k8s.io'), undefined);
    });
  });

  it('loads no generated protobuf code', () => {
    const dist = path.resolve(__dirname, '..', '..');
    const script = `
      require(${JSON.stringify(path.join(dist, 'shim/src/bootstrap/wire.js'))});
      require(${JSON.stringify(path.join(dist, 'shim/src/bootstrap/containerd-version.js'))});
      require(${JSON.stringify(path.join(dist, 'shim/src/bootstrap/negotiate.js'))});
      console.log(JSON.stringify(Object.keys(require.cache)));`;
    const loaded = (JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' })) as string[]).map((f) => path.relative(dist, f));
    assert.deepEqual(loaded.filter((f) => /gen\/|ttrpc\/|grpc|protobuf|node_modules/.test(f)), [], loaded.join(', '));
  });
});
