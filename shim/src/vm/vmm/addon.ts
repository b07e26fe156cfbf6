// Loads the node addon (native-vmm/src/addon) once, on first use: nothing that merely imports
// the shim pays for it. Its surface is checked before use and typed here; values that come
// from the VMM stay `unknown` until protocol.ts has looked at them.
import { vmmArtifacts } from './locate';

export interface AddonSpawnOptions {
  /** Absolute path of smolvm-vmm. */
  binary: string;
  /** stdout/stderr of the VMM (its warnings); /dev/null when absent. */
  logFd?: number;
  /** The exec wrapper and its arguments up to `--` (vm/vmm-exec.ts): spawned instead,
   *  with the VMM's command line after them. */
  execPrefix?: string[];
  /** hello, events, protocol errors and finally `process-exit`, in order, on the JS thread. */
  onEvent: (event: unknown) => void;
}

/** One running smolvm-vmm, as the addon exposes it. */
export interface AddonVmmSession {
  readonly pid: number;
  /** Sends {v:1, id, type, ...fields} with `fds` attached (SCM_RIGHTS; the addon dups them
   *  at once, so the caller may close its own). Resolves with the reply when ok; rejects with
   *  the VMM's error (prefixed with the type) or when the VMM is gone. */
  request(type: string, fields?: Record<string, unknown>, fds?: number[]): Promise<unknown>;
  /** Through the pidfd: never signals a recycled pid. False once the process has exited. */
  signal(signal: number): boolean;
  /** Shuts down our sending side: the VMM sees EOF (and stops its VM by default). */
  closeControl(): void;
}

export interface VmmAddon {
  spawnVmm(options: AddonSpawnOptions): Promise<AddonVmmSession>;
  probeHost(): Promise<unknown>;
  /** A new pipe, both ends close-on-exec: for a VMM's log and serial console (its write end
   *  goes to the VMM, the shim reads the other). The caller closes both. */
  makePipe(): { read: number; write: number };
  readonly PROTOCOL_VERSION: number;
}

let loaded: VmmAddon | null = null;

function isVmmAddon(value: unknown): value is VmmAddon {
  if (typeof value !== 'object' || value === null) return false;
  const record = value as Record<string, unknown>;
  return typeof record.spawnVmm === 'function' && typeof record.probeHost === 'function' &&
    typeof record.makePipe === 'function' && typeof record.PROTOCOL_VERSION === 'number';
}

/** The addon, loaded on first call. Throws an error naming the file and how to build it. */
export function loadVmmAddon(file: string = vmmArtifacts().addon): VmmAddon {
  if (loaded) return loaded;
  let module: unknown;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    module = require(file) as unknown;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'MODULE_NOT_FOUND' ? 'not built' : `cannot be loaded (${err instanceof Error ? err.message : String(err)})`;
    throw new Error(`the smolvm VMM addon ${file} is ${why}: run \`npm install\` (it builds the addon with node-gyp) or \`bash native-vmm/src/addon/build.sh\``);
  }
  if (!isVmmAddon(module)) throw new Error(`${file} is not the smolvm VMM addon (spawnVmm/probeHost/makePipe missing): rebuild it with \`bash native-vmm/src/addon/build.sh\``);
  if (module.PROTOCOL_VERSION !== 1) throw new Error(`the VMM addon speaks control protocol v${module.PROTOCOL_VERSION}; this shim speaks v1: rebuild it`);
  loaded = module;
  return module;
}
