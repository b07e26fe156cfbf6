// The OCI spec turned into what the guest agent applies (proto/smolvm/agent.proto, protocol
// 1.2): capability sets, umask, linux.* security settings, and `mounts` with their options
// split into mount(2) flags. Host-side facts are resolved here, before any VM boots: a bind
// of a host FILE carries its content; a bind of a host DIRECTORY goes through the VM's one
// virtio-9p share (vm/host-mounts.ts binds it into the share on the host; its subpath
// there is filled in by withShareSubpaths). Everything the guest cannot serve is an
// InvalidArgument naming the mount or field, never a silent skip.
import * as fs from 'node:fs';
import { invalidArgument } from '../errdefs';
import type {
  Capabilities, LinuxSecurity, Mount as AgentMount, Mounts, Seccomp, SeccompArg, SeccompRule, Sysctl,
} from '../gen/smolvm/agent';
import type { OciMount, OciProcess, OciSpec } from './spec';

/** One host file copied into the guest (CRI's hosts/resolv.conf/hostname, secrets). */
export const MAX_HOST_FILE_BYTES = 1 << 20;
/** All host files of one container: they travel in the Create request (one 4 MiB frame). */
export const MAX_HOST_FILES_TOTAL_BYTES = 3 << 20;
/** Host directories one container may bind-mount (through the VM's one 9p share). */
export const MAX_HOST_DIRECTORIES = 64;

/** A host directory bind-mounted into the container through the VM's 9p share. */
export interface HostDirectoryShare {
  hostPath: string;
  readOnly: boolean;
  /** rbind: the host directory's submounts come along. */
  recursive: boolean;
  /** The mount's destination in the container, for error messages. */
  destination: string;
  /** Index of its entry in the guest mounts (which gets the share subpath). */
  mountIndex: number;
}

export interface GuestContainerConfig {
  linux: LinuxSecurity;
  /** Undefined when the spec has no `mounts` (the agent's defaults apply). */
  mounts: Mounts | undefined;
  shares: HostDirectoryShare[];
}

// mount(2) flags (linux/mount.h).
export const MS = {
  RDONLY: 1n, NOSUID: 2n, NODEV: 4n, NOEXEC: 8n, SYNCHRONOUS: 16n, REMOUNT: 32n, MANDLOCK: 64n, DIRSYNC: 128n,
  NOATIME: 1024n, NODIRATIME: 2048n, BIND: 4096n, REC: 16384n, UNBINDABLE: 1n << 17n, PRIVATE: 1n << 18n,
  SLAVE: 1n << 19n, SHARED: 1n << 20n, RELATIME: 1n << 21n, STRICTATIME: 1n << 24n,
} as const;

/** Options that set (true) or clear (false) a flag, as runc reads them. */
const FLAG_OPTIONS: Record<string, [flag: bigint, set: boolean]> = {
  ro: [MS.RDONLY, true], rw: [MS.RDONLY, false], rro: [MS.RDONLY, true], rrw: [MS.RDONLY, false],
  nosuid: [MS.NOSUID, true], suid: [MS.NOSUID, false], nodev: [MS.NODEV, true], dev: [MS.NODEV, false],
  noexec: [MS.NOEXEC, true], exec: [MS.NOEXEC, false], sync: [MS.SYNCHRONOUS, true], async: [MS.SYNCHRONOUS, false],
  dirsync: [MS.DIRSYNC, true], mand: [MS.MANDLOCK, true], nomand: [MS.MANDLOCK, false],
  noatime: [MS.NOATIME, true], atime: [MS.NOATIME, false], nodiratime: [MS.NODIRATIME, true],
  diratime: [MS.NODIRATIME, false], relatime: [MS.RELATIME, true], norelatime: [MS.RELATIME, false],
  strictatime: [MS.STRICTATIME, true], nostrictatime: [MS.STRICTATIME, false],
};
const PROPAGATION_OPTIONS: Record<string, bigint> = {
  private: MS.PRIVATE, rprivate: MS.PRIVATE | MS.REC, shared: MS.SHARED, rshared: MS.SHARED | MS.REC,
  slave: MS.SLAVE, rslave: MS.SLAVE | MS.REC, unbindable: MS.UNBINDABLE, runbindable: MS.UNBINDABLE | MS.REC,
};
/** Options whose meaning smolvm cannot give: refused, not dropped. */
const UNSUPPORTED_OPTIONS = new Set(['tmpcopyup', 'idmap', 'ridmap', 'remount']);
const IGNORED_OPTIONS = new Set(['defaults']);

export interface ParsedMountOptions {
  flags: bigint;
  propagation: bigint;
  data: string;
  bind: boolean;
  recursive: boolean;
}

export function parseMountOptions(options: readonly string[], where: string): ParsedMountOptions {
  let flags = 0n;
  let propagation = 0n;
  let bind = false;
  let recursive = false;
  const data: string[] = [];
  for (const option of options) {
    if (option === 'bind' || option === 'rbind') {
      bind = true;
      recursive ||= option === 'rbind';
    } else if (option in FLAG_OPTIONS) {
      const [flag, set] = FLAG_OPTIONS[option]!;
      flags = set ? flags | flag : flags & ~flag;
    } else if (option in PROPAGATION_OPTIONS) {
      propagation = PROPAGATION_OPTIONS[option]!;
    } else if (UNSUPPORTED_OPTIONS.has(option)) {
      throw invalidArgument(`${where}: option "${option}" is not supported by smolvm`);
    } else if (!IGNORED_OPTIONS.has(option)) {
      if (option.includes(',')) throw invalidArgument(`${where}: option ${JSON.stringify(option)} contains a comma`);
      data.push(option);
    }
  }
  return { flags, propagation, data: data.join(','), bind, recursive };
}

/** Filesystems the guest mounts itself (the spec's type → the guest's). */
const GUEST_FILESYSTEMS: Record<string, string> = {
  proc: 'proc', sysfs: 'sysfs', tmpfs: 'tmpfs', devpts: 'devpts', mqueue: 'mqueue', cgroup: 'cgroup2', cgroup2: 'cgroup2',
};

function describeFileType(st: fs.Stats): string {
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isFIFO()) return 'a FIFO';
  return 'neither a file nor a directory';
}

/** The spec's mounts for the guest; host files are read here (size-capped). */
export function guestMounts(mounts: readonly OciMount[], containerId: string): { mounts: AgentMount[]; shares: HostDirectoryShare[] } {
  const out: AgentMount[] = [];
  const shares: HostDirectoryShare[] = [];
  let fileBytes = 0;
  mounts.forEach((m, i) => {
    const where = `container ${containerId}: mount ${m.destination} (mounts[${i}])`;
    if (!m.destination.startsWith('/') || m.destination === '/') {
      throw invalidArgument(`${where}: destination must be an absolute path other than /`);
    }
    const opts = parseMountOptions(m.options ?? [], where);
    const type = m.type ?? '';
    const isBind = type === 'bind' || type === 'rbind' || ((type === '' || type === 'none') && opts.bind) || (opts.bind && !(type in GUEST_FILESYSTEMS));
    const base: AgentMount = {
      destination: m.destination, type: '', source: m.source ?? '', flags: opts.flags, propagation: opts.propagation,
      data: opts.data, recursive: opts.recursive || type === 'rbind', file: undefined, shareTag: undefined, shareSubpath: undefined,
    };
    if (!isBind) {
      const guestType = GUEST_FILESYSTEMS[type];
      if (!guestType) {
        throw invalidArgument(`${where}: type ${JSON.stringify(type)} cannot be served in the guest (supported: ${Object.keys(GUEST_FILESYSTEMS).join(', ')}, bind)`);
      }
      out.push({ ...base, type: guestType });
      return;
    }
    const source = m.source ?? '';
    if (!source.startsWith('/')) throw invalidArgument(`${where}: bind source ${JSON.stringify(source)} must be an absolute host path`);
    let st: fs.Stats;
    try {
      st = fs.statSync(source);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw invalidArgument(`${where}: bind source ${source}: ${code === 'ENOENT' ? 'does not exist' : (err as Error).message}`);
    }
    if (st.isFile()) {
      if (st.size > MAX_HOST_FILE_BYTES) {
        throw invalidArgument(`${where}: host file ${source} is ${st.size} bytes; files are copied into the guest and may be at most ${MAX_HOST_FILE_BYTES} bytes`);
      }
      const content = fs.readFileSync(source);
      if (content.length > MAX_HOST_FILE_BYTES) {
        throw invalidArgument(`${where}: host file ${source} grew past ${MAX_HOST_FILE_BYTES} bytes while being read`);
      }
      fileBytes += content.length;
      if (fileBytes > MAX_HOST_FILES_TOTAL_BYTES) {
        throw invalidArgument(`${where}: the host files bind-mounted into this container exceed ${MAX_HOST_FILES_TOTAL_BYTES} bytes in all`);
      }
      out.push({ ...base, type: 'bind', file: { content, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid } });
      return;
    }
    if (st.isDirectory() && m.destination === '/dev/shm') {
      // CRI binds the pod's host shm dir here. Shared memory must be guest memory (9p cannot
      // back coherent shared mappings): the guest gets its own /dev/shm tmpfs, as Kata does.
      out.push({ ...base, type: 'tmpfs', source: 'shm', flags: opts.flags | MS.NOSUID | MS.NODEV | MS.NOEXEC, data: 'mode=1777,size=65536k', recursive: false });
      return;
    }
    if (st.isDirectory()) {
      if (shares.length >= MAX_HOST_DIRECTORIES) {
        throw invalidArgument(`${where}: at most ${MAX_HOST_DIRECTORIES} host directories can be bind-mounted into one container`);
      }
      shares.push({
        hostPath: source, readOnly: (opts.flags & MS.RDONLY) !== 0n, recursive: base.recursive,
        destination: m.destination, mountIndex: out.length,
      });
      // The subpath in the VM's share is known once the host has bind-mounted it there.
      out.push({ ...base, type: 'bind' });
      return;
    }
    throw invalidArgument(`${where}: bind source ${source} is ${describeFileType(st)}; only host files and directories can be bind-mounted into a VM`);
  });
  return { mounts: out, shares };
}

/**
 * The guest mounts with each host directory's subpath in the VM's 9p share (`subpaths[i]` for
 * `shares[i]`, as HostShares.add returned them).
 */
export function withShareSubpaths(mounts: Mounts | undefined, shares: readonly HostDirectoryShare[], subpaths: readonly string[]): Mounts | undefined {
  if (shares.length === 0) return mounts;
  if (!mounts || subpaths.length !== shares.length) throw new Error(`${shares.length} host directories but ${subpaths.length} share subpaths`);
  const out = mounts.mounts.map((m) => ({ ...m }));
  shares.forEach((share, i) => {
    const m = out[share.mountIndex];
    if (!m || m.destination !== share.destination) throw new Error(`host directory for ${share.destination}: no guest mount at index ${share.mountIndex}`);
    m.shareSubpath = subpaths[i];
  });
  return { mounts: out };
}

const CAPABILITY_NAMES = new Set([
  'CAP_CHOWN', 'CAP_DAC_OVERRIDE', 'CAP_DAC_READ_SEARCH', 'CAP_FOWNER', 'CAP_FSETID', 'CAP_KILL', 'CAP_SETGID',
  'CAP_SETUID', 'CAP_SETPCAP', 'CAP_LINUX_IMMUTABLE', 'CAP_NET_BIND_SERVICE', 'CAP_NET_BROADCAST', 'CAP_NET_ADMIN',
  'CAP_NET_RAW', 'CAP_IPC_LOCK', 'CAP_IPC_OWNER', 'CAP_SYS_MODULE', 'CAP_SYS_RAWIO', 'CAP_SYS_CHROOT',
  'CAP_SYS_PTRACE', 'CAP_SYS_PACCT', 'CAP_SYS_ADMIN', 'CAP_SYS_BOOT', 'CAP_SYS_NICE', 'CAP_SYS_RESOURCE',
  'CAP_SYS_TIME', 'CAP_SYS_TTY_CONFIG', 'CAP_MKNOD', 'CAP_LEASE', 'CAP_AUDIT_WRITE', 'CAP_AUDIT_CONTROL',
  'CAP_SETFCAP', 'CAP_MAC_OVERRIDE', 'CAP_MAC_ADMIN', 'CAP_SYSLOG', 'CAP_WAKE_ALARM', 'CAP_BLOCK_SUSPEND',
  'CAP_AUDIT_READ', 'CAP_PERFMON', 'CAP_BPF', 'CAP_CHECKPOINT_RESTORE',
]);
const CAPABILITY_SETS = ['bounding', 'effective', 'inheritable', 'permitted', 'ambient'] as const;

/** process.capabilities for the agent; undefined when the spec has none (full set kept). */
export function guestCapabilities(proc: OciProcess, where: string): Capabilities | undefined {
  const caps = proc.capabilities;
  if (caps === undefined) return undefined;
  const out: Capabilities = { bounding: [], effective: [], inheritable: [], permitted: [], ambient: [] };
  for (const set of CAPABILITY_SETS) {
    const names = caps[set] ?? [];
    for (const name of names) {
      if (!CAPABILITY_NAMES.has(name)) throw invalidArgument(`${where}: process.capabilities.${set}: unknown capability ${JSON.stringify(name)}`);
    }
    out[set] = [...names];
  }
  return out;
}

const SECCOMP_ACTIONS = new Set([
  'SCMP_ACT_KILL', 'SCMP_ACT_KILL_PROCESS', 'SCMP_ACT_KILL_THREAD', 'SCMP_ACT_TRAP', 'SCMP_ACT_ERRNO',
  'SCMP_ACT_TRACE', 'SCMP_ACT_ALLOW', 'SCMP_ACT_LOG',
]);
const SECCOMP_OPS = new Set(['SCMP_CMP_NE', 'SCMP_CMP_LT', 'SCMP_CMP_LE', 'SCMP_CMP_EQ', 'SCMP_CMP_GE', 'SCMP_CMP_GT', 'SCMP_CMP_MASKED_EQ']);
const SECCOMP_FLAGS = new Set(['SECCOMP_FILTER_FLAG_TSYNC', 'SECCOMP_FILTER_FLAG_LOG', 'SECCOMP_FILTER_FLAG_SPEC_ALLOW']);

const UINT64_MAX = (1n << 64n) - 1n;
/** JSON numbers past 2^53 lose precision; values are clamped to the uint64 range. */
function uint64(n: unknown, where: string): bigint {
  if (typeof n !== 'number' || !Number.isFinite(n) || n < 0) throw invalidArgument(`${where} must be a non-negative number`);
  const b = BigInt(Math.floor(n));
  return b > UINT64_MAX ? UINT64_MAX : b;
}

function errnoRet(v: unknown, where: string): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0xffff) throw invalidArgument(`${where} must be an errno (0-65535)`);
  return v;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const stringList = (v: unknown, where: string): string[] => {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) throw invalidArgument(`${where} must be an array of strings`);
  return v as string[];
};

function checkAction(action: unknown, where: string): string {
  if (action === 'SCMP_ACT_NOTIFY') throw invalidArgument(`${where}: SCMP_ACT_NOTIFY is not supported (no seccomp agent in smolvm guests)`);
  if (typeof action !== 'string' || !SECCOMP_ACTIONS.has(action)) throw invalidArgument(`${where}: unknown action ${JSON.stringify(action)}`);
  return action;
}

/** linux.seccomp for the agent (which compiles it into BPF). */
export function guestSeccomp(raw: unknown, where: string): Seccomp | undefined {
  if (raw === undefined || raw === null) return undefined;
  const w = `${where}: linux.seccomp`;
  if (!isObject(raw)) throw invalidArgument(`${w} must be an object`);
  if (raw.listenerPath) throw invalidArgument(`${w}.listenerPath: seccomp notify is not supported by smolvm`);
  const flags = stringList(raw.flags, `${w}.flags`);
  for (const f of flags) if (!SECCOMP_FLAGS.has(f)) throw invalidArgument(`${w}.flags: unsupported flag ${JSON.stringify(f)}`);
  const architectures = stringList(raw.architectures, `${w}.architectures`);
  for (const a of architectures) if (!a.startsWith('SCMP_ARCH_')) throw invalidArgument(`${w}.architectures: unknown architecture ${JSON.stringify(a)}`);
  if (raw.syscalls !== undefined && raw.syscalls !== null && !Array.isArray(raw.syscalls)) throw invalidArgument(`${w}.syscalls must be an array`);
  const syscalls: SeccompRule[] = ((raw.syscalls as unknown[] | undefined) ?? []).map((s, i) => {
    const sw = `${w}.syscalls[${i}]`;
    if (!isObject(s)) throw invalidArgument(`${sw} must be an object`);
    const names = stringList(s.names, `${sw}.names`);
    if (names.length === 0) throw invalidArgument(`${sw}.names must name at least one syscall`);
    if (s.args !== undefined && s.args !== null && !Array.isArray(s.args)) throw invalidArgument(`${sw}.args must be an array`);
    const args: SeccompArg[] = ((s.args as unknown[] | undefined) ?? []).map((a, j) => {
      const aw = `${sw}.args[${j}]`;
      if (!isObject(a)) throw invalidArgument(`${aw} must be an object`);
      if (typeof a.index !== 'number' || !Number.isInteger(a.index) || a.index < 0 || a.index > 5) throw invalidArgument(`${aw}.index must be 0-5`);
      if (typeof a.op !== 'string' || !SECCOMP_OPS.has(a.op)) throw invalidArgument(`${aw}.op: unknown operator ${JSON.stringify(a.op)}`);
      return { index: a.index, value: uint64(a.value ?? 0, `${aw}.value`), valueTwo: uint64(a.valueTwo ?? 0, `${aw}.valueTwo`), op: a.op };
    });
    if (args.length > 6) throw invalidArgument(`${sw}.args: at most 6 conditions`);
    return { names, action: checkAction(s.action, `${sw}.action`), errno: errnoRet(s.errnoRet, `${sw}.errnoRet`), args };
  });
  return {
    defaultAction: checkAction(raw.defaultAction, `${w}.defaultAction`),
    defaultErrno: errnoRet(raw.defaultErrnoRet, `${w}.defaultErrnoRet`),
    architectures, flags, syscalls,
  };
}

const SYSCTL_NAME = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;
/** runc's rule: only sysctls of namespaces the container owns. */
export function isNamespacedSysctl(name: string): boolean {
  return ['kernel.sem', 'kernel.hostname', 'kernel.domainname'].includes(name) ||
    ['kernel.msg', 'kernel.shm', 'fs.mqueue.', 'net.'].some((p) => name.startsWith(p));
}

export function guestSysctls(sysctl: Record<string, string> | undefined, where: string): Sysctl[] {
  return Object.entries(sysctl ?? {}).map(([name, value]) => {
    if (!SYSCTL_NAME.test(name) || name.length > 200) throw invalidArgument(`${where}: linux.sysctl: invalid name ${JSON.stringify(name)}`);
    if (typeof value !== 'string') throw invalidArgument(`${where}: linux.sysctl ${name}: the value must be a string`);
    if (!isNamespacedSysctl(name)) {
      throw invalidArgument(`${where}: linux.sysctl ${name} is not in a namespace the container owns (allowed: kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.*, kernel.hostname, kernel.domainname, net.*)`);
    }
    return { name, value };
  });
}

function absolutePaths(list: string[] | undefined, field: string, where: string): string[] {
  for (const p of list ?? []) if (typeof p !== 'string' || !p.startsWith('/')) throw invalidArgument(`${where}: ${field}: ${JSON.stringify(p)} is not an absolute path`);
  return [...(list ?? [])];
}

/** Everything container-wide the guest applies; throws InvalidArgument before any VM exists. */
export function guestContainerConfig(spec: OciSpec, containerId: string): GuestContainerConfig {
  const where = `container ${containerId}`;
  const linux = spec.linux ?? {};
  const security: LinuxSecurity = {
    maskedPaths: absolutePaths(linux.maskedPaths, 'linux.maskedPaths', where),
    readonlyPaths: absolutePaths(linux.readonlyPaths, 'linux.readonlyPaths', where),
    sysctls: guestSysctls(linux.sysctl, where),
    seccomp: guestSeccomp(linux.seccomp, where),
  };
  if (spec.mounts === undefined) return { linux: security, mounts: undefined, shares: [] };
  const { mounts, shares } = guestMounts(spec.mounts, containerId);
  return { linux: security, mounts: { mounts }, shares };
}
