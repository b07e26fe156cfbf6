import * as assert from 'node:assert/strict';
import { Code, RpcError } from '../../shim/src/errdefs';
import { parseStdioUri } from '../../shim/src/stdio/uri';

const invalid = (re: RegExp) => (err: unknown): boolean => err instanceof RpcError && err.code === Code.InvalidArgument && re.test(err.message);

describe('stdio URIs', () => {
  it('empty is absent; a bare path and fifo:// are FIFOs', () => {
    assert.deepEqual(parseStdioUri('', 'stdout'), { kind: 'none' });
    assert.deepEqual(parseStdioUri('/run/containerd/fifo/1/x-stdout', 'stdout'), { kind: 'fifo', path: '/run/containerd/fifo/1/x-stdout' });
    assert.deepEqual(parseStdioUri('fifo:///run/f', 'stdout'), { kind: 'fifo', path: '/run/f' });
  });

  it('file:// gives the decoded absolute path', () => {
    assert.deepEqual(parseStdioUri('file:///var/log/a%20b/c.log', 'stdout'), { kind: 'file', path: '/var/log/a b/c.log' });
  });

  it('binary:// gives the path and the query as key, first value pairs, in order', () => {
    assert.deepEqual(parseStdioUri('binary:///usr/bin/logger?id=abc&flag&x=1&id=again&sp=a%20b', 'stdout'), {
      kind: 'binary', path: '/usr/bin/logger', args: ['id', 'abc', 'flag', '', 'x', '1', 'sp', 'a b'],
    });
    assert.deepEqual(parseStdioUri('binary:///bin/l', 'stdout'), { kind: 'binary', path: '/bin/l', args: [] });
  });

  it('rejects what it cannot serve with InvalidArgument naming the stream and the URI', () => {
    assert.throws(() => parseStdioUri('relative/path', 'stdout'), invalid(/stdout: "relative\/path" is neither an absolute path nor a URI/));
    assert.throws(() => parseStdioUri('tcp://host:1', 'stderr'), invalid(/stderr: unsupported stdio URI scheme tcp:\/\//));
    assert.throws(() => parseStdioUri('file://host/x', 'stdout'), invalid(/takes no host/));
    assert.throws(() => parseStdioUri('file:///', 'stdout'), invalid(/needs an absolute path/));
    assert.throws(() => parseStdioUri('binary://', 'stdout'), invalid(/needs an absolute path/));
    assert.throws(() => parseStdioUri('file:///x?y=1', 'stdout'), invalid(/takes no query/));
    assert.throws(() => parseStdioUri('file:///x%00y', 'stdout'), invalid(/NUL in the path/));
    assert.throws(() => parseStdioUri('file:///x%zz', 'stdout'), invalid(/bad percent-encoding/));
  });
});
