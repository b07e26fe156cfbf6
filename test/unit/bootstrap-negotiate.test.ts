// What `start` answers each containerd version, and how it tells 1.7 from 2.0-2.2 (which send
// the same environment): the Go build info of containerd's own binary.
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { containerdMajorFromBinary, containerdMajorOf, parseGoBuildInfo } from '../../shim/src/bootstrap/containerd-version';
import {
  chooseAnswer, needsContainerdMajor, parseMaxShimVersion, parsePreferredProtocol, renderTextAnswer, type CallerProfile,
} from '../../shim/src/bootstrap/negotiate';
import { decodeBootstrapParams } from '../../shim/src/bootstrap/wire';
import { BootstrapParams } from '../../shim/src/gen/containerd/bootstrap/v1/bootstrap';
import { makeFakeContainerdBinary, parseStartAnswer } from '../helpers/containerd-caller';
import { skipBecause } from '../helpers/skip';

const bootstrap = decodeBootstrapParams(Buffer.from(BootstrapParams.encode({
  instanceId: 'c1', namespace: 'default', logLevel: 0, containerdVersion: 'v2.3.0', containerdTtrpcAddress: '',
  containerdGrpcAddress: '', containerdBinary: '', extensions: [], socketDir: undefined,
}).finish()));

const profile = (p: Partial<CallerProfile>): CallerProfile => ({
  bootstrap: undefined, maxShimVersion: 0, containerdMajor: undefined, preferred: undefined, ...p,
});

describe('start answer per containerd version', () => {
  const address = 'unix:///run/containerd/s/0123';

  it('1.6 (no MAX_SHIM_VERSION): the bare address, task v2 over ttrpc', () => {
    const answer = chooseAnswer(profile({}));
    assert.deepEqual(answer, { format: 'plain', version: 2, protocol: 'ttrpc' });
    assert.equal(renderTextAnswer(answer, address), address);
    // Not even a preferred gRPC changes that: 1.6 cannot speak it.
    assert.equal(chooseAnswer(profile({ preferred: 'grpc' })).format, 'plain');
  });

  it('1.7 (MAX_SHIM_VERSION=2, containerd 1.x): JSON version 2 over ttrpc, or gRPC when preferred', () => {
    const answer = chooseAnswer(profile({ maxShimVersion: 2, containerdMajor: 1 }));
    assert.deepEqual(answer, { format: 'json', version: 2, protocol: 'ttrpc' });
    assert.deepEqual(JSON.parse(renderTextAnswer(answer, address)), { version: 2, address, protocol: 'ttrpc' });
    assert.deepEqual(chooseAnswer(profile({ maxShimVersion: 2, containerdMajor: 1, preferred: 'grpc' })), { format: 'json', version: 2, protocol: 'grpc' });
  });

  it('2.0-2.2 (MAX_SHIM_VERSION=2, containerd 2.x): JSON version 3 over gRPC, or ttrpc when preferred', () => {
    assert.deepEqual(chooseAnswer(profile({ maxShimVersion: 2, containerdMajor: 2 })), { format: 'json', version: 3, protocol: 'grpc' });
    assert.deepEqual(chooseAnswer(profile({ maxShimVersion: 2, containerdMajor: 2, preferred: 'ttrpc' })), { format: 'json', version: 3, protocol: 'ttrpc' });
    assert.deepEqual(chooseAnswer(profile({ maxShimVersion: 3 })), { format: 'json', version: 3, protocol: 'grpc' });
  });

  it('an unknown containerd >= 1.7 gets what both 1.7 and 2.x accept: version 2 over ttrpc', () => {
    assert.deepEqual(chooseAnswer(profile({ maxShimVersion: 2 })), { format: 'json', version: 2, protocol: 'ttrpc' });
    assert.deepEqual(chooseAnswer(profile({ maxShimVersion: 2, preferred: 'grpc' })), { format: 'json', version: 2, protocol: 'ttrpc' });
  });

  it('2.3+ (BootstrapParams on stdin): a protobuf BootstrapResult, version 3 over gRPC', () => {
    assert.deepEqual(chooseAnswer(profile({ bootstrap, maxShimVersion: 2 })), { format: 'protobuf', version: 3, protocol: 'grpc' });
    assert.deepEqual(chooseAnswer(profile({ bootstrap, preferred: 'ttrpc' })), { format: 'protobuf', version: 3, protocol: 'ttrpc' });
    assert.throws(() => renderTextAnswer({ format: 'protobuf', version: 3, protocol: 'grpc' }, address), /not text/);
  });

  it('each answer is accepted by the containerd version it is meant for', () => {
    const cases: Array<[Parameters<typeof parseStartAnswer>[0], CallerProfile]> = [
      ['1.6', profile({})],
      ['1.7', profile({ maxShimVersion: 2, containerdMajor: 1 })],
      ['1.7', profile({ maxShimVersion: 2, containerdMajor: 1, preferred: 'grpc' })],
      ['1.7', profile({ maxShimVersion: 2 })],
      ['2.0', profile({ maxShimVersion: 2 })],
      ['2.0', profile({ maxShimVersion: 2, containerdMajor: 2 })],
      ['2.0', profile({ maxShimVersion: 2, containerdMajor: 2, preferred: 'ttrpc' })],
    ];
    for (const [version, p] of cases) {
      const answer = chooseAnswer(p);
      const connection = parseStartAnswer(version, Buffer.from(renderTextAnswer(answer, address)));
      assert.deepEqual(connection, { version: answer.version, address, protocol: answer.protocol }, `${version}: ${JSON.stringify(p)}`);
    }
    // And the version-3 answer is refused by 1.7, which is why 1.7 must be told from 2.x.
    assert.throws(() => parseStartAnswer('1.7', Buffer.from(renderTextAnswer(chooseAnswer(profile({ maxShimVersion: 2, containerdMajor: 2 })), address))), /unsupported shim version \(3\)/);
  });

  it('reads containerd\'s version only where it decides the answer', () => {
    assert.equal(needsContainerdMajor(profile({})), false);
    assert.equal(needsContainerdMajor(profile({ bootstrap, maxShimVersion: 2 })), false);
    assert.equal(needsContainerdMajor(profile({ maxShimVersion: 2 })), true);
    assert.equal(needsContainerdMajor(profile({ maxShimVersion: 3 })), false);
  });

  it('rejects a malformed MAX_SHIM_VERSION or SMOLVM_SHIM_PROTOCOL by name', () => {
    assert.equal(parseMaxShimVersion({}), 0);
    assert.equal(parseMaxShimVersion({ MAX_SHIM_VERSION: '2' }), 2);
    assert.throws(() => parseMaxShimVersion({ MAX_SHIM_VERSION: 'two' }), /MAX_SHIM_VERSION="two" is not a version number/);
    assert.equal(parsePreferredProtocol({ SMOLVM_SHIM_PROTOCOL: 'auto' }), undefined);
    assert.equal(parsePreferredProtocol({ SMOLVM_SHIM_PROTOCOL: 'grpc' }), 'grpc');
    assert.throws(() => parsePreferredProtocol({ SMOLVM_SHIM_PROTOCOL: 'http' }), /SMOLVM_SHIM_PROTOCOL="http": want ttrpc, grpc or auto/);
  });
});

describe('containerd major version from its binary (Go build info)', () => {
  let dir: string;
  before(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-ctrd-')); });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('reads 1 for a 1.x build and 2 for a 2.x build', () => {
    makeFakeContainerdBinary(path.join(dir, 'c1'), 'github.com/containerd/containerd/cmd/containerd');
    makeFakeContainerdBinary(path.join(dir, 'c2'), 'github.com/containerd/containerd/v2/cmd/containerd');
    assert.equal(containerdMajorFromBinary(path.join(dir, 'c1')), 1);
    assert.equal(containerdMajorFromBinary(path.join(dir, 'c2')), 2);
  });

  it('reads this machine\'s containerd (Debian 1.6) as 1', function () {
    if (!fs.existsSync('/usr/bin/containerd')) skipBecause(this, { lacks: 'containerd', detail: 'no /usr/bin/containerd' });
    assert.equal(containerdMajorFromBinary('/usr/bin/containerd'), 1);
  });

  it('prefers the module line and ignores other programs', () => {
    assert.equal(containerdMajorOf({ goVersion: 'go1.22', path: 'x/cmd', module: 'github.com/containerd/containerd/v2', moduleVersion: 'v2.1.0' }), 2);
    assert.equal(containerdMajorOf({ goVersion: 'go1.22', path: 'github.com/containerd/containerd-foo/cmd', module: '', moduleVersion: '' }), undefined);
    makeFakeContainerdBinary(path.join(dir, 'other'), 'example.com/not/containerd');
    assert.equal(containerdMajorFromBinary(path.join(dir, 'other')), undefined);
  });

  it('gives undefined, never an error, for anything else', () => {
    const text = path.join(dir, 'script');
    fs.writeFileSync(text, '#!/bin/sh\necho containerd github.com/containerd/containerd/v2 v2.0.0\n');
    const truncated = path.join(dir, 'truncated');
    makeFakeContainerdBinary(truncated, 'github.com/containerd/containerd/v2/cmd/containerd');
    fs.truncateSync(truncated, 100);
    for (const file of [text, truncated, path.join(dir, 'absent'), dir, '']) assert.equal(containerdMajorFromBinary(file), undefined, file);
    assert.equal(parseGoBuildInfo(Buffer.alloc(64)), undefined);
  });
});
