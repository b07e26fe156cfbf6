/* Small helpers shared by the launcher's fast paths: bounded path building, name checks,
 * full writes, a monotonic clock. */
#ifndef SMOLVM_LAUNCHER_UTIL_H
#define SMOLVM_LAUNCHER_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROG "containerd-shim-smolvm-v1"

/* What a fast path tells main(): answered, hand over to node, or failed after a side effect. */
enum fast_result { FAST_DONE = 0, FAST_FALLBACK = 1, FAST_FAILED = 2 };

/* "a/b" into buf; -1 when it does not fit (never a truncated path). */
int path_join(char *buf, size_t cap, const char *a, const char *b);

/* A single path component containerd could have given: not empty, not . or .., no '/',
 * no newline. Anything else goes to node, which knows what to do with it. */
bool is_plain_name(const char *s);

/* A value that can go on one line of the claim protocol (no newline; NUL cannot occur). */
bool is_line_safe(const char *s);

/* True when some '/'-separated component of s is "..": node's path.join would resolve it
 * lexically, the kernel physically, so such paths are left to node. */
bool has_dotdot_component(const char *s);

/* <stateDir> as shim/src/config/paths.ts computes it; -1 when it is not one we handle. */
int state_dir(char *buf, size_t cap);

/* write(2) until all is written (EINTR retried); 0 or -1 with errno set. */
int write_all(int fd, const void *data, size_t len);

/* CLOCK_MONOTONIC in milliseconds. */
int64_t monotonic_ms(void);

#endif
