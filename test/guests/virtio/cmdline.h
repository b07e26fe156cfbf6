/* The kernel command line the VMM hands the guest: the first word is the mode, then
   key=value numbers, then the VMM's virtio_mmio.device=4K@0x<base>:<gsi> declarations. */
#pragma once

#include <stdint.h>

#define CMDLINE_MAX 4096

struct mmio_slot {
  uint64_t base;
  uint32_t gsi;
};

/* Whether the first word of `cmdline` is `word`. */
int cmdline_mode_is(const char *cmdline, const char *word);
/* The value of the first "key=<decimal or 0x hex>" word, or `fallback` when there is none.
   A malformed number fails the guest. */
uint64_t cmdline_number(const char *cmdline, const char *key, uint64_t fallback);
/* Fills `slots` (at most `max`) from the virtio_mmio.device words, in order; returns how many.
   A malformed declaration fails the guest. */
int cmdline_mmio_slots(const char *cmdline, struct mmio_slot *slots, int max);
