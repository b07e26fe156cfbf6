#include "reseed.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "rpc_status.h"

/* From <linux/random.h>, which clashes with musl's ioctl macros. */
#ifndef RNDADDENTROPY
#define RNDADDENTROPY _IOW('R', 0x03, int[2])
#endif
#ifndef RNDRESEEDCRNG
#define RNDRESEEDCRNG _IO('R', 0x07)
#endif
struct rand_pool_info {
    int entropy_count;
    int buf_size;
    uint32_t buf[];
};

#define HOSTNAME_MAX 64
/* /dev/hwrng answers asynchronously: a few short polls, never a long stall of PID 1. */
#define HWRNG_TRIES 10
#define HWRNG_WAIT_NS 1000000L

bool rng_mix_and_reseed(const uint8_t *entropy, size_t len)
{
    int fd = open("/dev/urandom", O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        LOG_WARN("open /dev/urandom: %s", strerror(errno));
        return false;
    }
    if (len > 0) {
        struct rand_pool_info *info = malloc(sizeof *info + len);
        if (info) {
            info->entropy_count = (int)(len * 8);
            info->buf_size = (int)len;
            memcpy(info->buf, entropy, len);
            if (ioctl(fd, RNDADDENTROPY, info) < 0)
                LOG_WARN("RNDADDENTROPY: %s", strerror(errno));
            explicit_bzero(info->buf, len);
            free(info);
        } else {
            LOG_WARN("RNDADDENTROPY: out of memory for %zu bytes", len);
        }
    }
    /* Restored snapshots share RNG state: force the CRNG to reseed from the new entropy. */
    bool reseeded = ioctl(fd, RNDRESEEDCRNG) == 0;
    if (!reseeded)
        LOG_WARN("RNDRESEEDCRNG: %s", strerror(errno));
    close(fd);
    return reseeded;
}

size_t rng_read_hwrng(uint8_t *buf, size_t cap)
{
    int fd = open("/dev/hwrng", O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t got = 0;
    for (int tries = 0; got < cap && tries < HWRNG_TRIES; tries++) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (n < 0 && errno != EAGAIN && errno != EINTR)
            break;
        struct timespec wait = { 0, HWRNG_WAIT_NS };
        nanosleep(&wait, NULL);
    }
    close(fd);
    return got;
}

static void set_wall_clock(uint64_t unix_nano)
{
    struct timespec ts = { .tv_sec = (time_t)(unix_nano / 1000000000ull), .tv_nsec = (long)(unix_nano % 1000000000ull) };
    if (clock_settime(CLOCK_REALTIME, &ts) < 0)
        LOG_WARN("clock_settime: %s", strerror(errno));
}

void reseed_on_handshake(uint64_t host_time_unix_nano, const uint8_t *entropy, size_t len)
{
    if (host_time_unix_nano)
        set_wall_clock(host_time_unix_nano);
    if (len > 0)
        rng_mix_and_reseed(entropy, len);
}

int reseed_apply(const struct reseed_request *req, bool *crng_reseeded, uint32_t *hwrng_bytes, char *err,
                 size_t errcap)
{
    if (req->entropy_len < RESEED_MIN_ENTROPY || req->entropy_len > RESEED_MAX_ENTROPY) {
        snprintf(err, errcap, "Reseed: %zu bytes of entropy (needs %d..%d)", req->entropy_len, RESEED_MIN_ENTROPY,
                 RESEED_MAX_ENTROPY);
        return RPC_INVALID_ARGUMENT;
    }
    size_t hostname_len = req->hostname ? strlen(req->hostname) : 0;
    if (hostname_len > HOSTNAME_MAX) {
        snprintf(err, errcap, "Reseed: hostname of %zu bytes (max %d)", hostname_len, HOSTNAME_MAX);
        return RPC_INVALID_ARGUMENT;
    }
    /* Host bytes first, then virtio-rng's (fresh from the host's RNG after a restore). */
    bool reseeded = rng_mix_and_reseed(req->entropy, req->entropy_len);
    uint8_t hw[RESEED_HWRNG_BYTES];
    size_t hw_len = rng_read_hwrng(hw, sizeof hw);
    if (hw_len > 0) {
        reseeded = rng_mix_and_reseed(hw, hw_len) && reseeded;
        explicit_bzero(hw, sizeof hw);
    }
    if (req->host_time_unix_nano)
        set_wall_clock(req->host_time_unix_nano);
    if (hostname_len > 0 && sethostname(req->hostname, hostname_len) < 0) {
        snprintf(err, errcap, "Reseed: sethostname \"%s\": %s", req->hostname, strerror(errno));
        return RPC_INVALID_ARGUMENT;
    }
    *crng_reseeded = reseeded;
    *hwrng_bytes = (uint32_t)hw_len;
    LOG_INFO("reseeded (crng %s, %zu hwrng bytes)", reseeded ? "reseeded" : "NOT reseeded", hw_len);
    return RPC_OK;
}
