// Mocha's spec reporter plus a record of every skipped test and why (test/helpers/skip.ts),
// appended as JSON lines to $SMOLVM_TEST_SKIP_LOG: scripts/ci-summary.js lists them in the
// closing summary and fails CI on a skip that must not happen on a CI machine, or one that
// gave no reason. Selected in .mocharc.json for every suite.
import * as fs from 'node:fs';
import Mocha from 'mocha';
import { skipReasonOf } from './skip';

const { EVENT_TEST_PENDING, EVENT_RUN_END } = Mocha.Runner.constants;

interface SkipRecord {
  test: string;
  file: string;
  lacks?: string;
  notHere?: string;
  detail?: string;
}

class CiReporter extends Mocha.reporters.Spec {
  constructor(runner: Mocha.Runner, options?: Mocha.MochaOptions) {
    super(runner, options);
    const log = process.env.SMOLVM_TEST_SKIP_LOG;
    const skipped: SkipRecord[] = [];
    runner.on(EVENT_TEST_PENDING, (test: Mocha.Test) => {
      const reason = skipReasonOf(test);
      const record: SkipRecord = { test: test.fullTitle(), file: test.file ?? '' };
      if (reason && 'lacks' in reason) Object.assign(record, { lacks: reason.lacks, detail: reason.detail });
      else if (reason) record.notHere = reason.notHere;
      skipped.push(record);
    });
    runner.once(EVENT_RUN_END, () => {
      if (!log || skipped.length === 0) return;
      fs.appendFileSync(log, skipped.map((r) => JSON.stringify(r)).join('\n') + '\n');
    });
  }
}

export = CiReporter;
