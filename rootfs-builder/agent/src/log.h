/* Logging for smolvm-init: one line per message on the console (fd 2, which the kernel
 * opened on /dev/console for PID 1). Falls back to /dev/kmsg when fd 2 is unusable. */
#ifndef SMOLVM_LOG_H
#define SMOLVM_LOG_H

#include <stdbool.h>

extern bool log_debug_enabled;

void log_init(void);
void log_msg(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define LOG_INFO(...) log_msg("info", __VA_ARGS__)
#define LOG_WARN(...) log_msg("warn", __VA_ARGS__)
#define LOG_ERR(...) log_msg("error", __VA_ARGS__)
#define LOG_DEBUG(...) \
    do { if (log_debug_enabled) log_msg("debug", __VA_ARGS__); } while (0)

#endif
