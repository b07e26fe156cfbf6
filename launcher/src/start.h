/* `start` through the warm pool: when a spare daemon takes this container, its address is the
 * answer and no node process starts at all. Every case it does not fully understand is node's. */
#ifndef SMOLVM_LAUNCHER_START_H
#define SMOLVM_LAUNCHER_START_H

#include "flags.h"
#include "util.h"

/* FAST_FALLBACK leaves fd 0 as node must see it (the bytes read from it are back on it). */
enum fast_result start_fast(const struct shim_flags *flags);

#endif
