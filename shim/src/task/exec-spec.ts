// The process spec of containerd's ExecProcessRequest: an Any whose value is the JSON OCI
// runtime-spec Process (type URL types.containerd.io/opencontainers/runtime-spec/1/Process).
import { invalidArgument } from '../errdefs';
import type { Any } from '../gen/google/protobuf/any';
import { validateSpec, type OciProcess } from '../oci/spec';

export const OCI_PROCESS_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/Process';
/** Accepted spellings: containerd's, and the same name under another host prefix. */
const PROCESS_TYPE_SUFFIX = '/opencontainers/runtime-spec/1/Process';
/** An exec's process spec is small; refuse absurd ones before parsing. */
const MAX_SPEC_BYTES = 1 << 20;

/** Decodes and validates the spec; errors are InvalidArgument and start with `what`. */
export function parseExecProcessSpec(spec: Any | undefined, what: string): OciProcess {
  if (!spec || spec.value.length === 0) throw invalidArgument(`${what}: the request has no process spec`);
  if (spec.typeUrl !== OCI_PROCESS_TYPE_URL && !spec.typeUrl.endsWith(PROCESS_TYPE_SUFFIX)) {
    throw invalidArgument(`${what}: process spec has type ${JSON.stringify(spec.typeUrl)}, want ${OCI_PROCESS_TYPE_URL}`);
  }
  if (spec.value.length > MAX_SPEC_BYTES) {
    throw invalidArgument(`${what}: process spec is ${spec.value.length} bytes (max ${MAX_SPEC_BYTES})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(spec.value).toString('utf8'));
  } catch (err) {
    throw invalidArgument(`${what}: process spec is not valid JSON: ${(err as Error).message}`);
  }
  // The bundle validator checks the same process fields as for Create.
  const checked = validateSpec({ ociVersion: 'exec', process: raw }, `${what}: process spec`);
  return checked.process!;
}
