import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Writable } from 'node:stream';
import { Code, RpcError } from '../../shim/src/errdefs';
import { startBinaryLogger } from '../../shim/src/stdio/binary';
import { openLogFile } from '../../shim/src/stdio/file';
import { openHostStdio } from '../../shim/src/stdio/host-stdio';

const write = (sink: Writable, data: string | Buffer): Promise<void> =>
  new Promise((resolve, reject) => sink.write(data, (err) => (err ? reject(err) : resolve())));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(check: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return check();
}

describe('stdio sinks', () => {
  let dir: string;
  let oldUmask: number;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'smolvm-stdio-'));
    oldUmask = process.umask(0o077); // as the daemon runs
  });
  afterEach(() => {
    process.umask(oldUmask);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  describe('file://', () => {
    it('creates parents 0755 and the file 0644 despite umask 077, and appends', async () => {
      const file = path.join(dir, 'a', 'b', 'c.log');
      const first = openLogFile(file);
      await write(first.sink, 'one\n');
      await first.close();
      assert.equal(fs.statSync(path.join(dir, 'a')).mode & 0o777, 0o755);
      assert.equal(fs.statSync(path.join(dir, 'a', 'b')).mode & 0o777, 0o755);
      assert.equal(fs.statSync(file).mode & 0o777, 0o644);
      fs.chmodSync(file, 0o600);
      const second = openLogFile(file);
      await write(second.sink, Buffer.from([0, 1, 2, 0xff]));
      await second.close();
      await second.close(); // idempotent
      assert.deepEqual(fs.readFileSync(file), Buffer.concat([Buffer.from('one\n'), Buffer.from([0, 1, 2, 0xff])]));
      assert.equal(fs.statSync(file).mode & 0o777, 0o600, 'an existing file keeps its mode');
    });

    it('a directory or an unwritable place is InvalidArgument naming the file', () => {
      assert.throws(() => openLogFile(dir), (e: unknown) => e instanceof RpcError && e.code === Code.InvalidArgument && e.message.includes(`cannot open log file ${dir}`));
      const blocker = path.join(dir, 'plainfile');
      fs.writeFileSync(blocker, '');
      assert.throws(() => openLogFile(path.join(blocker, 'x.log')), /cannot open log file .*plainfile\/x\.log/);
    });

    it('openHostStdio: stdout and stderr share one sink; terminal has no stderr', async () => {
      const file = path.join(dir, 'out.log');
      const uri = `file://${file}`;
      const stdio = await openHostStdio({ stdin: '', stdout: uri, stderr: uri, terminal: false }, { containerId: 'c', namespace: 'n' });
      assert.ok(stdio.stdout);
      assert.equal(stdio.stdout, stdio.stderr);
      await write(stdio.stdout!, 'out\n');
      await write(stdio.stderr!, 'err\n');
      stdio.close();
      await stdio.closed;
      assert.equal(fs.readFileSync(file, 'utf8'), 'out\nerr\n');
      const tty = await openHostStdio({ stdin: '', stdout: uri, stderr: uri, terminal: true }, { containerId: 'c', namespace: 'n' });
      assert.equal(tty.stderr, undefined);
      tty.close();
      await tty.closed;
    });

    it('openHostStdio: a file:// stdin, or stderr alone, is refused', async () => {
      const uri = `file://${path.join(dir, 'x.log')}`;
      await assert.rejects(openHostStdio({ stdin: uri, stdout: '', stderr: '', terminal: false }, { containerId: 'c', namespace: 'n' }), /stdin: file:\/\/ is for output only/);
      await assert.rejects(openHostStdio({ stdin: '', stdout: '', stderr: uri, terminal: false }, { containerId: 'c', namespace: 'n' }), /stderr: file:\/\/ needs stdout to be the same URI/);
    });
  });

  describe('binary://', () => {
    function logger(name: string, body: string): string {
      const file = path.join(dir, name);
      fs.writeFileSync(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
      return file;
    }

    it('spawns it with the query args and its env, feeds fd 3 and 4, waits for fd 5', async () => {
      const out = path.join(dir, 'out');
      const script = logger('log.sh', [
        `echo "$@" > ${dir}/args; echo "$CONTAINER_ID $CONTAINER_NAMESPACE $HOME" > ${dir}/env`,
        'sleep 0.2', // ready is awaited: nothing may be written before it
        `echo ready > ${dir}/ready`,
        'exec 5>&-',
        `cat <&3 > ${out}.1 & cat <&4 > ${out}.2 & wait`,
      ].join('\n'));
      const stdio = await openHostStdio(
        { stdin: '', stdout: `binary://${script}?k=v&flag`, stderr: `binary://${script}?k=v&flag`, terminal: false },
        { containerId: 'ctr1', namespace: 'ns1' },
      );
      assert.ok(fs.existsSync(path.join(dir, 'ready')), 'openHostStdio returned before the logger was ready');
      const payload = Buffer.from(Array.from({ length: 70_000 }, (_, i) => i % 256));
      await write(stdio.stdout!, payload);
      await write(stdio.stderr!, 'to stderr\n');
      stdio.close();
      await stdio.closed;
      assert.equal(fs.readFileSync(path.join(dir, 'args'), 'utf8'), 'k v flag \n');
      assert.equal(fs.readFileSync(path.join(dir, 'env'), 'utf8'), 'ctr1 ns1 \n');
      assert.deepEqual(fs.readFileSync(`${out}.1`), payload);
      assert.equal(fs.readFileSync(`${out}.2`, 'utf8'), 'to stderr\n');
    });

    it('a missing or non-executable binary is a clear InvalidArgument', async () => {
      await assert.rejects(startBinaryLogger({ path: path.join(dir, 'nope'), args: [], containerId: 'c', namespace: 'n' }),
        (e: unknown) => e instanceof RpcError && e.code === Code.InvalidArgument && /logging binary .*nope does not exist/.test(e.message));
      const plain = path.join(dir, 'plain');
      fs.writeFileSync(plain, 'x', { mode: 0o644 });
      await assert.rejects(startBinaryLogger({ path: plain, args: [], containerId: 'c', namespace: 'n' }), /plain is not executable/);
    });

    it('a logger that fails before ready, or never gets ready, is reported and gone', async () => {
      // Closing fd 5 means ready, even on the way out (containerd reads EOF as ready too).
      const early = await startBinaryLogger({ path: logger('fail.sh', 'exec 5>&-; exit 3'), args: [], containerId: 'c', namespace: 'n' });
      await early.close();
      const pidFile = path.join(dir, 'slow.pid');
      await assert.rejects(
        startBinaryLogger({ path: logger('slow.sh', `echo $$ > ${pidFile}; exec sleep 30`), args: [], containerId: 'c', namespace: 'n', readyTimeoutMs: 300, drainGraceMs: 50 }),
        /slow\.sh did not signal ready on fd 5 within 300 ms/);
      const pid = Number(fs.readFileSync(pidFile, 'utf8'));
      assert.ok(!alive(pid), `logger ${pid} left running`);
    });

    it('close: SIGTERM after the drain grace, SIGKILL when it ignores that', async () => {
      const pidFile = path.join(dir, 'stubborn.pid');
      const l = await startBinaryLogger({
        path: logger('stubborn.sh', `trap '' TERM; echo $$ > ${pidFile}; exec 5>&-; while :; do sleep 0.05; done`),
        args: [], containerId: 'c', namespace: 'n', drainGraceMs: 50, termGraceMs: 200,
      });
      const started = Date.now();
      await l.close();
      assert.ok(Date.now() - started >= 240, 'waited through both graces');
      assert.ok(await waitFor(() => !alive(l.pid), 1000), 'logger still alive after close');
    });
  });
});
