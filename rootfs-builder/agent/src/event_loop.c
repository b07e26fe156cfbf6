#include "event_loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "log.h"

static int g_epfd = -1;

static void **g_graveyard;
static size_t g_graveyard_len, g_graveyard_cap;

int event_loop_init(void)
{
    g_epfd = epoll_create1(EPOLL_CLOEXEC);
    return g_epfd < 0 ? -1 : 0;
}

int watch_add(int fd, uint32_t events, struct watch *w)
{
    struct epoll_event ev = { .events = events, .data.ptr = w };
    return epoll_ctl(g_epfd, EPOLL_CTL_ADD, fd, &ev);
}

int watch_mod(int fd, uint32_t events, struct watch *w)
{
    struct epoll_event ev = { .events = events, .data.ptr = w };
    return epoll_ctl(g_epfd, EPOLL_CTL_MOD, fd, &ev);
}

void watch_del(int fd)
{
    epoll_ctl(g_epfd, EPOLL_CTL_DEL, fd, NULL);
}

void defer_free(void *ptr)
{
    if (g_graveyard_len == g_graveyard_cap) {
        size_t cap = g_graveyard_cap ? g_graveyard_cap * 2 : 16;
        void **ng = realloc(g_graveyard, cap * sizeof *ng);
        if (!ng) {
            /* Leaking beats a use-after-free in PID 1. */
            LOG_ERR("out of memory deferring a free");
            return;
        }
        g_graveyard = ng;
        g_graveyard_cap = cap;
    }
    g_graveyard[g_graveyard_len++] = ptr;
}

static void empty_graveyard(void)
{
    for (size_t i = 0; i < g_graveyard_len; i++)
        free(g_graveyard[i]);
    g_graveyard_len = 0;
}

int loop_timer_open(struct loop_timer *t, watch_fn fn, void *obj)
{
    t->watch.fn = fn;
    t->watch.obj = obj;
    t->fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (t->fd < 0)
        return -1;
    if (watch_add(t->fd, EPOLLIN, &t->watch) < 0) {
        int e = errno;
        close(t->fd);
        t->fd = -1;
        errno = e;
        return -1;
    }
    return 0;
}

int loop_timer_set(struct loop_timer *t, unsigned ms, bool periodic)
{
    struct itimerspec its = { 0 };
    its.it_value.tv_sec = ms / 1000;
    its.it_value.tv_nsec = (long)(ms % 1000) * 1000000L;
    if (periodic)
        its.it_interval = its.it_value;
    return timerfd_settime(t->fd, 0, &its, NULL);
}

bool loop_timer_ack(struct loop_timer *t)
{
    uint64_t expirations;
    return !(read(t->fd, &expirations, sizeof expirations) < 0 && errno == EAGAIN);
}

void event_loop_run(void (*after_batch)(void *ctx), void *ctx)
{
    for (;;) {
        struct epoll_event evs[64];
        int n = epoll_wait(g_epfd, evs, 64, -1);
        if (n < 0) {
            if (errno != EINTR)
                LOG_ERR("epoll_wait: %s", strerror(errno));
            continue;
        }
        for (int i = 0; i < n; i++) {
            struct watch *w = evs[i].data.ptr;
            if (w->fn)
                w->fn(w->obj, evs[i].events);
        }
        after_batch(ctx);
        empty_graveyard();
    }
}
