#include "signal_hold.h"

#include <signal.h>
#include <string.h>

/* Signals the hold never applies to: the kernel delivers SIGKILL and SIGSTOP to a namespace
 * init from an ancestor namespace, and SIGCONT resumes a stopped process when it is sent. */
static bool never_held(int sig)
{
    return sig == SIGKILL || sig == SIGSTOP || sig == SIGCONT;
}

/* The kernel's first real-time signal (libc reserves a few above it): signals below it are
 * pending at most once, real-time ones queue. */
#define FIRST_RT_SIGNAL 32

static uint64_t sig_bit(int sig)
{
    return sig >= 1 && sig <= 64 ? 1ull << (sig - 1) : 0;
}

/* The hex mask on the line "<key>\t<16 hex digits>\n" of status. 0, or -1. */
static int parse_mask_line(const char *status, const char *key, uint64_t *out)
{
    size_t klen = strlen(key);
    for (const char *line = status; *line;) {
        if (strncmp(line, key, klen) != 0 || line[klen] != ':') {
            const char *nl = strchr(line, '\n');
            if (!nl)
                break;
            line = nl + 1;
            continue;
        }
        const char *p = line + klen + 1;
        while (*p == '\t' || *p == ' ')
            p++;
        uint64_t v = 0;
        int digits = 0;
        for (; *p && *p != '\n'; p++, digits++) {
            int d;
            if (*p >= '0' && *p <= '9')
                d = *p - '0';
            else if (*p >= 'a' && *p <= 'f')
                d = *p - 'a' + 10;
            else if (*p >= 'A' && *p <= 'F')
                d = *p - 'A' + 10;
            else
                return -1;
            if (digits >= 16)
                return -1;
            v = v << 4 | (uint64_t)d;
        }
        if (digits == 0)
            return -1;
        *out = v;
        return 0;
    }
    return -1;
}

int signal_masks_parse(const char *status, struct signal_masks *out)
{
    struct signal_masks m;
    if (!status || parse_mask_line(status, "SigBlk", &m.blocked) < 0 || parse_mask_line(status, "SigIgn", &m.ignored) < 0 ||
        parse_mask_line(status, "SigCgt", &m.caught) < 0)
        return -1;
    *out = m;
    return 0;
}

void signal_hold_on_exec(struct signal_hold *h, uint64_t now_ms)
{
    h->execd = true;
    h->execd_ms = now_ms;
}

static bool window_over(const struct signal_hold *h, uint64_t now_ms)
{
    return h->execd && now_ms - h->execd_ms >= SIGNAL_HOLD_WINDOW_MS;
}

/* The process takes sig now: it catches, ignores or blocks it (a blocked signal is queued). */
static bool takes(const struct signal_masks *m, int sig)
{
    return ((m->blocked | m->ignored | m->caught) & sig_bit(sig)) != 0;
}

bool signal_hold_wanted(const struct signal_hold *h, int sig, const struct signal_masks *masks, uint64_t now_ms)
{
    if (never_held(sig) || !sig_bit(sig))
        return false;
    if (!h->execd)
        return true;
    if (window_over(h, now_ms) || !masks)
        return false;
    return !takes(masks, sig);
}

bool signal_hold_add(struct signal_hold *h, int sig)
{
    if (sig < FIRST_RT_SIGNAL) {
        for (size_t i = 0; i < h->n; i++)
            if (h->sigs[i] == sig)
                return true;
    }
    if (h->n >= SIGNAL_HOLD_MAX)
        return false;
    h->sigs[h->n++] = (uint8_t)sig;
    return true;
}

size_t signal_hold_poll(struct signal_hold *h, const struct signal_masks *masks, uint64_t now_ms, int *deliver,
                        size_t *dropped)
{
    *dropped = 0;
    if (!h->execd)
        return 0;
    size_t out = 0, kept = 0;
    bool over = window_over(h, now_ms);
    for (size_t i = 0; i < h->n; i++) {
        int sig = h->sigs[i];
        if (masks && takes(masks, sig))
            deliver[out++] = sig;
        else if (over)
            (*dropped)++;
        else
            h->sigs[kept++] = (uint8_t)sig;
    }
    h->n = (uint8_t)kept;
    return out;
}

bool signal_hold_needs_poll(const struct signal_hold *h)
{
    return h->n > 0 && h->execd;
}

unsigned signal_hold_poll_interval_ms(const struct signal_hold *h, uint64_t now_ms)
{
    return h->execd && now_ms - h->execd_ms >= SIGNAL_HOLD_FAST_FOR_MS ? SIGNAL_HOLD_POLL_SLOW_MS
                                                                        : SIGNAL_HOLD_POLL_FAST_MS;
}

size_t signal_hold_clear(struct signal_hold *h)
{
    size_t n = h->n;
    h->n = 0;
    return n;
}
