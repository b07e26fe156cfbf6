#include "blkdev.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Longest /sys/block entry name considered (sda, vdb, ...: real names are short). */
#define NAME_MAX_LEN 32
/* A VPD page is at most 4 + 0xffff bytes; serial pages are tiny: read this much. */
#define VPD_READ_MAX 512
#define POLL_INTERVAL_NS 2000000L /* 2 ms */

int blkdev_vpd_pg80_serial(const unsigned char *page, size_t len, char *out, size_t cap)
{
    if (!page || !out || cap == 0 || len < 4 || page[1] != 0x80)
        return -1;
    size_t n = ((size_t)page[2] << 8) | page[3];
    if (n > len - 4)
        return -1;
    const unsigned char *s = page + 4;
    /* Trailing padding (spaces, NULs), then leading spaces. */
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == 0))
        n--;
    while (n > 0 && s[0] == ' ') {
        s++;
        n--;
    }
    if (n == 0 || n >= cap)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return -1;
    memcpy(out, s, n);
    out[n] = 0;
    return (int)n;
}

/* Up to cap bytes of a sysfs file; bytes read or -1. */
static ssize_t read_file(const char *path, unsigned char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t got = 0;
    while (got < cap) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    return (ssize_t)got;
}

/* The serial of /sys/block/<name>, by the kind of disk; -1 when it has none. */
static int disk_serial(const char *sys_block, const char *name, char *out, size_t cap)
{
    char path[512];
    unsigned char buf[VPD_READ_MAX];
    if (strncmp(name, "sd", 2) == 0) {
        if ((size_t)snprintf(path, sizeof path, "%s/%s/device/vpd_pg80", sys_block, name) >= sizeof path)
            return -1;
        ssize_t n = read_file(path, buf, sizeof buf);
        return n < 0 ? -1 : blkdev_vpd_pg80_serial(buf, (size_t)n, out, cap);
    }
    if ((size_t)snprintf(path, sizeof path, "%s/%s/serial", sys_block, name) >= sizeof path)
        return -1;
    ssize_t n = read_file(path, buf, sizeof buf - 1);
    if (n <= 0)
        return -1;
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == 0))
        n--;
    if (n == 0 || (size_t)n >= cap)
        return -1;
    memcpy(out, buf, (size_t)n);
    out[n] = 0;
    return (int)n;
}

/* The virtio-blk disks blkdev_remember saw: in which directory, their names and serials. */
struct known_disk {
    char name[NAME_MAX_LEN + 1];
    char serial[BLKDEV_SERIAL_MAX];
};
static char g_known_dir[256];
static struct known_disk g_known[BLKDEV_MAX_KNOWN];
static size_t g_nknown;

void blkdev_remember(const char *sys_block)
{
    g_nknown = 0;
    if ((size_t)snprintf(g_known_dir, sizeof g_known_dir, "%s", sys_block) >= sizeof g_known_dir)
        return;
    DIR *d = opendir(sys_block);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL && g_nknown < BLKDEV_MAX_KNOWN) {
        size_t len = strlen(e->d_name);
        struct known_disk *k = &g_known[g_nknown];
        if (strncmp(e->d_name, "vd", 2) != 0 || len > NAME_MAX_LEN ||
            disk_serial(sys_block, e->d_name, k->serial, sizeof k->serial) < 0)
            continue;
        memcpy(k->name, e->d_name, len + 1);
        g_nknown++;
    }
    closedir(d);
}

/* The remembered disks of sys_block (none when it is another directory). */
static size_t known_disks(const char *sys_block)
{
    return g_nknown > 0 && strcmp(sys_block, g_known_dir) == 0 ? g_nknown : 0;
}

static bool is_known(const char *name, size_t nknown)
{
    for (size_t i = 0; i < nknown; i++)
        if (strcmp(g_known[i].name, name) == 0)
            return true;
    return false;
}

int blkdev_find_by_serial(const char *sys_block, const char *dev_dir, const char *serial, char *dev, size_t cap)
{
    if (!serial || !serial[0] || strlen(serial) >= BLKDEV_SERIAL_MAX)
        return -1;
    size_t nknown = known_disks(sys_block);
    for (size_t i = 0; i < nknown; i++)
        if (strcmp(g_known[i].serial, serial) == 0)
            return (size_t)snprintf(dev, cap, "%s/%s", dev_dir, g_known[i].name) < cap ? 0 : -1;
    DIR *d = opendir(sys_block);
    if (!d)
        return -1;
    struct dirent *e;
    int rc = -1;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' || strlen(e->d_name) > NAME_MAX_LEN || is_known(e->d_name, nknown))
            continue;
        char value[BLKDEV_SERIAL_MAX];
        if (disk_serial(sys_block, e->d_name, value, sizeof value) < 0 || strcmp(value, serial) != 0)
            continue;
        if ((size_t)snprintf(dev, cap, "%s/%s", dev_dir, e->d_name) < cap)
            rc = 0;
        break;
    }
    closedir(d);
    return rc;
}

static long long elapsed_ms(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (now.tv_sec - start->tv_sec) * 1000LL + (now.tv_nsec - start->tv_nsec) / 1000000;
}

int blkdev_wait_by_serial(const char *sys_block, const char *dev_dir, const char *serial, int timeout_ms,
                          char *dev, size_t cap)
{
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        /* The sysfs entry comes a moment before devtmpfs has the node: wait for both. */
        if (blkdev_find_by_serial(sys_block, dev_dir, serial, dev, cap) == 0 && access(dev, F_OK) == 0)
            return 0;
        if (elapsed_ms(&start) >= timeout_ms)
            return -1;
        struct timespec pause = { 0, POLL_INTERVAL_NS };
        nanosleep(&pause, NULL);
    }
}
