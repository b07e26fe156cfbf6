#!/usr/bin/env node
// The closing summary of `scripts/setup.sh test`: one line of counts over every suite (mocha's
// "N passing", the C tests' "N checks"), then every skipped test with its reason (recorded by
// test/helpers/ci-reporter.ts from test/helpers/skip.ts). Fails (exit 1) when a test skipped
// for want of something this machine has (root, containerd, /dev/kvm, or anything setup.sh
// provides, which it just did), or skipped without saying why.
//   node scripts/ci-summary.js <test output file> <skip log (JSON lines)>
'use strict';
const fs = require('node:fs');

function read(file) {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Whether this machine has what a `lacks` skip said was missing. */
function machineHas(feature) {
  switch (feature) {
    case 'root': return typeof process.getuid === 'function' && process.getuid() === 0;
    case 'containerd': return fs.existsSync('/usr/bin/containerd');
    case 'kvm': return fs.existsSync('/dev/kvm');
    case 'setup': return true; // setup.sh installed and built everything before the tests
    default: return false;
  }
}

function main(outputFile, skipLogFile) {
  const output = read(outputFile);
  let passed = 0;
  let failed = 0;
  let pending = 0;
  for (const line of output.split('\n')) {
    let m;
    if ((m = /^ *(\d+) passing/.exec(line))) passed += Number(m[1]);
    else if ((m = /^ *(\d+) failing/.exec(line))) failed += Number(m[1]);
    else if ((m = /^ *(\d+) pending/.exec(line))) pending += Number(m[1]);
    else if ((m = /^(\d+) checks, (\d+) failures/.exec(line))) {
      passed += Number(m[1]) - Number(m[2]);
      failed += Number(m[2]);
    }
  }
  const skips = read(skipLogFile).split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
  console.log(`${passed} passed, ${failed} failed, ${pending} skipped`);
  const mustRun = [];
  for (const s of skips) {
    const why = s.lacks ? `this machine lacks ${s.lacks}: ${s.detail}` : s.notHere ? `not applicable here: ${s.notHere}` : 'no reason given';
    console.log(`  skipped: ${s.test}: ${why}`);
    if (s.lacks && machineHas(s.lacks)) mustRun.push(s);
  }
  const unexplained = pending - skips.filter((s) => s.lacks || s.notHere).length;
  let ok = true;
  if (mustRun.length > 0) {
    ok = false;
    console.log(`FAIL: ${mustRun.length} test(s) skipped for want of what this machine has (${[...new Set(mustRun.map((s) => s.lacks))].join(', ')}): these suites must run here`);
  }
  if (unexplained > 0) {
    ok = false;
    console.log(`FAIL: ${unexplained} skipped test(s) gave no reason (skip with test/helpers/skip.ts skipBecause)`);
  }
  return ok ? 0 : 1;
}

if (require.main === module) {
  const [outputFile, skipLogFile] = process.argv.slice(2);
  if (!outputFile || !skipLogFile) {
    console.error('usage: node scripts/ci-summary.js <test output file> <skip log>');
    process.exit(2);
  }
  process.exit(main(outputFile, skipLogFile));
}

module.exports = { main };
