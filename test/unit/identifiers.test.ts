// containerd's identifier rule, held twice: shim/src/util/identifiers.ts (every TypeScript entry
// point) and launcher/src/identifier.c (the launcher's start and delete). The TypeScript one is
// checked against containerd's own cases (pkg/identifiers validate_test.go); the C one against
// the TypeScript one, decision and message, through the launcher binary's `delete`.
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Code, RpcError } from '../../shim/src/errdefs';
import { IDENTIFIER_MAX_LENGTH, IDENTIFIER_RULE, identifierProblem, validateIdentifier } from '../../shim/src/util/identifiers';

const repo = path.resolve(__dirname, '..', '..', '..');
const launcher = process.env.SMOLVM_LAUNCHER_BIN || path.join(repo, 'bin', 'containerd-shim-smolvm-v1');

/** containerd's examples: what Validate accepts and refuses. */
const VALID = ['default', 'Default', 'default-default', 'containerd.io', 'foo.boo', 'swarmkit.docker.io', '0912341234',
  'task.0.0123456789', 'container.system-75-f19a.00', 'underscores_are_allowed', 'a', 'A-b_c.d', 'a'.repeat(IDENTIFIER_MAX_LENGTH)];
const INVALID = ['', '.foo..foo', 'foo/foo', 'foo/..', 'foo..foo', 'foo.-boo', '-foo', 'foo-', 'foo_', '_foo', 'foo.', '.foo',
  'foo@bar', 'foo:bar', 'foo bar', 'a__b', 'a--b', '..', '.', '../x', '/abs', 'a/b', 'é', 'a\nb', 'a\tb',
  'a'.repeat(IDENTIFIER_MAX_LENGTH + 1), 'a'.repeat(300)];

describe('containerd identifiers (shim/src/util/identifiers.ts)', () => {
  it('accepts what containerd accepts and refuses what it refuses', () => {
    for (const id of VALID) assert.equal(identifierProblem('container id', id), undefined, id);
    for (const id of INVALID) assert.notEqual(identifierProblem('container id', id), undefined, JSON.stringify(id));
  });

  it('names what, the value and the rule; says why when empty or too long', () => {
    const rule = `containerd identifiers must match ${IDENTIFIER_RULE} with at most 76 characters`;
    assert.equal(IDENTIFIER_RULE, '^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$');
    assert.equal(identifierProblem('container id', '../x'), `invalid container id "../x": ${rule}`);
    assert.equal(identifierProblem('namespace', ''), `invalid namespace "": it is empty; ${rule}`);
    assert.equal(identifierProblem('exec id', 'a'.repeat(300)), `invalid exec id "${'a'.repeat(300)}": it is 300 bytes long; ${rule}`);
    // Length in bytes, as Go's len(): 40 two-byte characters are 80 bytes.
    assert.match(identifierProblem('namespace', 'é'.repeat(40))!, /: it is 80 bytes long; /);
    // Control characters are quoted, never written raw into a log line.
    assert.match(identifierProblem('namespace', 'a\nb')!, /^invalid namespace "a\\nb": containerd/);
  });

  it('throws InvalidArgument (errdefs code 3), after a context when given', () => {
    assert.doesNotThrow(() => validateIdentifier('container id', 'c1'));
    assert.throws(() => validateIdentifier('container id', '/abs', 'delete'), (err: unknown) =>
      err instanceof RpcError && err.code === Code.InvalidArgument && err.code === 3 &&
      err.message.startsWith('delete: invalid container id "/abs": containerd identifiers must match'));
  });
});

describe('containerd identifiers in C (launcher/src/identifier.c, through the launcher)', function () {
  this.timeout(60_000);
  let root: string;

  before(function () {
    if (!fs.existsSync(launcher)) {
      // setup.sh builds the launcher with the rest: a missing binary is a broken build, not a skip.
      assert.fail(`the launcher is not built (${launcher}): run \`make -C launcher\``);
    }
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-identifier-'));
  });

  after(() => {
    if (root) fs.rmSync(root, { recursive: true, force: true });
  });

  /** `delete` of a container with no state: exit 0 for an identifier, else 1 and the message. */
  function launcherDelete(namespace: string, id: string): { code: number | null; stderr: string } {
    const r = spawnSync(launcher, ['-namespace', namespace, '-id', id, '-bundle', root, 'delete'], {
      cwd: root,
      // No node on PATH: a hand-over to node would fail, and say so.
      env: { PATH: path.join(root, 'no-node'), SMOLVM_ROOT: path.join(root, 'smolvm') },
      encoding: 'utf8',
    });
    return { code: r.status, stderr: r.stderr };
  }

  it('takes the same decision with the same message as the TypeScript rule, for ids and namespaces', () => {
    // containerd's cases, then random strings from an alphabet of separators and near misses.
    const alphabet = 'aZ09._-/@: é\\"\t';
    const random = Array.from({ length: 150 }, () => {
      const bytes = randomBytes(1 + (randomBytes(1)[0]! % 12));
      return Array.from(bytes, (b) => alphabet[b % alphabet.length]).join('');
    });
    for (const value of [...VALID, ...INVALID.filter((v) => v !== ''), ...random]) {
      for (const [what, namespace, id] of [['container id', 'ns', value], ['namespace', value, 'c1']] as const) {
        const r = launcherDelete(namespace, id);
        const problem = identifierProblem(what, value);
        if (problem === undefined) {
          assert.equal(r.code, 0, `${what} ${JSON.stringify(value)} is an identifier: ${r.stderr}`);
        } else {
          assert.equal(r.code, 1, `${what} ${JSON.stringify(value)}`);
          assert.equal(r.stderr, `containerd-shim-smolvm-v1: delete: ${problem}\n`);
        }
      }
    }
    // An empty id (an empty namespace is "default" for delete).
    const empty = launcherDelete('ns', '');
    assert.equal(empty.code, 1);
    assert.equal(empty.stderr, `containerd-shim-smolvm-v1: delete: ${identifierProblem('container id', '')}\n`);
  });
});
