// The guest agent's cgroup counters (StatsContainerResponse) as containerd's cgroup v2 metrics:
// `io.containerd.cgroups.v2.Metrics` in an Any, what runc's shim answers Stats with and what
// `ctr task metrics` and CRI decode. Field meanings follow containerd/cgroups' cgroup2 manager:
// memory.usage = memory.current, usage_limit = memory.max ("max" = 2^64-1), max_usage =
// memory.peak; memory.stat keys by name (a key the guest kernel lacks stays 0).
import { CPUStat, MemoryEvents, MemoryStat, Metrics, PidsStat } from '../gen/containerd/cgroups/v2/metrics';
import type { Any } from '../gen/google/protobuf/any';
import type { CgroupCounter, StatsContainerResponse } from '../gen/smolvm/agent';

/** The bare message name, as containerd's typeurl registers it (no type.googleapis.com/). */
export const CGROUP2_METRICS_TYPE_URL = 'io.containerd.cgroups.v2.Metrics';

/** memory.stat keys → MemoryStat fields (snake_case → camelCase, the ones upstream has). */
const MEMORY_STAT_KEYS = [
  'anon', 'file', 'kernel_stack', 'slab', 'sock', 'shmem', 'file_mapped', 'file_dirty', 'file_writeback', 'anon_thp',
  'inactive_anon', 'active_anon', 'inactive_file', 'active_file', 'unevictable', 'slab_reclaimable',
  'slab_unreclaimable', 'pgfault', 'pgmajfault', 'workingset_refault', 'workingset_activate',
  'workingset_nodereclaim', 'pgrefill', 'pgscan', 'pgsteal', 'pgactivate', 'pgdeactivate', 'pglazyfree',
  'pglazyfreed', 'thp_fault_alloc', 'thp_collapse_alloc',
] as const;

type CounterFields<T> = { [K in keyof T]: T[K] extends bigint ? K : never }[keyof T];

const camel = (key: string): string => key.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());

function counters(list: readonly CgroupCounter[]): Map<string, bigint> {
  return new Map(list.map((c) => [c.name, c.value]));
}

/** Newer kernels split workingset_refault into _anon and _file: report their sum. */
function withCombinedRefaults(stat: Map<string, bigint>): Map<string, bigint> {
  for (const key of ['workingset_refault', 'workingset_activate'] as const) {
    if (stat.has(key)) continue;
    const anon = stat.get(`${key}_anon`);
    const file = stat.get(`${key}_file`);
    if (anon !== undefined || file !== undefined) stat.set(key, (anon ?? 0n) + (file ?? 0n));
  }
  return stat;
}

export function toCgroupMetrics(stats: StatsContainerResponse): Metrics {
  const cpuStat = counters(stats.cpuStat);
  const cpu: CPUStat = CPUStat.fromPartial({
    usageUsec: cpuStat.get('usage_usec') ?? 0n,
    userUsec: cpuStat.get('user_usec') ?? 0n,
    systemUsec: cpuStat.get('system_usec') ?? 0n,
    nrPeriods: cpuStat.get('nr_periods') ?? 0n,
    nrThrottled: cpuStat.get('nr_throttled') ?? 0n,
    throttledUsec: cpuStat.get('throttled_usec') ?? 0n,
  });
  const memStat = withCombinedRefaults(counters(stats.memoryStat));
  const memory: MemoryStat = MemoryStat.fromPartial({
    usage: stats.memoryCurrent,
    usageLimit: stats.memoryMax,
    swapUsage: stats.memorySwapCurrent,
    swapLimit: stats.memorySwapMax,
    maxUsage: stats.memoryPeak,
  });
  for (const key of MEMORY_STAT_KEYS) {
    const field = camel(key) as CounterFields<MemoryStat>;
    memory[field] = memStat.get(key) ?? 0n;
  }
  const events = counters(stats.memoryEvents);
  const memoryEvents: MemoryEvents = MemoryEvents.fromPartial({
    low: events.get('low') ?? 0n,
    high: events.get('high') ?? 0n,
    max: events.get('max') ?? 0n,
    oom: events.get('oom') ?? 0n,
    oomKill: events.get('oom_kill') ?? 0n,
  });
  const pids: PidsStat = { current: stats.pidsCurrent, limit: stats.pidsMax };
  return Metrics.fromPartial({
    pids, cpu, memory, memoryEvents,
    io: { usage: stats.io.map((d) => ({ major: BigInt(d.major), minor: BigInt(d.minor), rbytes: d.rbytes, wbytes: d.wbytes, rios: d.rios, wios: d.wios })) },
  });
}

/** StatsResponse.stats: the metrics in an Any that containerd decodes by its bare name. */
export function packCgroupMetrics(metrics: Metrics): Any {
  return { typeUrl: CGROUP2_METRICS_TYPE_URL, value: Buffer.from(Metrics.encode(metrics).finish()) };
}
