// How much memory a container's VM gets: the configured size, or more when the spec's memory
// limit needs it. The guest cgroup enforces the exact limit; the VM must hold that limit plus
// what the guest itself uses (kernel, its page tables and caches, the agent), or the guest's
// own OOM killer would fire before the container's limit is reached.
import * as os from 'node:os';
import { invalidArgument } from '../errdefs';

const MiB = 1024n * 1024n;

/**
 * Guest memory outside the container's cgroup, measured on the smolvm guest kernel (6.1,
 * microvm config) at "agent ready" with a container running: a 256 MiB VM has MemTotal 238 MiB
 * and 18 MiB in use outside the container (36 MiB in all); a 1024 MiB VM has MemTotal 993 MiB
 * and 21 MiB in use (52 MiB): ~31 MiB fixed plus ~1/48 of the VM (memmap, page tables).
 * Rounded up: a fixed part and a part proportional to the limit.
 */
export const GUEST_MEMORY_OVERHEAD_MIB = 40;
/** The proportional part: 1 MiB per this many MiB of limit. */
export const GUEST_MEMORY_OVERHEAD_RATIO = 32;

/** Guest overhead in MiB for a limit of `limitMiB`. */
export function guestOverheadMiB(limitMiB: bigint): bigint {
  const ratio = BigInt(GUEST_MEMORY_OVERHEAD_RATIO);
  return BigInt(GUEST_MEMORY_OVERHEAD_MIB) + (limitMiB + ratio - 1n) / ratio;
}

/**
 * VM sizes grow in powers of two from the configured size: every VM of one size class restores
 * from the same template, and pages the guest never touches cost the host nothing.
 */
export function sizeClassMiB(configuredMiB: number, neededMiB: number): number {
  let size = configuredMiB;
  while (size < neededMiB) size *= 2;
  return size;
}

/**
 * The VM size in MiB for a container with `limitBytes` (undefined: no limit): the smallest size
 * class that holds the limit plus the guest's overhead. A limit the host
 * cannot give (more than its physical memory) is InvalidArgument naming both numbers.
 */
export function vmMemoryMiB(configuredMiB: number, limitBytes: bigint | undefined, where: string, hostBytes = os.totalmem()): number {
  if (limitBytes === undefined || limitBytes <= 0n) return configuredMiB;
  const limitMiB = (limitBytes + MiB - 1n) / MiB;
  const overhead = guestOverheadMiB(limitMiB);
  const needed = limitMiB + overhead;
  const hostMiB = BigInt(hostBytes) / MiB;
  if (needed > hostMiB) {
    throw invalidArgument(`${where}: linux.resources.memory.limit ${limitBytes} bytes (${limitMiB} MiB) needs a VM of ${needed} MiB (limit + ${overhead} MiB guest overhead), more than this host's ${hostMiB} MiB of memory`);
  }
  return sizeClassMiB(configuredMiB, Number(needed));
}

/**
 * The largest memory limit a running VM of `vmMiB` can honour (its memory is fixed at boot):
 * an Update above it is refused rather than silently capped by the guest's size.
 */
export function maxLimitForVm(vmMiB: number): bigint {
  const ratio = BigInt(GUEST_MEMORY_OVERHEAD_RATIO);
  const usable = BigInt(Math.max(0, vmMiB - GUEST_MEMORY_OVERHEAD_MIB));
  // The largest limit L with L + ceil(L / ratio) <= usable.
  let limitMiB = (usable * ratio) / (ratio + 1n);
  while (limitMiB > 0n && limitMiB + guestOverheadMiB(limitMiB) > BigInt(vmMiB)) limitMiB -= 1n;
  return limitMiB * MiB;
}
