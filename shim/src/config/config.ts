// smolvm's configuration: /etc/smolvm/config.toml (or SMOLVM_CONFIG, or the runtime options'
// ConfigPath), over built-in defaults. Unknown keys and wrong types are errors naming the key.
import * as fs from 'node:fs';
import { parseToml, type TomlTable } from './toml';

export type BackendChoice = 'auto' | 'kvm' | 'tcg';

export interface SmolvmConfig {
  backend: BackendChoice;
  memoryMiB: number;
  vcpus: number;
  writableDiskMiB: number;
  logLevel: 'debug' | 'info' | 'warn' | 'error';
}

export const DEFAULT_CONFIG: SmolvmConfig = {
  backend: 'auto',
  memoryMiB: 256,
  vcpus: 1,
  writableDiskMiB: 1024,
  logLevel: 'info',
};

export const DEFAULT_CONFIG_PATH = '/etc/smolvm/config.toml';

function pick<T>(table: TomlTable, key: string, file: string, check: (v: unknown) => v is T, what: string): T | undefined {
  const v = table[key];
  if (v === undefined) return undefined;
  if (!check(v)) throw new Error(`${file}: ${key} must be ${what}`);
  return v;
}

const isPositiveInt = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v > 0;

export function parseConfig(text: string, file: string): SmolvmConfig {
  const t = parseToml(text, file);
  const known = new Set(['backend', 'memory_mib', 'vcpus', 'writable_disk_mib', 'log_level']);
  for (const k of Object.keys(t)) if (!known.has(k)) throw new Error(`${file}: unknown key ${k}`);
  const cfg = { ...DEFAULT_CONFIG };
  const backend = pick(t, 'backend', file, (v): v is BackendChoice => v === 'auto' || v === 'kvm' || v === 'tcg', '"auto", "kvm" or "tcg"');
  if (backend) cfg.backend = backend;
  cfg.memoryMiB = pick(t, 'memory_mib', file, isPositiveInt, 'a positive integer') ?? cfg.memoryMiB;
  cfg.vcpus = pick(t, 'vcpus', file, isPositiveInt, 'a positive integer') ?? cfg.vcpus;
  cfg.writableDiskMiB = pick(t, 'writable_disk_mib', file, isPositiveInt, 'a positive integer') ?? cfg.writableDiskMiB;
  const level = pick(t, 'log_level', file, (v): v is SmolvmConfig['logLevel'] => ['debug', 'info', 'warn', 'error'].includes(v as string), 'debug, info, warn or error');
  if (level) cfg.logLevel = level;
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
