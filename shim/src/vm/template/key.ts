// What a template is a snapshot OF: every input that shapes the saved guest, hashed into its
// key. Any input changing gives another key, so a stale template is simply never found (and
// later garbage-collected), never restored into a guest that differs from a cold boot.
import type { BackendName, TemplateIdentity } from '../backend';
import { canonicalShape, type VmShape } from '../shape';
import { sha256Hex } from '../../util/file-identity';

/** Bump when the template layout or the restore procedure changes what a template means.
 *  v2: the inputs carry the whole VmShape (NICs, shares and jail included). */
export const TEMPLATE_FORMAT = 'smolvm-template-v2';

/**
 * Size of the placeholder file behind each slot while a template is built (sparse: costs
 * nothing). The template guest then knows every slot as this big, so any real image or
 * writable disk a restore puts there fits before the capacity refresh lands.
 */
export const TEMPLATE_SLOT_BYTES = 2 ** 40;

export interface TemplateInputs extends TemplateIdentity {
  format: string;
  backend: BackendName;
  kernelSha256: string;
  initramfsSha256: string;
  cmdline: string;
  shape: VmShape;
}

/** Templates of one family differ only by contents (kernel, initramfs, VMM): a newer one
 *  supersedes the others. */
export function familyOf(inputs: TemplateInputs): string {
  return sha256Hex(JSON.stringify([inputs.backend, canonicalShape(inputs.shape)])).slice(0, 16);
}

export function templateKey(inputs: TemplateInputs): string {
  // Fixed field order: the key must not depend on how the object was built.
  const canonical = JSON.stringify([
    inputs.format, inputs.backend, inputs.kernelSha256, inputs.initramfsSha256, inputs.cmdline,
    canonicalShape(inputs.shape), inputs.vmm, inputs.machine, inputs.host,
  ]);
  return sha256Hex(canonical).slice(0, 24);
}
