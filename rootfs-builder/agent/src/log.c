#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

bool log_debug_enabled = false;
static int log_fd = 2;

void log_init(void)
{
    /* fd 2 is the console when the kernel found /dev/console in the initramfs. */
    if (fcntl(2, F_GETFD) < 0) {
        int fd = open("/dev/kmsg", O_WRONLY | O_CLOEXEC | O_NOCTTY);
        log_fd = fd >= 0 ? fd : -1;
    }
}

void log_msg(const char *level, const char *fmt, ...)
{
    if (log_fd < 0)
        return;
    char line[1024];
    int n = snprintf(line, sizeof line, "smolvm-init: %s: ", level);
    if (n < 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    int saved = errno;
    /* One write so concurrent writers (children before exec) do not interleave lines. */
    ssize_t w = write(log_fd, line, len);
    (void)w;
    errno = saved;
}
