// containerd's Tasks API where ctr 1.6 has no command: `Tasks/Update` (ctr 1.6 has no
// `task update`), called over containerd's own gRPC socket like any client would. The request
// is encoded by hand: UpdateTaskRequest{container_id=1, resources=2 (Any), annotations=3}.
import * as grpc from '@grpc/grpc-js';
import { BinaryWriter } from '@bufbuild/protobuf/wire';
import type { PrivateContainerd } from './containerd';

export const LINUX_RESOURCES_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources';

export interface GrpcFailure {
  readonly code: number;
  readonly details: string;
}

/** Tasks/Update with `resources` as the Any's JSON value; resolves null, or the gRPC error. */
export async function updateTask(
  containerd: PrivateContainerd, id: string, resources: unknown, typeUrl = LINUX_RESOURCES_TYPE_URL,
): Promise<GrpcFailure | null> {
  const any = new BinaryWriter().uint32(10).string(typeUrl).uint32(18).bytes(Buffer.from(JSON.stringify(resources))).finish();
  const request = Buffer.from(new BinaryWriter().uint32(10).string(id).uint32(18).bytes(any).finish());
  const client = new grpc.Client(`unix://${containerd.address}`, grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  metadata.set('containerd-namespace', containerd.namespace);
  try {
    return await new Promise<GrpcFailure | null>((resolve) => {
      client.makeUnaryRequest(
        '/containerd.services.tasks.v1.Tasks/Update',
        (b: Buffer) => b,
        (b: Buffer) => b,
        request,
        metadata,
        { deadline: Date.now() + 60_000 },
        (err: grpc.ServiceError | null) => resolve(err ? { code: err.code, details: err.details } : null),
      );
    });
  } finally {
    client.close();
  }
}
