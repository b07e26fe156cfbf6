// The OCI spec's `linux.resources` (at Create) and containerd's Update request (an Any whose
// value is the JSON LinuxResources) turned into the agent's LinuxResources message, checked
// first so that a bad value is an InvalidArgument naming the field, before any VM is touched.
// What the guest applies: memory (limit, reservation, swap), cpu (shares, quota, period, cpus,
// mems) and pids. Devices, blockIO, hugepages, network, rdma and unified are not applied in
// the guest; they are reported back so that the caller can log them.
import { invalidArgument } from '../errdefs';
import type { Any } from '../gen/google/protobuf/any';
import type { LinuxResources as AgentLinuxResources } from '../gen/smolvm/agent';

export const LINUX_RESOURCES_TYPE_URL = 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources';
/** Accepted spellings: containerd's, and the same name under another host prefix. */
const RESOURCES_TYPE_SUFFIX = '/opencontainers/runtime-spec/1/LinuxResources';
const MAX_RESOURCES_BYTES = 1 << 20;

const INT64_MAX = (1n << 63n) - 1n;
const UINT64_MAX = (1n << 64n) - 1n;
/** runc's accepted cpu.shares range (cgroup v1's; converted to cpu.weight 1..10000). */
const MIN_CPU_SHARES = 2n;
const MAX_CPU_SHARES = 262144n;
/** The kernel's CFS bandwidth bounds (us). */
const MIN_CPU_PERIOD = 1000n;
const MAX_CPU_PERIOD = 1_000_000n;
const MIN_CPU_QUOTA = 1000n;
const CPUSET = /^[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*$/;

/** Sections of LinuxResources the guest does not apply (reported, not refused). */
const NOT_APPLIED = ['blockIO', 'hugepageLimits', 'network', 'rdma', 'unified'] as const;

export interface GuestResources {
  /** The agent message; undefined when nothing the guest applies is set. */
  readonly resources: AgentLinuxResources | undefined;
  /** memory.limit in bytes when positive (sizes the VM), else undefined. */
  readonly memoryLimitBytes: bigint | undefined;
  /** Sections that were set but are not applied in the guest, e.g. "blockIO". */
  readonly notApplied: string[];
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** containerd's Update: the Any's JSON LinuxResources, as an object (checked by guestResources). */
export function parseUpdateResources(any: Any | undefined, what: string): Record<string, unknown> {
  if (!any || any.value.length === 0) throw invalidArgument(`${what}: update has no resources`);
  if (any.typeUrl !== LINUX_RESOURCES_TYPE_URL && !any.typeUrl.endsWith(RESOURCES_TYPE_SUFFIX)) {
    throw invalidArgument(`${what}: update resources have type ${JSON.stringify(any.typeUrl)}, want ${LINUX_RESOURCES_TYPE_URL}`);
  }
  if (any.value.length > MAX_RESOURCES_BYTES) {
    throw invalidArgument(`${what}: update resources are ${any.value.length} bytes (max ${MAX_RESOURCES_BYTES})`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(any.value).toString('utf8'));
  } catch (err) {
    throw invalidArgument(`${what}: update resources are not valid JSON: ${(err as Error).message}`);
  }
  if (!isObject(raw)) throw invalidArgument(`${what}: update resources must be a JSON object (LinuxResources)`);
  return raw;
}

/**
 * Checks `linux.resources` (or an Update's LinuxResources) and builds the agent message.
 * `where` starts every error, e.g. "container c1".
 */
export function guestResources(raw: unknown, where: string): GuestResources {
  if (raw === undefined || raw === null) return { resources: undefined, memoryLimitBytes: undefined, notApplied: [] };
  const bad = (field: string, why: string): Error => invalidArgument(`${where}: linux.resources${field ? `.${field}` : ''} ${why}`);
  if (!isObject(raw)) throw bad('', 'must be an object');
  const section = (name: string): Record<string, unknown> | undefined => {
    const v = raw[name];
    if (v === undefined || v === null) return undefined;
    if (!isObject(v)) throw bad(name, 'must be an object');
    return v;
  };
  /** An integer JSON number within [min, max] (past 2^53 JSON loses precision: clamped). */
  const int = (obj: Record<string, unknown>, sec: string, key: string, min: bigint, max: bigint, unit: string): bigint | undefined => {
    const v = obj[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isFinite(v) || !Number.isInteger(v)) {
      throw bad(`${sec}.${key}`, `must be an integer (${unit}), got ${JSON.stringify(v)}`);
    }
    let n = BigInt(v);
    if (n > max && v >= 2 ** 63) n = max; // e.g. 2^64-1 for "unlimited", rounded up by JSON
    if (n < min || n > max) throw bad(`${sec}.${key}`, `${v} is out of range (${min}..${max} ${unit})`);
    return n;
  };
  const out: AgentLinuxResources = {};
  let any = false;
  let memoryLimitBytes: bigint | undefined;

  const memory = section('memory');
  if (memory) {
    const limit = int(memory, 'memory', 'limit', -1n, INT64_MAX, 'bytes, or -1 for unlimited');
    const reservation = int(memory, 'memory', 'reservation', -1n, INT64_MAX, 'bytes, or -1 for unlimited');
    const swap = int(memory, 'memory', 'swap', -1n, INT64_MAX, 'bytes of memory + swap, or -1 for unlimited');
    if (swap !== undefined && swap > 0n) {
      // With both in one request the agent would refuse the same; say it before a VM exists.
      if (limit === -1n) throw bad('memory.swap', `${swap} needs a memory limit (memory.limit) too`);
      if (limit !== undefined && limit > 0n && swap < limit) {
        throw bad('memory.swap', `${swap} is less than memory.limit ${limit} (swap counts memory + swap, so it must be >= the limit)`);
      }
    }
    if (limit !== undefined) { out.memoryLimit = limit; any = true; }
    if (reservation !== undefined) { out.memoryReservation = reservation; any = true; }
    if (swap !== undefined) { out.memorySwap = swap; any = true; }
    if (limit !== undefined && limit > 0n) memoryLimitBytes = limit;
  }

  const cpu = section('cpu');
  if (cpu) {
    const shares = int(cpu, 'cpu', 'shares', 0n, UINT64_MAX, 'shares');
    if (shares !== undefined && shares !== 0n && (shares < MIN_CPU_SHARES || shares > MAX_CPU_SHARES)) {
      throw bad('cpu.shares', `${shares} is out of range (${MIN_CPU_SHARES}..${MAX_CPU_SHARES})`);
    }
    const quota = int(cpu, 'cpu', 'quota', -(INT64_MAX + 1n), INT64_MAX, 'microseconds, or -1 for unlimited');
    if (quota !== undefined && quota > 0n && quota < MIN_CPU_QUOTA) throw bad('cpu.quota', `${quota} is below the kernel's minimum of ${MIN_CPU_QUOTA} microseconds`);
    const period = int(cpu, 'cpu', 'period', 0n, UINT64_MAX, 'microseconds');
    if (period !== undefined && period !== 0n && (period < MIN_CPU_PERIOD || period > MAX_CPU_PERIOD)) {
      throw bad('cpu.period', `${period} is out of range (${MIN_CPU_PERIOD}..${MAX_CPU_PERIOD} microseconds)`);
    }
    for (const key of ['cpus', 'mems'] as const) {
      const v = cpu[key];
      if (v === undefined || v === null || v === '') continue;
      if (typeof v !== 'string' || !CPUSET.test(v)) throw bad(`cpu.${key}`, `must be a list like "0-2,4", got ${JSON.stringify(v)}`);
    }
    if (shares !== undefined) { out.cpuShares = shares; any = true; }
    if (quota !== undefined) { out.cpuQuota = quota; any = true; }
    if (period !== undefined) { out.cpuPeriod = period; any = true; }
    if (typeof cpu.cpus === 'string' && cpu.cpus !== '') { out.cpusetCpus = cpu.cpus; any = true; }
    if (typeof cpu.mems === 'string' && cpu.mems !== '') { out.cpusetMems = cpu.mems; any = true; }
  }

  const pids = section('pids');
  if (pids) {
    const limit = int(pids, 'pids', 'limit', -(INT64_MAX + 1n), INT64_MAX, 'processes, or -1 / 0 for unlimited');
    if (limit !== undefined) { out.pidsLimit = limit; any = true; }
  }

  const notApplied = NOT_APPLIED.filter((name) => {
    const v = raw[name];
    return v !== undefined && v !== null && !(Array.isArray(v) && v.length === 0) && !(isObject(v) && Object.keys(v).length === 0);
  });
  return { resources: any ? out : undefined, memoryLimitBytes, notApplied };
}
