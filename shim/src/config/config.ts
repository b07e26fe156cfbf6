// smolvm's configuration: /etc/smolvm/config.toml (or SMOLVM_CONFIG, or the runtime options'
// ConfigPath), over built-in defaults. Unknown keys and wrong types are errors naming the key.
import * as fs from 'node:fs';
import { MAX_DEADLINE_SCALE, MIN_DEADLINE_SCALE } from '../agent/deadlines';
import { parseToml, type TomlTable } from './toml';

export type BackendChoice = 'auto' | 'kvm' | 'tcg';

export interface SmolvmConfig {
  backend: BackendChoice;
  memoryMiB: number;
  vcpus: number;
  /** Each container's writable disk (sparse ext4): the most it can write (a full disk is
   *  ENOSPC in the guest). A container may ask for another size by annotation, up to
   *  writableDiskMaxMiB (task/writable-disk.ts). */
  writableDiskMiB: number;
  /** The largest writable disk the annotation may ask for. */
  writableDiskMaxMiB: number;
  /** Cap of each VM's console log, and of its VMM's own log, on the host (KiB): two files of
   *  half of it each, rotated (vm/capped-log.ts). */
  consoleLogMaxKiB: number;
  /** Containers one pod VM can hold (disk slot pairs it boots with; capped by the backend). */
  podMaxContainers: number;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
  /** Start VMs from template snapshots (built in the background) instead of cold boots. */
  templates: boolean;
  /** Warm spares: idle shim daemons each holding a restored VM, claimed by `start` (pool/). */
  poolSize: number;
  /** Multiplies every deadline of the calls to the guest agent (agent/deadlines.ts). */
  agentDeadlineScale: number;
}

export const DEFAULT_CONFIG: SmolvmConfig = {
  backend: 'auto',
  memoryMiB: 256,
  vcpus: 1,
  writableDiskMiB: 1024,
  writableDiskMaxMiB: 16 * 1024,
  consoleLogMaxKiB: 1024,
  podMaxContainers: 8,
  logLevel: 'info',
  templates: true,
  poolSize: 0,
  agentDeadlineScale: 1,
};

export const DEFAULT_CONFIG_PATH = '/etc/smolvm/config.toml';

function pick<T>(table: TomlTable, key: string, file: string, check: (v: unknown) => v is T, what: string): T | undefined {
  const v = table[key];
  if (v === undefined) return undefined;
  if (!check(v)) throw new Error(`${file}: ${key} must be ${what}`);
  return v;
}

/** Each spare holds a VM and a daemon (~60 MiB + the guest's touched memory): keep it small. */
export const MAX_POOL_SIZE = 16;
const isPoolSize = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= MAX_POOL_SIZE;
const isPositiveInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;
const isDeadlineScale = (v: unknown): v is number => typeof v === 'number' && v >= MIN_DEADLINE_SCALE && v <= MAX_DEADLINE_SCALE;
const intRange = (min: number, max: number) => (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
/** image/disk.ts: 16 MiB .. 16 TiB. */
export const MIN_WRITABLE_DISK_MIB = 16;
export const MAX_WRITABLE_DISK_MIB = 16 * 1024 * 1024;
/** Two rotated files of at least 4 KiB each; at most 1 GiB in all. */
export const MIN_CONSOLE_LOG_KIB = 8;
export const MAX_CONSOLE_LOG_KIB = 1024 * 1024;

export function parseConfig(text: string, file: string): SmolvmConfig {
  const t = parseToml(text, file);
  const known = new Set(['backend', 'memory_mib', 'vcpus', 'writable_disk_mib', 'writable_disk_max_mib', 'console_log_max_kib', 'pod_max_containers', 'log_level', 'templates', 'pool_size', 'agent_deadline_scale']);
  for (const k of Object.keys(t)) if (!known.has(k)) throw new Error(`${file}: unknown key ${k}`);
  const cfg = { ...DEFAULT_CONFIG };
  const backend = pick(t, 'backend', file, (v): v is BackendChoice => v === 'auto' || v === 'kvm' || v === 'tcg', '"auto", "kvm" or "tcg"');
  if (backend) cfg.backend = backend;
  cfg.memoryMiB = pick(t, 'memory_mib', file, isPositiveInt, 'a positive integer') ?? cfg.memoryMiB;
  cfg.vcpus = pick(t, 'vcpus', file, isPositiveInt, 'a positive integer') ?? cfg.vcpus;
  const diskMiB = `an integer from ${MIN_WRITABLE_DISK_MIB} to ${MAX_WRITABLE_DISK_MIB}`;
  cfg.writableDiskMiB = pick(t, 'writable_disk_mib', file, intRange(MIN_WRITABLE_DISK_MIB, MAX_WRITABLE_DISK_MIB), diskMiB) ?? cfg.writableDiskMiB;
  const maxDisk = pick(t, 'writable_disk_max_mib', file, intRange(MIN_WRITABLE_DISK_MIB, MAX_WRITABLE_DISK_MIB), diskMiB);
  if (maxDisk !== undefined && maxDisk < cfg.writableDiskMiB) {
    throw new Error(`${file}: writable_disk_max_mib (${maxDisk}) is less than writable_disk_mib (${cfg.writableDiskMiB})`);
  }
  // Unset, the ceiling is never below the default size itself.
  cfg.writableDiskMaxMiB = maxDisk ?? Math.max(cfg.writableDiskMaxMiB, cfg.writableDiskMiB);
  cfg.consoleLogMaxKiB = pick(t, 'console_log_max_kib', file, intRange(MIN_CONSOLE_LOG_KIB, MAX_CONSOLE_LOG_KIB), `an integer from ${MIN_CONSOLE_LOG_KIB} to ${MAX_CONSOLE_LOG_KIB}`) ?? cfg.consoleLogMaxKiB;
  cfg.podMaxContainers = pick(t, 'pod_max_containers', file, isPositiveInt, 'a positive integer') ?? cfg.podMaxContainers;
  const level = pick(t, 'log_level', file, (v): v is SmolvmConfig['logLevel'] => ['debug', 'info', 'warn', 'error'].includes(v as string), 'debug, info, warn or error');
  if (level) cfg.logLevel = level;
  cfg.templates = pick(t, 'templates', file, (v): v is boolean => typeof v === 'boolean', 'true or false') ?? cfg.templates;
  cfg.poolSize = pick(t, 'pool_size', file, isPoolSize, `an integer from 0 to ${MAX_POOL_SIZE}`) ?? cfg.poolSize;
  cfg.agentDeadlineScale = pick(t, 'agent_deadline_scale', file, isDeadlineScale, `a number from ${MIN_DEADLINE_SCALE} to ${MAX_DEADLINE_SCALE}`) ?? cfg.agentDeadlineScale;
  return cfg;
}

/** The explicit path must exist; the default path may be absent (defaults apply). */
export function loadConfig(explicitPath?: string, env: NodeJS.ProcessEnv = process.env): SmolvmConfig {
  const file = explicitPath || env.SMOLVM_CONFIG || DEFAULT_CONFIG_PATH;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    if (!explicitPath && !env.SMOLVM_CONFIG && (err as NodeJS.ErrnoException).code === 'ENOENT') return { ...DEFAULT_CONFIG };
    throw new Error(`cannot read smolvm config ${file}: ${(err as Error).message}`);
  }
  return parseConfig(text, file);
}
