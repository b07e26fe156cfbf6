// OCI runtime-spec types (the subset smolvm reads; no npm package provides them) and the
// validation of a bundle's config.json. Errors name the field that is wrong.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { invalidArgument } from '../errdefs';

export interface OciUser {
  uid: number;
  gid: number;
  umask?: number;
  additionalGids?: number[];
  username?: string;
}

export interface OciRlimit {
  type: string;
  hard: number;
  soft: number;
}

export interface OciProcess {
  terminal?: boolean;
  consoleSize?: { height: number; width: number };
  user: OciUser;
  args?: string[];
  commandLine?: string;
  env?: string[];
  cwd: string;
  capabilities?: Record<string, string[] | undefined>;
  rlimits?: OciRlimit[];
  noNewPrivileges?: boolean;
  apparmorProfile?: string;
  oomScoreAdj?: number;
  selinuxLabel?: string;
}

export interface OciRoot {
  path: string;
  readonly?: boolean;
}

export interface OciMount {
  destination: string;
  type?: string;
  source?: string;
  options?: string[];
}

export interface OciLinux {
  namespaces?: { type: string; path?: string }[];
  resources?: Record<string, unknown>;
  cgroupsPath?: string;
  sysctl?: Record<string, string>;
  maskedPaths?: string[];
  readonlyPaths?: string[];
  seccomp?: Record<string, unknown>;
}

export interface OciSpec {
  ociVersion: string;
  process?: OciProcess;
  root?: OciRoot;
  hostname?: string;
  mounts?: OciMount[];
  annotations?: Record<string, string>;
  linux?: OciLinux;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');
const isUint32 = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0 && v <= 0xffffffff;

/** Checks the fields smolvm relies on; returns the spec typed. */
export function validateSpec(raw: unknown, where: string): OciSpec {
  const bad = (field: string, why: string): never => { throw invalidArgument(`${where}: ${field} ${why}`); };
  if (!isObject(raw)) return bad('(document)', 'is not a JSON object');
  if (typeof raw.ociVersion !== 'string') bad('ociVersion', 'must be a string');
  const proc = raw.process;
  if (proc !== undefined) {
    if (!isObject(proc)) return bad('process', 'must be an object');
    if (proc.args !== undefined && !isStringArray(proc.args)) bad('process.args', 'must be an array of strings');
    if (!isStringArray(proc.args) || proc.args.length === 0) bad('process.args', 'must name the program to run');
    if (proc.env !== undefined && !isStringArray(proc.env)) bad('process.env', 'must be an array of strings');
    if (typeof proc.cwd !== 'string' || !proc.cwd.startsWith('/')) bad('process.cwd', 'must be an absolute path');
    if (!isObject(proc.user)) return bad('process.user', 'must be an object');
    if (!isUint32(proc.user.uid)) bad('process.user.uid', 'must be a uint32');
    if (!isUint32(proc.user.gid)) bad('process.user.gid', 'must be a uint32');
    const gids = proc.user.additionalGids;
    if (gids !== undefined && !(Array.isArray(gids) && gids.every(isUint32))) bad('process.user.additionalGids', 'must be uint32s');
    if (proc.terminal !== undefined && typeof proc.terminal !== 'boolean') bad('process.terminal', 'must be a boolean');
    if (proc.rlimits !== undefined) {
      if (!Array.isArray(proc.rlimits)) bad('process.rlimits', 'must be an array');
      for (const r of proc.rlimits as unknown[]) {
        if (!isObject(r) || typeof r.type !== 'string' || typeof r.hard !== 'number' || typeof r.soft !== 'number') {
          bad('process.rlimits', 'entries need type, hard and soft');
        }
      }
    }
  }
  if (raw.root !== undefined) {
    if (!isObject(raw.root) || typeof raw.root.path !== 'string') bad('root.path', 'must be a string');
  }
  if (raw.hostname !== undefined && typeof raw.hostname !== 'string') bad('hostname', 'must be a string');
  if (raw.mounts !== undefined) {
    if (!Array.isArray(raw.mounts)) bad('mounts', 'must be an array');
    (raw.mounts as unknown[]).forEach((m, i) => {
      if (!isObject(m) || typeof m.destination !== 'string') bad(`mounts[${i}].destination`, 'must be a string');
    });
  }
  if (raw.annotations !== undefined && !isObject(raw.annotations)) bad('annotations', 'must be an object');
  return raw as unknown as OciSpec;
}

/** Reads and validates <bundle>/config.json. */
export function loadBundleSpec(bundle: string): OciSpec {
  const file = path.join(bundle, 'config.json');
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw invalidArgument(`cannot read ${file}: ${(err as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw invalidArgument(`${file} is not valid JSON: ${(err as Error).message}`);
  }
  return validateSpec(raw, file);
}
