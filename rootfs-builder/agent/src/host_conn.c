#include "host_conn.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "agent.h"
#include "log.h"

static void on_frame(void *ctx, const struct ttrpc_frame *f)
{
    struct host_conn *c = ctx;
    c->ops->frame(c->ctx, f);
}

static void on_oversized(void *ctx, uint32_t stream_id, uint8_t type, uint32_t len)
{
    struct host_conn *c = ctx;
    c->ops->oversized(c->ctx, stream_id, type, len);
}

static const struct ttrpc_reader_ops reader_ops = { on_frame, on_oversized };

void host_conn_init(struct host_conn *c, const struct host_conn_ops *ops, void *ctx)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->ops = ops;
    c->ctx = ctx;
    ttrpc_reader_init(&c->reader, TTRPC_MAX_PAYLOAD);
    wq_init(&c->wq);
}

static void clear_state(struct host_conn *c)
{
    ttrpc_reader_reset(&c->reader);
    wq_clear(&c->wq);
    c->read_blocked = false;
}

void host_conn_begin(struct host_conn *c, int fd, const char *what)
{
    c->fd = fd;
    c->gen++;
    clear_state(c);
    LOG_INFO("host connected (%s)", what);
}

void host_conn_end(struct host_conn *c, const char *why)
{
    if (c->fd < 0)
        return;
    LOG_INFO("host disconnected: %s", why);
    c->fd = -1;
    clear_state(c);
    c->ops->lost(c->ctx);
}

void host_conn_read(struct host_conn *c)
{
    static uint8_t buf[65536];
    while (c->fd >= 0) {
        if (wq_queued(&c->wq, WQ_CONTROL) >= CONTROL_QUEUE_LIMIT) {
            c->read_blocked = true;
            return;
        }
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n > 0) {
            if (ttrpc_reader_push(&c->reader, buf, (size_t)n, &reader_ops, c) < 0)
                host_conn_end(c, "out of memory reading a frame");
            continue;
        }
        if (n == 0) {
            host_conn_end(c, "end of stream");
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN)
            host_conn_end(c, strerror(errno));
        return;
    }
}

void host_conn_flush(struct host_conn *c)
{
    for (int round = 0; round < 16 && c->fd >= 0; round++) {
        if (wq_flush(&c->wq, c->fd) < 0) {
            host_conn_end(c, strerror(errno));
            return;
        }
        /* Room in the data lane: let blocked output streams read again. */
        c->ops->data_room(c->ctx);
        if (c->read_blocked && wq_queued(&c->wq, WQ_CONTROL) < CONTROL_QUEUE_LIMIT) {
            c->read_blocked = false;
            host_conn_read(c);
            continue;
        }
        break;
    }
}

bool host_conn_drained(const struct host_conn *c)
{
    return wq_empty(&c->wq);
}

void host_conn_send(struct host_conn *c, enum wq_lane lane, uint32_t stream_id, uint8_t type, uint8_t flags,
                    const void *payload, size_t len)
{
    if (c->fd < 0)
        return;
    if (wq_push_frame(&c->wq, lane, stream_id, type, flags, payload, len) < 0)
        LOG_ERR("dropping a %zu-byte frame on stream %u: out of memory", len, stream_id);
}

size_t host_conn_queued(const struct host_conn *c, enum wq_lane lane)
{
    return wq_queued(&c->wq, lane);
}

void host_conn_respond(struct host_conn *c, uint64_t gen, uint32_t stream_id, enum wq_lane lane, int32_t code,
                       const char *message, const pb_writer *payload)
{
    if (c->fd < 0 || gen != c->gen)
        return; /* the request came on a connection that is gone */
    pb_writer w;
    pb_writer_init(&w);
    if (payload && payload->failed) {
        code = RPC_INTERNAL;
        message = "out of memory encoding the response";
        payload = NULL;
    }
    ttrpc_encode_response(&w, code, message, payload ? payload->buf : NULL, payload ? payload->len : 0);
    if (w.failed)
        LOG_ERR("out of memory encoding the response on stream %u", stream_id);
    else
        host_conn_send(c, lane, stream_id, TTRPC_RESPONSE, 0, w.buf, w.len);
    pb_writer_free(&w);
}
