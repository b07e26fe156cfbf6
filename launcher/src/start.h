/* `start` for containerd 1.6 (a bare address over ttrpc), one container per group: the live
 * daemon of the group, a warm-pool spare, or a new daemon spawned as start.ts does, all without
 * a node process for `start` itself. Every case it does not fully understand is node's. */
#ifndef SMOLVM_LAUNCHER_START_H
#define SMOLVM_LAUNCHER_START_H

#include "flags.h"
#include "util.h"

/* FAST_FALLBACK leaves fd 0 as node must see it (the bytes read from it are back on it). */
enum fast_result start_fast(const struct shim_flags *flags);

#endif
