import * as assert from 'node:assert/strict';
import { Code, RpcError } from '../../shim/src/errdefs';
import { CGROUP2_METRICS_TYPE_URL, packCgroupMetrics, toCgroupMetrics } from '../../shim/src/task/metrics';
import { guestOverheadMiB, maxLimitForVm, vmMemoryMiB } from '../../shim/src/task/memory-sizing';
import { guestResources, LINUX_RESOURCES_TYPE_URL, parseUpdateResources } from '../../shim/src/oci/resources';
import { Metrics } from '../../shim/src/gen/containerd/cgroups/v2/metrics';
import { StatsContainerResponse } from '../../shim/src/gen/smolvm/agent';

const MiB = 1024 * 1024;

function rejects(fn: () => unknown, code: Code, pattern: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof RpcError, String(err));
    assert.equal(err.code, code);
    assert.match(err.message, pattern);
    return true;
  });
}

const json = (v: unknown, typeUrl = LINUX_RESOURCES_TYPE_URL) => ({ typeUrl, value: Buffer.from(JSON.stringify(v)) });

describe('linux.resources → agent LinuxResources', () => {
  it('maps memory, cpu and pids, keeping unset fields absent', () => {
    const r = guestResources({
      memory: { limit: 128 * MiB, reservation: 64 * MiB, swap: 256 * MiB },
      cpu: { shares: 1024, quota: 50000, period: 100000, cpus: '0-1', mems: '0' },
      pids: { limit: 64 },
      devices: [{ allow: false, access: 'rwm' }],
    }, 'container c');
    assert.deepEqual(r.resources, {
      memoryLimit: BigInt(128 * MiB), memoryReservation: BigInt(64 * MiB), memorySwap: BigInt(256 * MiB),
      cpuShares: 1024n, cpuQuota: 50000n, cpuPeriod: 100000n, cpusetCpus: '0-1', cpusetMems: '0', pidsLimit: 64n,
    });
    assert.equal(r.memoryLimitBytes, BigInt(128 * MiB));
    assert.deepEqual(r.notApplied, []);
    const only = guestResources({ cpu: { quota: -1 } }, 'c');
    assert.deepEqual(only.resources, { cpuQuota: -1n });
    assert.equal(only.memoryLimitBytes, undefined);
  });

  it('gives undefined when nothing the guest applies is set, and names the sections it does not apply', () => {
    assert.equal(guestResources(undefined, 'c').resources, undefined);
    const r = guestResources({ devices: [], blockIO: { weight: 10 }, hugepageLimits: [] }, 'c');
    assert.equal(r.resources, undefined);
    assert.deepEqual(r.notApplied, ['blockIO']);
  });

  it('-1 is unlimited; 2^64-1 rounded by JSON is clamped, not refused', () => {
    assert.equal(guestResources({ memory: { limit: -1 } }, 'c').resources?.memoryLimit, -1n);
    assert.equal(guestResources({ memory: { limit: -1 } }, 'c').memoryLimitBytes, undefined);
    assert.equal(guestResources({ memory: { limit: 2 ** 64 } }, 'c').resources?.memoryLimit, (1n << 63n) - 1n);
  });

  it('refuses bad values naming the field', () => {
    rejects(() => guestResources({ memory: { limit: 'lots' } }, 'container c'), Code.InvalidArgument, /container c: linux\.resources\.memory\.limit must be an integer/);
    rejects(() => guestResources({ memory: { limit: 1.5 } }, 'c'), Code.InvalidArgument, /memory\.limit/);
    rejects(() => guestResources({ memory: { limit: -2 } }, 'c'), Code.InvalidArgument, /memory\.limit -2 is out of range/);
    rejects(() => guestResources({ memory: { limit: 100, swap: 50 } }, 'c'), Code.InvalidArgument, /memory\.swap 50 is less than memory\.limit 100/);
    rejects(() => guestResources({ memory: { limit: -1, swap: 50 } }, 'c'), Code.InvalidArgument, /needs a memory limit/);
    rejects(() => guestResources({ cpu: { shares: 1 } }, 'c'), Code.InvalidArgument, /cpu\.shares 1 is out of range/);
    rejects(() => guestResources({ cpu: { period: 10 } }, 'c'), Code.InvalidArgument, /cpu\.period 10/);
    rejects(() => guestResources({ cpu: { quota: 10 } }, 'c'), Code.InvalidArgument, /cpu\.quota 10 is below/);
    rejects(() => guestResources({ cpu: { cpus: '0;reboot' } }, 'c'), Code.InvalidArgument, /cpu\.cpus must be a list/);
    rejects(() => guestResources({ memory: 5 }, 'c'), Code.InvalidArgument, /linux\.resources\.memory must be an object/);
    rejects(() => guestResources([], 'c'), Code.InvalidArgument, /linux\.resources must be an object/);
  });

  it("parses Update's Any: type URL, JSON, object", () => {
    assert.deepEqual(parseUpdateResources(json({ pids: { limit: 5 } }), 'container c'), { pids: { limit: 5 } });
    rejects(() => parseUpdateResources(undefined, 'container c'), Code.InvalidArgument, /container c: update has no resources/);
    rejects(() => parseUpdateResources(json({}, 'types.containerd.io/opencontainers/runtime-spec/1/Process'), 'c'), Code.InvalidArgument, /want types\.containerd\.io\/opencontainers\/runtime-spec\/1\/LinuxResources/);
    rejects(() => parseUpdateResources({ typeUrl: LINUX_RESOURCES_TYPE_URL, value: Buffer.from('{') }, 'c'), Code.InvalidArgument, /not valid JSON/);
    rejects(() => parseUpdateResources(json([1]), 'c'), Code.InvalidArgument, /must be a JSON object/);
  });
});

describe('VM memory sizing', () => {
  it('keeps the configured size unless the limit plus the guest overhead needs more', () => {
    assert.equal(vmMemoryMiB(256, undefined, 'c'), 256);
    assert.equal(vmMemoryMiB(256, BigInt(64 * MiB), 'c'), 256);
    // 300 MiB: 40 MiB fixed + ceil(300 / 32) = 10 MiB.
    // The smallest power-of-two class above the configured size that holds limit + overhead
    // (templates are per size): 300 MiB needs 350, so 512; 1 GiB needs 1096, so 2048.
    assert.equal(vmMemoryMiB(256, BigInt(300 * MiB), 'c'), 512);
    assert.equal(vmMemoryMiB(256, BigInt(450 * MiB), 'c'), 512);
    assert.equal(450 + Number(guestOverheadMiB(450n)) <= 512, true);
    assert.equal(vmMemoryMiB(256, BigInt(480 * MiB), 'c'), 1024);
    assert.equal(vmMemoryMiB(256, BigInt(1024 * MiB), 'c'), 2048);
    assert.equal(vmMemoryMiB(300, BigInt(400 * MiB), 'c'), 600);
  });

  it('refuses a limit the host cannot give', () => {
    rejects(() => vmMemoryMiB(256, BigInt(8192) * BigInt(MiB), 'container c', 4096 * MiB), Code.InvalidArgument, /container c: linux\.resources\.memory\.limit 8589934592 bytes .* more than this host's 4096 MiB/);
  });

  it('bounds Update by what the VM can hold', () => {
    const max = maxLimitForVm(256);
    const maxMiB = max / BigInt(MiB);
    assert.ok(maxMiB + guestOverheadMiB(maxMiB) <= 256n);
    assert.ok(maxMiB + 1n + guestOverheadMiB(maxMiB + 1n) > 256n);
    // A VM sized for a limit can take that limit back in an Update.
    assert.ok(maxLimitForVm(vmMemoryMiB(256, BigInt(300 * MiB), 'c')) >= BigInt(300 * MiB));
  });
});

describe('agent stats → io.containerd.cgroups.v2.Metrics', () => {
  const stats: StatsContainerResponse = StatsContainerResponse.fromPartial({
    cpuStat: [{ name: 'usage_usec', value: 1500n }, { name: 'user_usec', value: 1000n }, { name: 'system_usec', value: 500n }, { name: 'nr_throttled', value: 2n }],
    memoryStat: [{ name: 'anon', value: 4096n }, { name: 'inactive_file', value: 100n }, { name: 'workingset_refault_anon', value: 3n }, { name: 'workingset_refault_file', value: 4n }, { name: 'unknown_key', value: 9n }],
    memoryEvents: [{ name: 'oom', value: 1n }, { name: 'oom_kill', value: 2n }],
    memoryCurrent: 1048576n, memoryMax: (1n << 64n) - 1n, memoryPeak: 2097152n,
    pidsCurrent: 3n, pidsMax: 64n,
    io: [{ major: 254, minor: 0, rbytes: 4096n, wbytes: 0n, rios: 1n, wios: 0n }],
  });

  it('maps every counter to its upstream field', () => {
    const m = toCgroupMetrics(stats);
    assert.equal(m.cpu?.usageUsec, 1500n);
    assert.equal(m.cpu?.nrThrottled, 2n);
    assert.equal(m.memory?.usage, 1048576n);
    assert.equal(m.memory?.usageLimit, (1n << 64n) - 1n);
    assert.equal(m.memory?.maxUsage, 2097152n);
    assert.equal(m.memory?.anon, 4096n);
    assert.equal(m.memory?.inactiveFile, 100n);
    assert.equal(m.memory?.workingsetRefault, 7n);
    assert.equal(m.memoryEvents?.oomKill, 2n);
    assert.deepEqual(m.pids, { current: 3n, limit: 64n });
    assert.equal(m.io?.usage[0]?.major, 254n);
  });

  it('packs it with the type URL containerd decodes, with upstream field numbers', () => {
    const any = packCgroupMetrics(toCgroupMetrics(stats));
    assert.equal(any.typeUrl, CGROUP2_METRICS_TYPE_URL);
    assert.equal(any.typeUrl, 'io.containerd.cgroups.v2.Metrics');
    const back = Metrics.decode(any.value);
    assert.equal(back.memory?.usageLimit, (1n << 64n) - 1n);
    // Metrics.pids = 1 {current = 1, limit = 2}: the first bytes on the wire.
    assert.deepEqual([...any.value.subarray(0, 6)], [0x0a, 0x04, 0x08, 0x03, 0x10, 0x40]);
    // MemoryStat.usage_limit = 33 (tag 0x88 0x02) inside Metrics.memory = 4.
    const memory = Buffer.from(back.memory ? Metrics.encode({ ...back, pids: undefined, cpu: undefined, io: undefined, memoryEvents: undefined }).finish() : []);
    assert.equal(memory[0], 0x22);
    assert.ok(memory.includes(Buffer.from([0x88, 0x02, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01])));
  });
});
