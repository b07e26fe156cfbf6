#!/usr/bin/env node
// Generates static, typed TypeScript for every .proto under proto/ into shim/src/gen/
// (protoc from Debian's protobuf-compiler + the ts-proto plugin). Run at build time so that
// nothing parses .proto files at run time.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const protoDir = path.join(root, 'proto');
const outDir = path.join(root, 'shim', 'src', 'gen');
const plugin = path.join(root, 'node_modules', '.bin', 'protoc-gen-ts_proto');

function listProtos(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return listProtos(p);
    return e.name.endsWith('.proto') ? [path.relative(protoDir, p)] : [];
  });
}

try {
  execFileSync('protoc', ['--version'], { stdio: 'ignore' });
} catch {
  console.error('gen-proto: protoc not found; install Debian package protobuf-compiler');
  process.exit(1);
}
fs.rmSync(outDir, { recursive: true, force: true });
fs.mkdirSync(outDir, { recursive: true });
const common = [
  'esModuleInterop=true',
  'useDate=false',
  'outputServices=generic-definitions',
  'outputJsonMethods=false',
  'outputPartialMethods=true',
  'useOptionals=none',
  'exportCommonSymbols=false',
  'env=node',
  'unrecognizedEnum=false',
];
// 64-bit fields: containerd's (timestamps, timeouts) fit in a JS number; the agent API carries
// full-range uint64s (RLIM_INFINITY, nanosecond clocks), so its code uses bigint; so do the
// cgroup metrics (an unlimited memory.max is reported as 2^64-1).
const BIGINT_PROTOS = new Set(['smolvm/agent.proto', 'containerd/cgroups/v2/metrics.proto']);
function generate(files, forceLong) {
  if (files.length === 0) return;
  execFileSync('protoc', [
    `--plugin=protoc-gen-ts_proto=${plugin}`,
    `--ts_proto_out=${outDir}`,
    `--ts_proto_opt=${[...common, `forceLong=${forceLong}`].join(',')}`,
    `-I${protoDir}`,
    ...files,
  ], { stdio: 'inherit', cwd: root });
}
const all = listProtos(protoDir);
generate(all.filter((f) => !BIGINT_PROTOS.has(f)), 'number');
generate(all.filter((f) => BIGINT_PROTOS.has(f)), 'bigint');
console.log(`gen-proto: ${listProtos(protoDir).length} files -> ${path.relative(root, outDir)}`);
