// The template inputs of a VM about to start: what its boot would be made of. Used both by a
// Create (to find a template) and by the build (to make one), so both agree on the key. What
// depends on the backend (its VMM, its machine, the host) the backend says.
import type { Backend, GuestBoot } from '../backend';
import type { VmShape } from '../shape';
import { fileSha256 } from '../../util/file-identity';
import { TEMPLATE_FORMAT, templateKey, type TemplateInputs } from './key';

/** Why this backend has no templates (yet), or null when it has. */
export function templatesUnsupported(backend: Backend): string | null {
  if (!backend.restoresState) return `the ${backend.name} backend cannot restore a saved VM yet`;
  return null;
}

export async function templateInputs(backend: Backend, shape: VmShape, guest: GuestBoot, memoDir: string): Promise<{ key: string; inputs: TemplateInputs }> {
  const unsupported = templatesUnsupported(backend);
  if (unsupported) throw new Error(unsupported);
  const [kernelSha256, initramfsSha256, identity] = await Promise.all([
    fileSha256(guest.kernel, memoDir),
    fileSha256(guest.initramfs, memoDir),
    backend.templateIdentity(shape, memoDir),
  ]);
  const inputs: TemplateInputs = {
    format: TEMPLATE_FORMAT, backend: backend.name, kernelSha256, initramfsSha256, cmdline: guest.cmdline, shape, ...identity,
  };
  return { key: templateKey(inputs), inputs };
}
