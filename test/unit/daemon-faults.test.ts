// The checks that fail a test whose shim daemon logged an uncaught exception or an unhandled
// rejection must see the lines the daemon really writes (keepServingOnErrors, in a real node
// process logging to a FIFO as a daemon does), in a FIFO and in a long containerd log.
import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { daemonFaultsInFile } from '../../conformance/harness/containerd';
import { daemonFaultLines } from '../../shim/src/daemon-faults';
import { DaemonLogReader } from '../helpers/daemon-log';

const distShim = path.resolve(__dirname, '..', '..', 'shim', 'src');

describe('daemon fault detection in logs', function () {
  this.timeout(20_000);
  let dir: string;
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-faults-')); });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('a daemon that throws and rejects after it started serving is caught in its log FIFO', async () => {
    const fifo = path.join(dir, 'log');
    execFileSync('mkfifo', [fifo]);
    const reader = new DaemonLogReader(fifo);
    try {
      const script = `
        const { keepServingOnErrors } = require(${JSON.stringify(path.join(distShim, 'daemon.js'))});
        const { fdLogger, openLogFifo } = require(${JSON.stringify(path.join(distShim, 'log.js'))});
        const log = fdLogger(openLogFifo(${JSON.stringify(fifo)}), 'info', { runtime: 'smolvm' });
        keepServingOnErrors(() => log);
        log.info('shim daemon serving');
        setImmediate(() => { throw new Error('bang'); });
        void Promise.reject(new Error('boom'));
        setTimeout(() => process.exit(0), 200);`;
      const child = spawn(process.execPath, ['-e', script], { stdio: 'inherit' });
      assert.equal(await new Promise((resolve) => child.once('exit', resolve)), 0, 'it kept serving');
      await new Promise((r) => setTimeout(r, 100));
      const faults = reader.faults();
      assert.equal(faults.length, 2, reader.log);
      assert.ok(faults.some((l) => /uncaught exception.*bang/.test(l)), faults.join('\n'));
      assert.ok(faults.some((l) => /unhandled rejection.*boom/.test(l)), faults.join('\n'));
      assert.throws(() => reader.assertNoFaults(), /logged:/);
      assert.deepEqual(daemonFaultLines('level=info msg="shim daemon serving"'), [], 'an ordinary line is no fault');
    } finally {
      reader.close();
    }
  });

  it('finds fault lines anywhere in a long containerd log, across read chunks, from an offset', () => {
    const file = path.join(dir, 'containerd.log');
    const filler = 'time="x" level=debug msg="shim chatter"\n'.repeat(150_000); // ~6 MiB: more than one chunk
    const fault = 'time="y" level=error msg="unhandled rejection (daemon keeps serving)" error="Error: boom"\n';
    fs.writeFileSync(file, fault + filler + fault + filler);
    assert.equal(daemonFaultsInFile(file).length, 2);
    assert.equal(daemonFaultsInFile(file, fault.length).length, 1);
    assert.deepEqual(daemonFaultsInFile(path.join(dir, 'missing.log')), []);
  });
});
