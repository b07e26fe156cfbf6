// The exec process spec from containerd (JSON OCI Process in an Any) and its mapping to the
// agent's Process (terminal, console size).
import { strict as assert } from 'node:assert';
import { Code, RpcError } from '../../shim/src/errdefs';
import { agentProcess } from '../../shim/src/oci/agent-process';
import { OCI_PROCESS_TYPE_URL, parseExecProcessSpec } from '../../shim/src/task/exec-spec';

const any = (value: unknown, typeUrl = OCI_PROCESS_TYPE_URL) => ({
  typeUrl, value: Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)),
});

const invalid = (pattern: RegExp) => (err: unknown): boolean => {
  assert.ok(err instanceof RpcError, String(err));
  assert.equal(err.code, Code.InvalidArgument);
  assert.match(err.message, pattern);
  return true;
};

describe('exec process spec', () => {
  const what = 'container c1 exec "e1"';
  const good = { args: ['sh', '-c', 'echo hi'], env: ['A=1'], cwd: '/tmp', user: { uid: 1000, gid: 100 }, terminal: true, consoleSize: { height: 24, width: 80 } };

  it('decodes containerd\'s JSON Process', () => {
    const proc = parseExecProcessSpec(any(good), what);
    assert.deepEqual(proc.args, ['sh', '-c', 'echo hi']);
    assert.equal(proc.cwd, '/tmp');
    assert.equal(proc.user.uid, 1000);
  });

  it('refuses a missing spec, a foreign type, bad JSON and bad fields, naming the exec', () => {
    assert.throws(() => parseExecProcessSpec(undefined, what), invalid(/container c1 exec "e1": the request has no process spec/));
    assert.throws(() => parseExecProcessSpec(any(good, 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources'), what),
      invalid(/has type .*LinuxResources.*want types\.containerd\.io\/opencontainers\/runtime-spec\/1\/Process/));
    assert.throws(() => parseExecProcessSpec(any('{"args": ['), what), invalid(/not valid JSON/));
    assert.throws(() => parseExecProcessSpec(any({ ...good, args: [] }), what), invalid(/process\.args must name the program/));
    assert.throws(() => parseExecProcessSpec(any({ ...good, cwd: 'rel' }), what), invalid(/process\.cwd must be an absolute path/));
    assert.throws(() => parseExecProcessSpec(any({ ...good, user: { uid: -1, gid: 0 } }), what), invalid(/process\.user\.uid/));
    assert.throws(() => parseExecProcessSpec(any('"just a string"'), what), invalid(/process must be an object/));
  });

  it('maps terminal and console size to the agent (size only with a terminal)', () => {
    const proc = parseExecProcessSpec(any(good), what);
    assert.deepEqual(agentProcess(proc, true).consoleSize, { height: 24, width: 80 });
    assert.equal(agentProcess(proc, false).consoleSize, undefined);
    assert.equal(agentProcess(proc, false).terminal, false);
    assert.deepEqual(agentProcess({ ...proc, consoleSize: { height: 1e9, width: -3 } }, true).consoleSize, { height: 0xffff, width: 0 });
  });
});
