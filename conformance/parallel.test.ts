// Several containers at once: each gets its own output and exit code, none mixes with another.
import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describeResult } from './harness/exec';
import { describeConformance } from './harness/suite';

const PARALLEL_RUNS = 4;

describeConformance('parallel runs', (test) => {
  test(`${PARALLEL_RUNS} runs in parallel are all correct`, 180_000, async (env) => {
    let numbers = '';
    for (let i = 1; i <= 20_000; i++) numbers += `${i}\n`;
    const expectedHash = createHash('sha256').update(numbers).digest('hex');

    const ids = Array.from({ length: PARALLEL_RUNS }, (_unused, i) => env.newId(`par${i}`));
    const results = await Promise.all(
      ids.map((id, i) =>
        env.run(id, ['sh', '-c', `echo "begin ${id}"; seq 1 20000 | sha256sum; echo "end ${id}"; exit ${10 + i}`], {
          timeoutMs: 150_000,
        }),
      ),
    );
    results.forEach((result, i) => {
      const id = ids[i] ?? '';
      assert.equal(result.exitCode, 10 + i, describeResult(result));
      assert.equal(result.stdout.toString(), `begin ${id}\n${expectedHash}  -\nend ${id}\n`, describeResult(result));
    });
  });
});
