// Templates: VMs booted once to "agent ready", saved, and restored for every Create instead of
// a cold boot (issue 5). See start.ts for the entry point, store.ts for the on-disk layout.
export { startVm, templatesEnabled, TEMPLATES_ENV, type StartVmRequest, type StartedVm } from './start';
export { buildTemplate, type BuildOutcome, type BuildRequest } from './build';
export { scheduleBuild, BUILDER_ENV, type BuilderJob } from './builder';
export { templateInputs, shapeOf, templatesUnsupported, type VmShape } from './inputs';
export { TemplateStore, STATE_FILE, type Template, type TemplateManifest, type Lookup } from './store';
export { templateKey, TEMPLATE_FORMAT, TEMPLATE_SLOT_BYTES, type TemplateInputs, type SlotShape } from './key';
