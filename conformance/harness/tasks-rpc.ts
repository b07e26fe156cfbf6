// containerd's Tasks API called over its gRPC socket, as kubelet's CRI plugin or ctr do, for
// tests whose timing ctr cannot give: a Kill that follows a Start's answer by about a
// millisecond (ctr needs a process per call, tens of milliseconds apart). Requests are encoded
// by hand (containerd/api/services/tasks/v1/tasks.proto, snapshots/v1/snapshots.proto);
// stdio left empty (like `ctr --null-io`).
import * as grpc from '@grpc/grpc-js';
import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import type { PrivateContainerd } from './containerd';

export const OCI_PROCESS_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Process';
const DEFAULT_CALL_MS = 60_000;

/** A failed call: the gRPC status and what containerd said. */
export class TasksCallError extends Error {
  constructor(readonly method: string, readonly code: number, readonly details: string) {
    super(`${method}: gRPC status ${code} (${grpc.status[code] ?? 'unknown'}): ${details}`);
    this.name = 'TasksCallError';
  }
}

export interface ExitStatus {
  readonly exitStatus: number;
}

/** One client per test; close() when done. */
export class TasksClient {
  private readonly client: grpc.Client;
  private readonly metadata = new grpc.Metadata();

  constructor(containerd: PrivateContainerd) {
    this.client = new grpc.Client(`unix://${containerd.address}`, grpc.credentials.createInsecure());
    this.metadata.set('containerd-namespace', containerd.namespace);
  }

  close(): void {
    this.client.close();
  }

  /** Tasks/Create for a container made with `ctr containers create` (its snapshot: key = id). */
  async create(containerId: string, snapshotter = 'overlayfs'): Promise<void> {
    const mounts = await this.call('/containerd.services.snapshots.v1.Snapshots/Mounts',
      new BinaryWriter().uint32(10).string(snapshotter).uint32(18).string(containerId).finish());
    // MountsResponse.mounts (1) are CreateTaskRequest.rootfs (3): the same Mount messages.
    const request = new BinaryWriter().uint32(10).string(containerId);
    for (const mount of repeatedBytes(mounts, 1)) request.uint32(26).bytes(mount);
    await this.call('/containerd.services.tasks.v1.Tasks/Create', request.finish());
  }

  /** Tasks/Start of the init process (execId '') or an exec. */
  async start(containerId: string, execId = ''): Promise<void> {
    await this.call('/containerd.services.tasks.v1.Tasks/Start', idRequest(containerId, execId));
  }

  async kill(containerId: string, signal: number, execId = ''): Promise<void> {
    const request = new BinaryWriter().uint32(10).string(containerId);
    if (execId) request.uint32(18).string(execId);
    request.uint32(24).uint32(signal);
    await this.call('/containerd.services.tasks.v1.Tasks/Kill', request.finish());
  }

  /** Tasks/Wait, bounded: a process still running after `boundMs` is a TasksCallError (DEADLINE_EXCEEDED). */
  async wait(containerId: string, execId: string, boundMs: number): Promise<ExitStatus> {
    const answer = await this.call('/containerd.services.tasks.v1.Tasks/Wait', idRequest(containerId, execId), boundMs);
    const reader = new BinaryReader(answer);
    let exitStatus = 0;
    while (reader.pos < reader.len) {
      const [field, wireType] = reader.tag();
      if (field === 1 && wireType === WireType.Varint) exitStatus = reader.uint32();
      else reader.skip(wireType);
    }
    return { exitStatus };
  }

  /** Tasks/Exec: `args` in the container, as root, with a standard PATH. */
  async exec(containerId: string, execId: string, args: readonly string[]): Promise<void> {
    const spec = {
      args, cwd: '/', user: { uid: 0, gid: 0 },
      env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
    };
    const any = new BinaryWriter().uint32(10).string(OCI_PROCESS_TYPE_URL).uint32(18).bytes(Buffer.from(JSON.stringify(spec))).finish();
    const request = new BinaryWriter().uint32(10).string(containerId).uint32(50).bytes(any).uint32(58).string(execId).finish();
    await this.call('/containerd.services.tasks.v1.Tasks/Exec', request);
  }

  async deleteProcess(containerId: string, execId: string): Promise<void> {
    await this.call('/containerd.services.tasks.v1.Tasks/DeleteProcess', idRequest(containerId, execId));
  }

  /** Tasks/Delete of a stopped task (the container stays). */
  async delete(containerId: string): Promise<void> {
    await this.call('/containerd.services.tasks.v1.Tasks/Delete', new BinaryWriter().uint32(10).string(containerId).finish());
  }

  private call(method: string, request: Uint8Array, boundMs = DEFAULT_CALL_MS): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      this.client.makeUnaryRequest(
        method,
        (b: Buffer) => b,
        (b: Buffer) => b,
        Buffer.from(request),
        this.metadata,
        { deadline: Date.now() + boundMs },
        (err: grpc.ServiceError | null, answer?: Buffer) => {
          if (err) reject(new TasksCallError(method, err.code, err.details));
          else resolve(answer ?? Buffer.alloc(0));
        },
      );
    });
  }
}

/** {container_id = 1, exec_id = 2}: Start, Wait and DeleteProcess requests. */
function idRequest(containerId: string, execId: string): Uint8Array {
  const writer = new BinaryWriter().uint32(10).string(containerId);
  if (execId) writer.uint32(18).string(execId);
  return writer.finish();
}

/** The payloads of every length-delimited occurrence of `field`. */
function repeatedBytes(message: Uint8Array, field: number): Uint8Array[] {
  const reader = new BinaryReader(message);
  const found: Uint8Array[] = [];
  while (reader.pos < reader.len) {
    const [no, wireType] = reader.tag();
    if (no === field && wireType === WireType.LengthDelimited) found.push(reader.bytes());
    else reader.skip(wireType);
  }
  return found;
}
