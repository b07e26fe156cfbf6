// node's `start` (shim/src/bootstrap/start.ts) spawning the shim daemon and reading its answer
// on the ready pipe (fd 3), with a fake daemon: a small script run by node in place of the shim's
// entry, which answers as FAKE_DAEMON says. Each case runs startShim in a node process of its own
// (start reads its cwd as the bundle), with a temporary SMOLVM_ROOT and a namespace of its own,
// so that its socket path in /run/containerd/s cannot be anything real.
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { socketPath, toAddress, SOCKET_DIR } from '../../shim/src/bootstrap/address';

const dist = path.resolve(__dirname, '..', '..');
const CONTAINERD = '/x/containerd.sock';

/** The daemon start.ts spawns, as `node FAKE -namespace … daemon`: answers on fd 3 as told. */
const FAKE_DAEMON = `
const fs = require('node:fs');
const { spawn } = require('node:child_process');
const out = process.env.FAKE_OUT;
const mode = process.env.FAKE_DAEMON;
// Something the daemon started that keeps the ready pipe open after the daemon is gone.
const hold = () => {
  const holder = spawn('sleep', ['3'], { stdio: ['ignore', 'ignore', 'ignore', 3], detached: false });
  fs.writeFileSync(out + '/held-by', String(holder.pid));
  holder.unref();
};
switch (mode) {
  case 'ok-hold': hold(); fs.writeSync(3, 'ok'); process.exit(0);
  case 'error-hold': hold(); fs.writeSync(3, 'error: boom'); process.exit(1);
  case 'error': fs.writeSync(3, 'error: boom'); process.exit(1);
  case 'exit': process.exit(4);
  default: fs.writeSync(3, 'ok'); process.exit(0);
}
`;

describe('start.ts: the daemon\'s answer on the ready pipe', function () {
  this.timeout(30_000);
  let root: string;
  let bundle: string;
  let fakeOut: string;
  let fakeEntry: string;
  let ns: string;

  before(() => {
    // What start.ts (and the launcher) do on a machine where no shim ran yet.
    fs.mkdirSync(SOCKET_DIR, { recursive: true, mode: 0o711 });
  });

  beforeEach(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-start-'));
    bundle = path.join(root, 'bundle');
    fakeOut = path.join(root, 'out');
    fs.mkdirSync(bundle);
    fs.mkdirSync(fakeOut);
    fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify({ ociVersion: '1.0.2' }));
    fakeEntry = path.join(root, 'fake-daemon.js');
    fs.writeFileSync(fakeEntry, FAKE_DAEMON);
    ns = `smolvm-start-test-${process.pid}-${randomBytes(6).toString('hex')}`;
  });

  afterEach(() => {
    fs.rmSync(socketPath(CONTAINERD, ns, 'c1'), { force: true });
    fs.rmSync(root, { recursive: true, force: true });
  });

  /** startShim in a node process of its own: its answer or its error, and how long it took. */
  function start(fakeDaemon: string): { address?: string; error?: string; ms: number } {
    const driver = `
      process.chdir(${JSON.stringify(bundle)});
      const { parseShimFlags } = require(${JSON.stringify(path.join(dist, 'shim/src/bootstrap/flags.js'))});
      const { startShim } = require(${JSON.stringify(path.join(dist, 'shim/src/bootstrap/start.js'))});
      const flags = parseShimFlags(['-namespace', ${JSON.stringify(ns)}, '-address', ${JSON.stringify(CONTAINERD)},
        '-publish-binary', '/bin/false', '-id', 'c1', 'start']);
      startShim(flags, ${JSON.stringify(fakeEntry)}).then(
        (r) => process.stdout.write(JSON.stringify({ address: r.address })),
        (e) => process.stdout.write(JSON.stringify({ error: e.message })));`;
    const started = Date.now();
    const r = spawnSync(process.execPath, ['-e', driver], {
      input: Buffer.alloc(0), timeout: 20_000,
      env: { PATH: process.env.PATH, SMOLVM_ROOT: path.join(root, 'smolvm'), FAKE_OUT: fakeOut, FAKE_DAEMON: fakeDaemon },
    });
    assert.equal(r.status, 0, `driver: ${r.stderr.toString()}`);
    return { ...(JSON.parse(r.stdout.toString()) as { address?: string; error?: string }), ms: Date.now() - started };
  }

  const alive = (pid: number): boolean => {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      return !stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
    } catch {
      return false;
    }
  };

  it('takes "ok" and writes the bundle\'s address', () => {
    const r = start('ok');
    assert.deepEqual(r.error, undefined);
    assert.equal(r.address, toAddress(socketPath(CONTAINERD, ns, 'c1')));
    assert.equal(fs.readFileSync(path.join(bundle, 'address'), 'utf8'), r.address);
  });

  it('goes by what the daemon wrote before it exited, also when the exit is noticed first', () => {
    // Something the daemon started holds the pipe: its exit comes before EOF, every time.
    const ok = start('ok-hold');
    assert.equal(ok.error, undefined);
    assert.equal(ok.address, toAddress(socketPath(CONTAINERD, ns, 'c1')));
    assert.ok(ok.ms < 2_500, `without waiting for the pipe's holder (${ok.ms} ms)`);
    const holder = Number(fs.readFileSync(path.join(fakeOut, 'held-by'), 'utf8'));
    assert.ok(alive(holder), 'a ready daemon\'s group is left alone');
    process.kill(holder, 'SIGKILL');

    fs.rmSync(path.join(bundle, 'address'));
    const failed = start('error-hold');
    assert.equal(failed.error, 'shim daemon failed to start: error: boom');
    assert.equal(fs.existsSync(path.join(bundle, 'address')), false);
    const failedHolder = Number(fs.readFileSync(path.join(fakeOut, 'held-by'), 'utf8'));
    for (let i = 0; i < 100 && alive(failedHolder); i++) spawnSync('sleep', ['0.02']);
    assert.equal(alive(failedHolder), false, 'the failed daemon\'s group was killed');
  });

  it('reports the daemon\'s error, or an exit without a word, and writes no address', () => {
    assert.equal(start('error').error, 'shim daemon failed to start: error: boom');
    assert.equal(start('exit').error, 'shim daemon failed to start: exited during start (exit code 4) without a word');
    assert.equal(fs.existsSync(path.join(bundle, 'address')), false);
  });
});
