// The warm pool's claim protocol (pool/protocol.ts): what `start` (TypeScript or the C
// launcher) sends and what a spare answers. Round trips, and every malformed request refused
// with a message naming what is wrong.
import * as assert from 'node:assert/strict';
import {
  decodeAnswer, decodeClaim, encodeAnswer, encodeClaim, MAX_CLAIM_BYTES, smolvmEnv, type ClaimRequest,
} from '../../shim/src/pool/protocol';

const request: ClaimRequest = {
  namespace: 'k8s.io', id: 'c1', bundle: '/run/containerd/io.containerd.runtime.v2.task/k8s.io/c1', group: 'c1',
  address: '/run/containerd/containerd.sock', publishBinary: '/usr/bin/containerd', ttrpcAddress: '/run/containerd/containerd.sock.ttrpc',
  socketDir: '', debug: true, env: { SMOLVM_ROOT: '/tmp/x', SMOLVM_CONFIG: '/etc/a=b.toml' },
};

const raw = (text: string): Buffer => Buffer.from(text);

describe('pool claim protocol', () => {
  it('round-trips a request, env values with = included', () => {
    assert.deepEqual(decodeClaim(encodeClaim(request)), request);
  });

  it('takes only SMOLVM_* configuration from an environment, not a daemon\'s own wiring', () => {
    assert.deepEqual(smolvmEnv({ PATH: '/bin', SMOLVM_ROOT: '/r', SMOLVM_SHIM_SOCKET: '/s', SMOLVM_SPARE_DIR: '/d', SMOLVM_TEMPLATES: 'off' }),
      { SMOLVM_ROOT: '/r', SMOLVM_TEMPLATES: 'off' });
  });

  it('refuses malformed requests, naming the problem', () => {
    const cases: Array<[string, RegExp]> = [
      ['smolvm-claim 1\nid=a\n', /no empty line/],
      ['smolvm-claim 2\n\n', /expected "smolvm-claim 1"/],
      ['smolvm-claim 1\nnamespace=n\nid=a\ngroup=a\n\n', /bundle is required/],
      ['smolvm-claim 1\nnamespace=n\nid=a\nid=b\ngroup=a\nbundle=/b\n\n', /id given twice/],
      ['smolvm-claim 1\nnamespace=n\nid=a\ngroup=a\nbundle=/b\ncolour=red\n\n', /unknown key "colour"/],
      ['smolvm-claim 1\nnamespace=n\nid=a\ngroup=a\nbundle=b\n\n', /bundle "b" is not absolute/],
      ['smolvm-claim 1\nnamespace=n\nid=a\ngroup=a\nbundle=/b\nsocket_dir=s\n\n', /socket_dir "s" is not absolute/],
      ['smolvm-claim 1\nnamespace=n\nid=a\ngroup=a\nbundle=/b\nenv=PATH=/bin\n\n', /not SMOLVM_NAME=value/],
      ['smolvm-claim 1\nnamespace=n\nid=a\ngroup=a\nbundle=/b\ndebug=yes\n\n', /debug must be 0 or 1/],
      ['smolvm-claim 1\nnamespace=n\nid=a\0\ngroup=a\nbundle=/b\n\n', /NUL/],
      ['smolvm-claim 1\njunk\n\n', /is not key=value/],
    ];
    for (const [text, message] of cases) assert.throws(() => decodeClaim(raw(text)), message, JSON.stringify(text));
    assert.throws(() => decodeClaim(Buffer.alloc(MAX_CLAIM_BYTES + 1, 0x61)), /over 65536 bytes/);
  });

  it('never encodes a value that would break the framing', () => {
    assert.throws(() => encodeClaim({ ...request, bundle: '/b\n\nid=evil' }), /bundle holds a newline/);
  });

  it('round-trips answers; anything else reads as a refusal', () => {
    for (const answer of [{ kind: 'ok', address: 'unix:///run/containerd/s/abc' }, { kind: 'busy' }, { kind: 'refused', reason: 'the config changed' }] as const) {
      assert.deepEqual(decodeAnswer(encodeAnswer(answer)), answer);
    }
    assert.equal(encodeAnswer({ kind: 'refused', reason: 'two\nlines' }), 'refused two lines\n');
    assert.equal(decodeAnswer('ok tcp://1.2.3.4\n').kind, 'refused');
    assert.equal(decodeAnswer('').kind, 'refused');
  });
});
