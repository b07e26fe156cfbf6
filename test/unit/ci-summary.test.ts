// Skips in CI must say why, and a skip for want of what the machine has fails CI: the reporter
// records reasons from a real mocha run, the summary judges them.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const repo = path.resolve(__dirname, '..', '..', '..');
const mocha = path.join(repo, 'node_modules', 'mocha', 'bin', 'mocha.js');
const summary = path.join(repo, 'scripts', 'ci-summary.js');
const skipModule = path.join(repo, 'dist', 'test', 'helpers', 'skip.js');

describe('CI skip reporting', function () {
  this.timeout(30_000);
  let dir: string;
  let runs = 0;
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-skips-')); });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** Runs mocha (with the project's .mocharc, so its reporter) on a fixture; returns output + skip log. */
  function runFixture(body: string): { output: string; log: string; logFile: string; outFile: string } {
    runs += 1;
    const fixture = path.join(dir, `fixture${runs}.test.js`);
    fs.writeFileSync(fixture, `const { skipBecause } = require(${JSON.stringify(skipModule)});\n${body}`);
    const logFile = path.join(dir, `skips${runs}.jsonl`);
    const r = spawnSync(process.execPath, [mocha, fixture], { cwd: repo, env: { ...process.env, SMOLVM_TEST_SKIP_LOG: logFile }, encoding: 'utf8' });
    const output = r.stdout + r.stderr;
    const outFile = path.join(dir, `out${runs}.txt`);
    fs.writeFileSync(outFile, output);
    return { output, log: fs.existsSync(logFile) ? fs.readFileSync(logFile, 'utf8') : '', logFile, outFile };
  }

  function judge(outFile: string, logFile: string): { status: number | null; text: string } {
    const r = spawnSync(process.execPath, [summary, outFile, logFile], { encoding: 'utf8' });
    return { status: r.status, text: r.stdout + r.stderr };
  }

  it('records each skip with its reason, also for every test of a suite skipped from its before hook', () => {
    const { log } = runFixture(`
      describe('suite', () => {
        it('runs', () => {});
        it('is not for this runtime', function () { skipBecause(this, { notHere: 'runc has no VMM' }); });
        describe('needs kvm', () => {
          before(function () { skipBecause(this, { lacks: 'kvm', detail: 'no /dev/kvm' }); });
          it('a', () => {});
          it('b', () => {});
        });
      });`);
    const records = log.trim().split('\n').map((l) => JSON.parse(l) as Record<string, string>);
    assert.deepEqual(records.map((r) => [r.test, r.notHere ?? r.lacks]), [
      ['suite is not for this runtime', 'runc has no VMM'],
      ['suite needs kvm a', 'kvm'],
      ['suite needs kvm b', 'kvm'],
    ]);
  });

  it('the summary lists the reasons and passes when every skip is not applicable here', () => {
    const { outFile, logFile } = runFixture(`it('x', function () { skipBecause(this, { notHere: 'a PVM-only case' }); }); it('y', () => {});`);
    const { status, text } = judge(outFile, logFile);
    assert.equal(status, 0, text);
    assert.match(text, /1 passed, 0 failed, 1 skipped/);
    assert.match(text, /skipped: x: not applicable here: a PVM-only case/);
  });

  it('the summary fails on a skip for want of what this machine has, and on a skip without a reason', () => {
    const lacking = runFixture(`it('needs setup', function () { skipBecause(this, { lacks: 'setup', detail: 'no guest kernel' }); });`);
    const judged = judge(lacking.outFile, lacking.logFile);
    assert.equal(judged.status, 1, judged.text);
    assert.match(judged.text, /FAIL: 1 test\(s\) skipped for want of what this machine has \(setup\)/);

    const bare = runFixture(`it('bare', function () { this.skip(); });`);
    const judgedBare = judge(bare.outFile, bare.logFile);
    assert.equal(judgedBare.status, 1, judgedBare.text);
    assert.match(judgedBare.text, /FAIL: 1 skipped test\(s\) gave no reason/);
  });
});
