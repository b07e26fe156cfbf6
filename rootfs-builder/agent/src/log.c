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

int log_get_fd(void)
{
    return log_fd;
}

void log_set_fd(int fd)
{
    log_fd = fd;
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

#ifdef SMOLVM_TIMING
#include <stdint.h>
#include <time.h>

/* The guest's clock ticks in jiffies under TCG (4 ms): time with the TSC, which QEMU's TCG
 * takes from the host's; its rate is the host's (make TIMING_TSC_MHZ=...). */
#ifndef TIMING_TSC_MHZ
#define TIMING_TSC_MHZ 2596
#endif

static uint64_t timing_start, timing_last;
static char timing_line[768];
static size_t timing_len;

static uint64_t tsc_now(void)
{
    uint32_t lo, hi;
    __asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
    return ((uint64_t)hi << 32) | lo;
}

static double tsc_ms(uint64_t from, uint64_t to)
{
    return (double)(to - from) / (TIMING_TSC_MHZ * 1000.0);
}

/* idle + iowait of /proc/stat's cpu line, in USER_HZ ticks (0 when unreadable). */
static unsigned long long idle_ticks(void)
{
    char buf[256];
    int fd = open("/proc/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    unsigned long long v[5];
    if (sscanf(buf, "cpu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4]) != 5)
        return 0;
    return v[3] + v[4];
}

static unsigned long long timing_idle;

void timing_begin(void)
{
    timing_idle = idle_ticks();
    timing_start = timing_last = tsc_now();
    timing_len = 0;
    timing_line[0] = 0;
}

void timing_mark(const char *step)
{
    uint64_t now = tsc_now();
    if (timing_len < sizeof timing_line) {
        int n = snprintf(timing_line + timing_len, sizeof timing_line - timing_len, " %s=%.2f", step,
                         tsc_ms(timing_last, now));
        if (n > 0)
            timing_len += (size_t)n;
    }
    timing_last = tsc_now();
}

void timing_end(const char *what)
{
    double total = tsc_ms(timing_start, tsc_now());
    log_msg("info", "timing: %s: total=%.2f ms: idle_ticks=%llu%s", what, total, idle_ticks() - timing_idle,
            timing_line);
}
#endif
