#include "stdio_pump.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "agent.h"
#include "log.h"

static void stream_on_ready(void *stream, uint32_t events);

void stream_set_init(struct stream_set *set, const struct stream_link *link)
{
    set->head = NULL;
    set->link = *link;
    set->output_done = NULL;
}

static void send_frame(struct stream *s, enum wq_lane lane, uint8_t flags, const void *payload, size_t len)
{
    s->set->link.send(s->set->link.conn, lane, s->id, flags, payload, len);
}

struct stream *stream_open(struct stream_set *set, enum stream_dir dir, uint32_t id, int fd, void *owner)
{
    struct stream *s = calloc(1, sizeof *s);
    if (!s) {
        close(fd);
        return NULL;
    }
    s->set = set;
    s->id = id;
    s->dir = dir;
    s->fd = fd;
    s->owner = owner;
    s->watch.fn = stream_on_ready;
    s->watch.obj = s;
    s->credit = INITIAL_STREAM_CREDIT;
    s->window = INITIAL_STREAM_CREDIT;
    s->next = set->head;
    set->head = s;
    return s;
}

static void set_interest(struct stream *s, uint32_t events)
{
    if (s->fd < 0)
        events = 0;
    if (events == s->registered_events)
        return;
    if (events == 0) {
        /* Removed, not just masked: a hung-up pipe reports EPOLLHUP whatever the mask. */
        watch_del(s->fd);
    } else if (s->registered_events == 0) {
        if (watch_add(s->fd, events, &s->watch) < 0) {
            LOG_ERR("epoll add for stream %u failed: %s", s->id, strerror(errno));
            return;
        }
    } else {
        watch_mod(s->fd, events, &s->watch);
    }
    s->registered_events = events;
}

static void close_fd(struct stream *s)
{
    if (s->fd < 0)
        return;
    set_interest(s, 0);
    close(s->fd);
    s->fd = -1;
}

void stream_set_fd(struct stream *s, int fd)
{
    if (s->fd >= 0) {
        set_interest(s, 0);
        close(s->fd);
    }
    s->fd = fd;
    s->registered_events = 0;
}

void stream_destroy(struct stream *s)
{
    if (!s)
        return;
    close_fd(s);
    for (struct stream **pp = &s->set->head; *pp; pp = &(*pp)->next) {
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    }
    free(s->buf);
    s->buf = NULL;
    watch_forget(&s->watch);
    defer_free(s);
}

bool stream_id_in_use(const struct stream_set *set, uint32_t id)
{
    for (const struct stream *s = set->head; s; s = s->next)
        if (s->id == id)
            return true;
    return false;
}

bool stream_out_done(const struct stream *s)
{
    return !s || s->done;
}

static struct stream *find_stream(struct stream_set *set, uint32_t id)
{
    if (id == 0)
        return NULL;
    for (struct stream *s = set->head; s; s = s->next)
        if (s->id == id)
            return s;
    return NULL;
}

/* ---- output (stdout, stderr) ---- */

static bool out_wants_read(const struct stream *s)
{
    if (s->fd < 0 || s->done)
        return false;
    if (s->id == 0)
        return true; /* detached: drain and drop */
    return s->credit > 0 && s->set->link.data_queued(s->set->link.conn) < DATA_QUEUE_LIMIT;
}

static void out_finish(struct stream *s)
{
    close_fd(s);
    if (s->id != 0)
        send_frame(s, WQ_DATA, TTRPC_FLAG_REMOTE_CLOSED | TTRPC_FLAG_NO_DATA, NULL, 0);
    s->done = true;
    if (s->owner && s->set->output_done)
        s->set->output_done(s->owner);
}

void stream_force_eof(struct stream *s)
{
    if (!s || s->done)
        return;
    close_fd(s);
    if (s->id != 0)
        send_frame(s, WQ_DATA, TTRPC_FLAG_REMOTE_CLOSED | TTRPC_FLAG_NO_DATA, NULL, 0);
    s->done = true;
}

static void out_pump(struct stream *s)
{
    static uint8_t buf[MAX_DATA_FRAME];
    while (out_wants_read(s)) {
        size_t want = sizeof buf;
        if (s->id != 0 && s->credit < want)
            want = s->credit;
        ssize_t n = read(s->fd, buf, want);
        if (n > 0) {
            if (s->id != 0) {
                send_frame(s, WQ_DATA, 0, buf, (size_t)n);
                s->credit -= (uint32_t)n;
            }
            continue;
        }
        if (n == 0) {
            out_finish(s);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN) {
            /* A pty master reads EIO once every slave fd is closed: that is its EOF. */
            if (errno != EIO)
                LOG_WARN("reading output stream %u: %s", s->id, strerror(errno));
            out_finish(s);
            return;
        }
        break;
    }
    set_interest(s, out_wants_read(s) ? EPOLLIN : 0);
}

/* ---- input (stdin) ---- */

static void in_return_credit(struct stream *s, size_t bytes)
{
    if (bytes == 0 || s->id == 0)
        return;
    uint8_t p[4] = { (uint8_t)(bytes >> 24), (uint8_t)(bytes >> 16), (uint8_t)(bytes >> 8), (uint8_t)bytes };
    send_frame(s, WQ_CONTROL, TTRPC_FLAG_CREDIT, p, sizeof p);
    s->window += (uint32_t)bytes;
}

static void in_pump(struct stream *s)
{
    size_t written = 0;
    while (s->fd >= 0 && s->len > 0) {
        ssize_t n = write(s->fd, s->buf, s->len);
        if (n > 0) {
            memmove(s->buf, s->buf + n, s->len - (size_t)n);
            s->len -= (size_t)n;
            written += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            break;
        /* EPIPE: the process closed its stdin or exited; the rest is dropped (and its credit
         * returned so the host's sender does not stall). */
        written += s->len;
        s->len = 0;
        close_fd(s);
    }
    in_return_credit(s, written);
    if (s->fd >= 0 && s->len == 0 && s->eof_requested)
        close_fd(s);
    set_interest(s, s->len > 0 ? EPOLLOUT : 0);
}

void stream_close_stdin(struct stream *s)
{
    if (!s)
        return;
    s->eof_requested = true;
    in_pump(s);
}

void stream_on_host_frame(struct stream_set *set, const struct ttrpc_frame *f)
{
    struct stream *s = find_stream(set, f->stream_id);
    if (!s) {
        LOG_DEBUG("data frame for unknown stream %u dropped", f->stream_id);
        return;
    }
    if (f->flags & TTRPC_FLAG_CREDIT) {
        if (s->dir != STREAM_OUT || f->len != 4) {
            LOG_WARN("malformed credit frame on stream %u dropped", f->stream_id);
            return;
        }
        uint32_t grant = ((uint32_t)f->payload[0] << 24) | ((uint32_t)f->payload[1] << 16) |
                         ((uint32_t)f->payload[2] << 8) | f->payload[3];
        uint64_t credit = (uint64_t)s->credit + grant;
        s->credit = credit > 0x7fffffff ? 0x7fffffff : (uint32_t)credit;
        out_pump(s);
        return;
    }
    if (s->dir != STREAM_IN) {
        LOG_WARN("host sent data on output stream %u: dropped", f->stream_id);
        return;
    }
    if (f->len > 0) {
        if (f->len > MAX_DATA_FRAME || f->len > s->window) {
            LOG_WARN("stdin stream %u: %u bytes exceed the credit granted (%u): dropped", f->stream_id,
                     f->len, s->window);
        } else if (s->fd < 0 || s->eof_requested) {
            in_return_credit(s, f->len); /* nobody reads it any more */
        } else {
            uint8_t *nb = realloc(s->buf, s->len + f->len);
            if (!nb) {
                LOG_ERR("stdin stream %u: out of memory, %u bytes dropped", f->stream_id, f->len);
            } else {
                s->buf = nb;
                memcpy(s->buf + s->len, f->payload, f->len);
                s->len += f->len;
                s->window -= f->len;
            }
        }
    }
    if (f->flags & TTRPC_FLAG_REMOTE_CLOSED)
        s->eof_requested = true;
    in_pump(s);
}

static void stream_on_ready(void *stream, uint32_t events)
{
    struct stream *s = stream;
    if (s->dir == STREAM_OUT)
        out_pump(s);
    else
        in_pump(s);
}

void stream_update_all(struct stream_set *set)
{
    for (struct stream *s = set->head, *next; s; s = next) {
        next = s->next; /* out_pump may end a process's wait, never frees streams */
        if (s->dir == STREAM_OUT)
            set_interest(s, out_wants_read(s) ? EPOLLIN : 0);
    }
}

void stream_detach_all(struct stream_set *set)
{
    for (struct stream *s = set->head; s; s = s->next) {
        s->id = 0;
        if (s->dir == STREAM_IN) {
            s->len = 0;
            close_fd(s);
        } else {
            set_interest(s, out_wants_read(s) ? EPOLLIN : 0);
        }
    }
}
