// Where the native VMM's two built artifacts are: the per-VM process `smolvm-vmm` (CMake,
// `npm run build:vmm`) and the node addon that drives it (node-gyp, run by `npm install`);
// and the exec wrapper every VMM of either backend is started through, `bin/smolvm-vmm-exec`
// (launcher/vmm-exec, `npm run build:launcher`), next to the launcher it is built with.
// Environment overrides let tests and packagers point elsewhere.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The repository root: the nearest ancestor of this file holding native-vmm/. */
export function repoRoot(): string | null {
  let dir = __dirname;
  for (;;) {
    if (fs.existsSync(path.join(dir, 'native-vmm', 'CMakeLists.txt'))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) return null;
    dir = parent;
  }
}

export interface VmmArtifacts {
  /** Absolute path of smolvm-vmm (SMOLVM_VMM_BINARY overrides). */
  binary: string;
  /** Absolute path of the addon's .node file (SMOLVM_VMM_ADDON overrides). */
  addon: string;
}

export function vmmArtifacts(env: NodeJS.ProcessEnv = process.env): VmmArtifacts {
  const root = repoRoot() ?? path.resolve(__dirname, '..', '..', '..', '..');
  return {
    binary: path.resolve(env.SMOLVM_VMM_BINARY ?? path.join(root, 'native-vmm', 'build', 'smolvm-vmm')),
    addon: path.resolve(env.SMOLVM_VMM_ADDON ?? path.join(root, 'native-vmm', 'src', 'addon', 'build', 'Release', 'smolvm_vmm_addon.node')),
  };
}

/** Absolute path of the VMM exec wrapper (SMOLVM_VMM_EXEC overrides): see vm/vmm-exec.ts. */
export function vmmExecBinary(env: NodeJS.ProcessEnv = process.env): string {
  const root = repoRoot() ?? path.resolve(__dirname, '..', '..', '..', '..');
  return path.resolve(env.SMOLVM_VMM_EXEC ?? path.join(root, 'bin', 'smolvm-vmm-exec'));
}

export interface VmmBuildStatus {
  artifacts: VmmArtifacts;
  binaryBuilt: boolean;
  addonBuilt: boolean;
  /** Empty when both are there; else what is missing and the command that builds it. */
  problem: string;
}

export function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** Cheap (two stats): whether the kvm backend can be used at all on this install. */
export function vmmBuildStatus(env: NodeJS.ProcessEnv = process.env): VmmBuildStatus {
  const artifacts = vmmArtifacts(env);
  const binaryBuilt = isExecutable(artifacts.binary);
  const addonBuilt = fs.existsSync(artifacts.addon);
  const missing: string[] = [];
  if (!binaryBuilt) missing.push(`smolvm-vmm is not built (${artifacts.binary}): run \`npm run build:vmm\``);
  if (!addonBuilt) missing.push(`the VMM addon is not built (${artifacts.addon}): run \`npm install\` or \`bash native-vmm/src/addon/build.sh\` (node-gyp)`);
  return { artifacts, binaryBuilt, addonBuilt, problem: missing.join('; ') };
}
