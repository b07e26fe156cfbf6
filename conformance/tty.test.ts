// Terminals through real ctr: `ctr run -t` and `ctr task exec -t`, driven through
// `script -qec "…" /dev/null` so ctr has a tty of its own (its size set with stty first). Output
// arrives (line ends \r\r\n: the guest pty's ONLCR, then script's own pty again; `tty` names
// the guest pty), `stty size` inside shows ctr's console size (ctr resizes
// the task's pty right after Start, hence the short wait for a non-zero size), stderr goes to
// the pty too, and the exit code comes back.
import * as assert from 'node:assert/strict';
import { CTR_BINARY, type PrivateContainerd } from './harness/containerd';
import { type RunResult, describeResult, runCommand } from './harness/exec';
import { describeConformance } from './harness/suite';

const SCRIPT_BINARY = '/usr/bin/script';
const ROWS = 33;
const COLS = 111;

/** Single-quotes a word for sh. */
const shq = (word: string): string => `'${word.replace(/'/g, `'\\''`)}'`;

/** Runs ctr with a pty of ROWS x COLS as its terminal (util-linux script). */
function ctrWithTty(containerd: PrivateContainerd, args: readonly string[], timeoutMs: number): Promise<RunResult> {
  const ctr = [CTR_BINARY, '--address', containerd.address, '-n', containerd.namespace, ...args].map(shq).join(' ');
  return runCommand(SCRIPT_BINARY, ['-qec', `stty rows ${ROWS} cols ${COLS}; exec ${ctr}`, '/dev/null'], { timeoutMs });
}

/** Inside the container: wait (briefly) for ctr's resize, then print the size. */
const PRINT_SIZE =
  'i=0; s=$(stty size 2>/dev/null); while { [ -z "$s" ] || [ "$s" = "0 0" ]; } && [ $i -lt 100 ]; do ' +
  'sleep 0.1; i=$((i+1)); s=$(stty size 2>/dev/null); done; echo "size $s"';

describeConformance('tty (ctr -t through script)', (test) => {
  test('ctr run -t: output through the pty, stty size, exit code', 120_000, async (env) => {
    const id = env.newId('runtty');
    const script = `${PRINT_SIZE}; tty; echo to-stderr >&2; exit 5`;
    const result = await ctrWithTty(env.containerd, ['run', '--rm', '-t', '--runtime', env.runtime, env.image.ref, id, 'sh', '-c', script], 90_000);
    const text = result.stdout.toString();
    assert.equal(result.exitCode, 5, describeResult(result));
    assert.match(text, new RegExp(`size ${ROWS} ${COLS}\\r+\\n`), describeResult(result));
    assert.match(text, /\/dev\/pts\/\d+\r+\n/, `the process has a pty\n${describeResult(result)}`);
    assert.match(text, /to-stderr\r+\n/, `stderr goes to the pty\n${describeResult(result)}`);
  });

  test('ctr task exec -t: output through the pty, stty size, exit code', 180_000, async (env) => {
    const { containerd } = env;
    const id = env.newId('exectty');
    const started = await env.run(id, ['sleep', '600'], { keep: true, ctrFlags: ['-d'], timeoutMs: 60_000 });
    assert.equal(started.exitCode, 0, describeResult(started));
    const script = `${PRINT_SIZE}; tty; exit 4`;
    const result = await ctrWithTty(containerd, ['tasks', 'exec', '-t', '--exec-id', 'tty1', id, 'sh', '-c', script], 90_000);
    const text = result.stdout.toString();
    assert.equal(result.exitCode, 4, describeResult(result));
    assert.match(text, new RegExp(`size ${ROWS} ${COLS}\\r+\\n`), describeResult(result));
    assert.match(text, /\/dev\/pts\/\d+\r+\n/, describeResult(result));

    // A plain exec next to it still has pipes: no pty.
    const plain = await containerd.ctr(['tasks', 'exec', '--exec-id', 'plain', id, 'sh', '-c', 'tty; exit 0'], { timeoutMs: 60_000 });
    assert.match(plain.stdout.toString(), /not a tty/, describeResult(plain));

    await containerd.ctrChecked(['tasks', 'kill', '-s', 'SIGKILL', id], { timeoutMs: 30_000 });
    for (let i = 0; i < 100; i++) {
      const rm = await containerd.ctr(['tasks', 'rm', id], { timeoutMs: 30_000 });
      if (rm.exitCode === 0) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    await containerd.ctrChecked(['containers', 'rm', id], { timeoutMs: 30_000 });
  });
});
