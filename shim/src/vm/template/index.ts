// Templates: VMs booted once to "agent ready", saved, and restored for every Create instead of
// a cold boot. vm/builder.ts restores from them; store.ts is the on-disk layout; build.ts
// makes one (in a detached process: build-process.ts).
export { buildTemplate, type BuildOutcome, type BuildRequest } from './build';
export { scheduleBuild, BUILDER_ENV, type BuilderJob } from './build-process';
export { templateInputs, templatesUnsupported } from './inputs';
export { TemplateStore, STATE_FILE, type Template, type TemplateManifest, type Lookup } from './store';
export { templateKey, TEMPLATE_FORMAT, TEMPLATE_SLOT_BYTES, type TemplateInputs } from './key';
