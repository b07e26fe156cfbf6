// `smolvm run` end to end on the tcg backend: a real guest kernel, smolvm-init, erofs image.
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { makeBusyboxRootfs } from '../helpers/rootfs';
import { removeWorkDir } from '../helpers/work-dir';

const repo = path.resolve(__dirname, '..', '..', '..');
const smolvm = path.join(repo, 'bin', 'smolvm');

describe('smolvm run (tcg)', function () {
  this.timeout(120_000);
  let work: string;
  let rootfs: string;
  let env: NodeJS.ProcessEnv;

  before(() => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-run-'));
    rootfs = makeBusyboxRootfs(work);
    env = { ...process.env, SMOLVM_ROOT: path.join(work, 'smolvm') };
  });
  after(() => removeWorkDir(work));

  const run = (args: string[], input?: string) =>
    spawnSync(smolvm, ['run', '--backend', 'tcg', '--rootfs', rootfs, '--', ...args], { env, input, timeout: 90_000 });

  it('runs a command in the guest and returns its output and exit code', () => {
    const r = run(['sh', '-c', 'uname -r; echo to-stderr >&2; exit 3']);
    assert.equal(r.status, 3, r.stderr.toString());
    assert.notEqual(r.stdout.toString().trim(), os.release());
    assert.equal(r.stderr.toString(), 'to-stderr\n');
  });

  it('passes stdin through to EOF', () => {
    const r = run(['sh', '-c', 'wc -c'], 'x'.repeat(100_000));
    assert.equal(r.status, 0, r.stderr.toString());
    assert.equal(r.stdout.toString().trim(), '100000');
  });

  it('keeps writes to / inside the container', () => {
    const r = run(['sh', '-c', 'echo data > /newfile && cat /newfile']);
    assert.equal(r.stdout.toString(), 'data\n');
    assert.equal(r.status, 0, r.stderr.toString());
    assert.equal(fs.existsSync(path.join(rootfs, 'newfile')), false, 'the host rootfs is untouched');
  });

  it('fails fast and clearly when the binary is missing, leaving no VM behind', () => {
    const r = run(['/bin/nope']);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr.toString(), /nope/);
    assert.deepEqual(fs.readdirSync(path.join(work, 'smolvm', 'run', 'vms')), []);
    const dataDirs = path.join(work, 'smolvm', 'lib', 'vms');
    assert.deepEqual(fs.existsSync(dataDirs) ? fs.readdirSync(dataDirs) : [], [], 'no VM data dir left');
  });

  it('rejects bad arguments with a usage message', () => {
    const r = spawnSync(smolvm, ['run', '--rootfs'], { env });
    assert.equal(r.status, 125);
    assert.match(r.stderr.toString(), /--rootfs needs a value/);
  });
});
