/* The agent's event loop: one epoll set, the fds watched in it and, for each, the function its
 * owner registered. The loop knows nothing of what it serves (the host connection, processes,
 * timers of this or that module): a watch carries its own handler. Single-threaded: handlers
 * run one after the other, then the loop's after-batch hook, then the deferred frees. */
#ifndef SMOLVM_EVENT_LOOP_H
#define SMOLVM_EVENT_LOOP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Called with the watch's object and the epoll events that were reported. */
typedef void (*watch_fn)(void *obj, uint32_t events);

/* Lives inside the object it watches for (epoll keeps a pointer to it). */
struct watch {
    watch_fn fn; /* NULL once its object is destroyed: events still in the batch are skipped */
    void *obj;
};

/* Makes the epoll set. 0, or -1 with errno. */
int event_loop_init(void);

/* epoll helpers; events as for epoll_ctl. 0, or -1 with errno. */
int watch_add(int fd, uint32_t events, struct watch *w);
int watch_mod(int fd, uint32_t events, struct watch *w);
void watch_del(int fd);

/* The watch's object is being destroyed: events for it already in this batch are dropped. */
static inline void watch_forget(struct watch *w)
{
    w->fn = NULL;
}

/* Frees ptr after the current batch of events (objects embedding a watch). */
void defer_free(void *ptr);

/* A timerfd in the loop (CLOCK_MONOTONIC, non-blocking). */
struct loop_timer {
    int fd; /* -1 when it could not be made */
    struct watch watch;
};

/* Makes the timer and watches it: fn(obj) runs when it fires. 0, or -1 with errno (fd -1). */
int loop_timer_open(struct loop_timer *t, watch_fn fn, void *obj);
/* Fires in ms (then every ms when periodic); ms 0 disarms it. 0, or -1 with errno. */
int loop_timer_set(struct loop_timer *t, unsigned ms, bool periodic);
/* Takes the expirations that woke the handler. False when there were none (a stale wake-up). */
bool loop_timer_ack(struct loop_timer *t);

/* Serves events forever; after every batch calls after_batch(ctx), then frees what was deferred. */
__attribute__((noreturn)) void event_loop_run(void (*after_batch)(void *ctx), void *ctx);

#endif
