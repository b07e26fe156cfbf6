/**
 * Builds the virtio test guest (test/guests/virtio: a 64-bit freestanding ELF taking the VMM's
 * Linux 64-bit entry) with the host gcc. The guest drives virtio-blk, virtio-vsock and
 * virtio-rng through real virtqueues; the first word of its kernel command line picks which.
 */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { GUEST_SOURCES } from '../vmm-harness';

export const VIRTIO_GUEST_SOURCES = path.join(GUEST_SOURCES, 'virtio');

const SOURCES = ['entry.S', 'io.c', 'cmdline.c', 'virtio.c', 'blk.c', 'vsock.c', 'rng.c', 'main.c'];

/** Compiles and links the guest into `outDir`/virtio-guest.elf and returns that path. */
export function buildVirtioGuest(outDir: string): string {
  const output = path.join(outDir, 'virtio-guest.elf');
  execFileSync('gcc', [
    '-std=gnu11', '-O2', '-Wall', '-Wextra', '-Werror',
    // Freestanding, no libc: our own memcpy/memset, and gcc must not turn loops into calls.
    '-ffreestanding', '-fno-builtin', '-nostdlib', '-static', '-no-pie', '-fno-pic',
    '-fno-tree-loop-distribute-patterns', '-fno-stack-protector', '-fno-asynchronous-unwind-tables',
    // Ring 0 without an IDT or SSE set up: no red zone, integer registers only.
    '-mno-red-zone', '-mgeneral-regs-only',
    '-Wl,--build-id=none', '-Wl,--no-warn-rwx-segments',
    '-Wl,-T,' + path.join(VIRTIO_GUEST_SOURCES, 'guest.ld'),
    '-o', output,
    ...SOURCES.map((source) => path.join(VIRTIO_GUEST_SOURCES, source)),
  ], { stdio: ['ignore', 'ignore', 'inherit'] });
  return output;
}
