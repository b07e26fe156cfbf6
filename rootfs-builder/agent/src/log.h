/* Logging for smolvm-init: one line per message on the console (fd 2, which the kernel
 * opened on /dev/console for PID 1). Falls back to /dev/kmsg when fd 2 is unusable. */
#ifndef SMOLVM_LOG_H
#define SMOLVM_LOG_H

#include <stdbool.h>

extern bool log_debug_enabled;

void log_init(void);
void log_msg(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The log's fd (-1: log nothing, as the host-side unit tests do; a child keeps it across its fd
 * shuffle to report its own timings). */
int log_get_fd(void);
void log_set_fd(int fd);

#define LOG_INFO(...) log_msg("info", __VA_ARGS__)
#define LOG_WARN(...) log_msg("warn", __VA_ARGS__)
#define LOG_ERR(...) log_msg("error", __VA_ARGS__)
#define LOG_DEBUG(...) \
    do { if (log_debug_enabled) log_msg("debug", __VA_ARGS__); } while (0)

/* Step timings of the hot paths (CreateContainer), for measurements: built with
 * `make TIMING=1` (-DSMOLVM_TIMING) they are logged as one line "timing: <what>: step ms ...";
 * otherwise they compile to nothing. One timer at a time (the agent is single-threaded; a
 * cloned child has its own copy). */
#ifdef SMOLVM_TIMING
void timing_begin(void);
void timing_mark(const char *step);
void timing_end(const char *what);
#define TIMING_BEGIN() timing_begin()
#define TIMING_MARK(step) timing_mark(step)
#define TIMING_END(what) timing_end(what)
#else
#define TIMING_BEGIN() ((void)0)
#define TIMING_MARK(step) ((void)0)
#define TIMING_END(what) ((void)0)
#endif

#endif
