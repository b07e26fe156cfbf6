// The typed TypeScript side of the native VMM: locate the build, load the addon, drive one
// smolvm-vmm per VM (client), probe the host's KVM.
export { loadVmmAddon, type AddonVmmSession, type VmmAddon } from './addon';
export { VmmClient, type VmmSpawnOptions } from './client';
export { probeKvm, type KvmProbe } from './probe';
export { repoRoot, vmmArtifacts, vmmBuildStatus, type VmmArtifacts, type VmmBuildStatus } from './locate';
export * from './protocol';
