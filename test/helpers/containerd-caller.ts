// Plays containerd's side of the shim bootstrap for each containerd version that does not run
// on this machine: the argv, environment and stdin that version gives `start`, the way it
// parses the answer, and the task client it then builds (ttrpc task v2, ttrpc task v3 or gRPC
// task v3). Modeled on containerd's runtime/v2 (1.6, 1.7) and core/runtime/v2 (2.x) sources.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { BootstrapParams, BootstrapResult } from '../../shim/src/gen/containerd/bootstrap/v1/bootstrap';
import { TaskDefinition } from '../../shim/src/gen/containerd/task/v2/shim';
import { TaskDefinition as TaskV3Definition } from '../../shim/src/gen/containerd/task/v3/shim';
import { Any } from '../../shim/src/gen/google/protobuf/any';
import { GrpcClient } from '../../shim/src/grpc/client';
import { TtrpcClient } from '../../shim/src/ttrpc/client';
import type { MethodKey, RequestOf, ResponseOf, ServiceDefinition } from '../../shim/src/ttrpc/service';

export type ContainerdVersion = '1.6' | '1.7' | '2.0' | '2.3';

/** What containerd keeps of a `start` answer (containerd's client.BootstrapParams). */
export interface ShimConnection {
  version: number;
  address: string;
  protocol: string;
}

export interface StartCall {
  shimBin: string;
  id: string;
  namespace: string;
  bundle: string;
  /** containerd's gRPC socket path (the -address flag). */
  containerdAddress: string;
  ttrpcAddress: string;
  /** containerd's own binary (the -publish-binary flag): see makeFakeContainerdBinary. */
  publishBinary: string;
  /** Runtime options (an Any), e.g. runtimeoptions.v1.Options from CRI. */
  runtimeOptions?: Any;
  /** 2.3+: BootstrapParams.socket_dir. */
  socketDir?: string;
  /** Extra environment (e.g. SMOLVM_ROOT for tests). */
  env?: NodeJS.ProcessEnv;
  debug?: boolean;
}

export interface StartOutcome {
  /** The bytes `start` printed (containerd reads stdout and stderr combined). */
  output: Buffer;
  connection: ShimConnection;
}

/** Runs `start` as containerd `version` would, and parses the answer as that version does. */
export function startAs(version: ContainerdVersion, call: StartCall): StartOutcome {
  const args = ['-namespace', call.namespace, '-address', call.containerdAddress, '-publish-binary', call.publishBinary, '-id', call.id];
  if (call.debug) args.push('-debug');
  args.push('start');
  const env: NodeJS.ProcessEnv = { ...process.env, ...call.env, TTRPC_ADDRESS: call.ttrpcAddress };
  delete env.MAX_SHIM_VERSION;
  delete env.GRPC_ADDRESS;
  delete env.NAMESPACE;
  let stdin = call.runtimeOptions ? Buffer.from(Any.encode(call.runtimeOptions).finish()) : Buffer.alloc(0);
  if (version !== '1.6') {
    // 1.7+ (runtime/v2/shim/util.go Command): GOMAXPROCS, MAX_SHIM_VERSION=2, GRPC_ADDRESS, NAMESPACE.
    Object.assign(env, { GOMAXPROCS: '2', MAX_SHIM_VERSION: '2', GRPC_ADDRESS: call.containerdAddress, NAMESPACE: call.namespace });
  }
  if (version === '2.3') {
    // core/runtime/v2/command.go: the flags and environment stay; stdin is BootstrapParams, with
    // the runtime options as an extension.
    stdin = Buffer.from(BootstrapParams.encode({
      instanceId: call.id,
      namespace: call.namespace,
      logLevel: call.debug ? -4 : 0,
      containerdVersion: 'v2.3.0',
      containerdTtrpcAddress: call.ttrpcAddress,
      containerdGrpcAddress: call.containerdAddress,
      containerdBinary: call.publishBinary,
      extensions: call.runtimeOptions ? [{ value: call.runtimeOptions }] : [],
      socketDir: call.socketDir,
    }).finish());
  }
  const r = spawnSync(call.shimBin, args, { cwd: call.bundle, env, input: stdin, timeout: 20_000 });
  const output = Buffer.concat([r.stdout ?? Buffer.alloc(0), r.stderr ?? Buffer.alloc(0)]);
  if (r.status !== 0) throw new Error(`start (as containerd ${version}) failed with ${r.status ?? r.signal}: ${output.toString()}`);
  return { output, connection: parseStartAnswer(version, output) };
}

/** The answer, parsed the way containerd `version` parses it, with the checks it makes. */
export function parseStartAnswer(version: ContainerdVersion, output: Buffer): ShimConnection {
  if (version === '1.6') return { version: 2, address: output.toString().trim(), protocol: 'ttrpc' };
  let connection: ShimConnection | undefined;
  if (version === '2.3') {
    // protobuf first (2.3+), then JSON, then a bare address.
    try {
      const result = BootstrapResult.decode(output);
      if (result.address) connection = { version: result.version, address: result.address, protocol: result.protocol };
    } catch {
      // not protobuf
    }
  }
  if (!connection) {
    const text = output.toString().trim();
    try {
      const json = JSON.parse(text) as Partial<ShimConnection>;
      if (typeof json.version === 'number' && json.version >= 2) {
        connection = { version: json.version, address: String(json.address ?? ''), protocol: String(json.protocol ?? '') };
      }
    } catch {
      // a bare address
    }
    connection ??= { version: 2, address: text, protocol: 'ttrpc' };
  }
  const maxVersion = version === '1.7' ? 2 : 3;
  if (connection.version > maxVersion) throw new Error(`unsupported shim version (${connection.version}): not implemented`);
  if (connection.protocol !== 'ttrpc' && connection.protocol !== 'grpc') throw new Error(`unexpected protocol: ${JSON.stringify(connection.protocol)}`);
  // 2.x: gRPC only with task v3 (core/runtime/v2/bridge.go NewTaskClient).
  if (version !== '1.7' && connection.protocol === 'grpc' && connection.version !== 3) {
    throw new Error(`containerd client supports only v3 GRPC task service (got ${connection.version})`);
  }
  return connection;
}

type TaskMethods = typeof TaskDefinition;

/** The task API as containerd's runtime sees it, whatever the transport underneath. */
export interface TaskClient {
  readonly description: string;
  call<K extends MethodKey<TaskMethods>>(key: K, request: RequestOf<TaskMethods, K>, options?: { timeoutMs?: number }): Promise<ResponseOf<TaskMethods, K>>;
  close(): void;
}

type UntypedCall = (definition: ServiceDefinition, key: string, request: unknown, options?: { timeoutMs?: number }) => Promise<unknown>;

/** Connects the way containerd does for this answer: ttrpc v2, ttrpc v3 or gRPC v3. */
export async function connectTask(connection: ShimConnection): Promise<TaskClient> {
  const socket = connection.address.replace(/^unix:\/\//, '');
  const definition: ServiceDefinition = connection.version === 3 || connection.protocol === 'grpc' ? TaskV3Definition : TaskDefinition;
  const description = `${definition.fullName} over ${connection.protocol}`;
  if (connection.protocol === 'grpc') {
    const client = await GrpcClient.connect(socket);
    const call = client.call.bind(client) as UntypedCall;
    return {
      description,
      call: (key, request, options) => call(definition, key, request, options) as Promise<never>,
      close: () => client.close(),
    };
  }
  const client = await TtrpcClient.connect(socket);
  const call = client.call.bind(client) as UntypedCall;
  return {
    description,
    call: (key, request, options) => call(definition, key, request, options) as Promise<never>,
    close: () => client.close(),
  };
}

/**
 * Writes a stand-in for containerd's binary: a minimal ELF64 file whose `.go.buildinfo` section
 * names `mainPackage` (e.g. "github.com/containerd/containerd/v2/cmd/containerd"), which is all
 * `start` reads of it. It is not executable code.
 */
export function makeFakeContainerdBinary(file: string, mainPackage: string, goVersion = 'go1.22.5'): void {
  const uvarint = (n: number): Buffer => {
    const out: number[] = [];
    while (n >= 0x80) { out.push((n & 0x7f) | 0x80); n = Math.floor(n / 128); }
    out.push(n);
    return Buffer.from(out);
  };
  const str = (s: string): Buffer => Buffer.concat([uvarint(Buffer.byteLength(s)), Buffer.from(s)]);
  const header = Buffer.alloc(32);
  Buffer.from('\xff Go buildinf:', 'latin1').copy(header, 0);
  header[14] = 8; // pointer size
  header[15] = 2; // inline strings (Go >= 1.18)
  // Go's 16-byte sentinels around the module info, as in a real build.
  const modinfo = Buffer.concat([
    Buffer.from('3077af0c9274080241e1c107e6d618e6', 'hex'),
    Buffer.from(`path\t${mainPackage}\nbuild\t-compiler=gc\n`),
    Buffer.from('f932433186182072008242104116d8f2', 'hex'),
  ]);
  const buildinfo = Buffer.concat([header, str(goVersion), uvarint(modinfo.length), modinfo]);
  const shstrtab = Buffer.from('\0.go.buildinfo\0.shstrtab\0');
  const buildinfoOffset = 64;
  const shstrtabOffset = buildinfoOffset + buildinfo.length;
  const shoff = Math.ceil((shstrtabOffset + shstrtab.length) / 8) * 8;
  const elf = Buffer.alloc(shoff + 3 * 64);
  elf.writeUInt32BE(0x7f454c46, 0);
  elf[4] = 2; // ELFCLASS64
  elf[5] = 1; // little-endian
  elf[6] = 1; // EV_CURRENT
  elf.writeUInt16LE(2, 16); // ET_EXEC
  elf.writeUInt16LE(62, 18); // EM_X86_64
  elf.writeUInt32LE(1, 20);
  elf.writeBigUInt64LE(BigInt(shoff), 0x28);
  elf.writeUInt16LE(64, 0x34); // e_ehsize
  elf.writeUInt16LE(64, 0x3a); // e_shentsize
  elf.writeUInt16LE(3, 0x3c); // e_shnum
  elf.writeUInt16LE(2, 0x3e); // e_shstrndx
  buildinfo.copy(elf, buildinfoOffset);
  shstrtab.copy(elf, shstrtabOffset);
  const section = (i: number, name: number, type: number, offset: number, size: number): void => {
    const base = shoff + i * 64;
    elf.writeUInt32LE(name, base);
    elf.writeUInt32LE(type, base + 4);
    elf.writeBigUInt64LE(BigInt(offset), base + 24);
    elf.writeBigUInt64LE(BigInt(size), base + 32);
  };
  section(1, 1, 1 /* PROGBITS */, buildinfoOffset, buildinfo.length);
  section(2, 15, 3 /* STRTAB */, shstrtabOffset, shstrtab.length);
  fs.writeFileSync(file, elf, { mode: 0o755 });
}
