#include "ttrpc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint32_t get_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

void ttrpc_put_header(uint8_t out[TTRPC_HEADER_LEN], uint32_t len, uint32_t stream_id,
                      uint8_t type, uint8_t flags)
{
    put_be32(out, len);
    put_be32(out + 4, stream_id);
    out[8] = type;
    out[9] = flags;
}

void ttrpc_reader_init(struct ttrpc_reader *r, uint32_t max_payload)
{
    memset(r, 0, sizeof *r);
    r->max_payload = max_payload;
}

void ttrpc_reader_reset(struct ttrpc_reader *r)
{
    free(r->payload);
    ttrpc_reader_init(r, r->max_payload);
}

int ttrpc_reader_push(struct ttrpc_reader *r, const uint8_t *data, size_t n,
                      const struct ttrpc_reader_ops *ops, void *ctx)
{
    while (n > 0 || (r->in_payload && r->have == r->cur.len)) {
        if (!r->in_payload) {
            size_t take = TTRPC_HEADER_LEN - r->header_have;
            if (take > n)
                take = n;
            memcpy(r->header + r->header_have, data, take);
            r->header_have += take;
            data += take;
            n -= take;
            if (r->header_have < TTRPC_HEADER_LEN)
                return 0;
            r->cur.len = get_be32(r->header);
            r->cur.stream_id = get_be32(r->header + 4);
            r->cur.type = r->header[8];
            r->cur.flags = r->header[9];
            r->header_have = 0;
            r->have = 0;
            r->in_payload = true;
            r->payload = NULL;
            /* Check the length before allocating: an oversized frame is skipped. */
            if (r->cur.len <= r->max_payload && r->cur.len > 0) {
                r->payload = malloc(r->cur.len);
                if (!r->payload) {
                    ttrpc_reader_reset(r);
                    return -1;
                }
            }
        }
        size_t want = r->cur.len - r->have;
        size_t take = want < n ? want : n;
        if (r->payload)
            memcpy(r->payload + r->have, data, take);
        r->have += (uint32_t)take;
        data += take;
        n -= take;
        if (r->have < r->cur.len)
            return 0;
        /* Frame complete. */
        r->in_payload = false;
        uint8_t *payload = r->payload;
        r->payload = NULL;
        if (r->cur.len > r->max_payload) {
            ops->oversized(ctx, r->cur.stream_id, r->cur.type, r->cur.len);
        } else {
            struct ttrpc_frame f = r->cur;
            f.payload = payload ? payload : (const uint8_t *)"";
            ops->frame(ctx, &f);
        }
        free(payload);
    }
    return 0;
}

int ttrpc_decode_request(const uint8_t *data, size_t len, struct ttrpc_request *out)
{
    memset(out, 0, sizeof *out);
    out->service = out->method = out->payload = (const uint8_t *)"";
    pb_reader r = pb_reader_make(data, len);
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(&r, &field, &wire)) == 1) {
        uint64_t v;
        switch (field) {
        case 1:
            if (wire != PB_WIRE_LEN || pb_read_len(&r, &out->service, &out->service_len) < 0)
                return -1;
            break;
        case 2:
            if (wire != PB_WIRE_LEN || pb_read_len(&r, &out->method, &out->method_len) < 0)
                return -1;
            break;
        case 3:
            if (wire != PB_WIRE_LEN || pb_read_len(&r, &out->payload, &out->payload_len) < 0)
                return -1;
            break;
        case 4:
            if (wire != PB_WIRE_VARINT || pb_read_varint(&r, &v) < 0)
                return -1;
            out->timeout_nano = (int64_t)v;
            break;
        default: /* metadata (5) and anything newer: not used by the agent */
            if (pb_skip(&r, wire) < 0)
                return -1;
        }
    }
    return rc;
}

void ttrpc_encode_response(pb_writer *w, int32_t code, const char *message,
                           const uint8_t *payload, size_t payload_len)
{
    if (code != 0) {
        pb_writer status;
        pb_writer_init(&status);
        pb_put_uint_field(&status, 1, (uint64_t)(uint32_t)code);
        pb_put_string_field(&status, 2, message);
        pb_put_message_field(w, 1, &status);
        pb_writer_free(&status);
    }
    pb_put_bytes_field(w, 2, payload, payload_len);
}

void wq_init(struct write_queue *q)
{
    memset(q, 0, sizeof *q);
    q->partial_lane = -1;
}

void wq_clear(struct write_queue *q)
{
    for (int lane = 0; lane < 2; lane++) {
        struct wq_item *it = q->head[lane];
        while (it) {
            struct wq_item *next = it->next;
            free(it);
            it = next;
        }
    }
    wq_init(q);
}

int wq_push_frame(struct write_queue *q, enum wq_lane lane, uint32_t stream_id, uint8_t type,
                  uint8_t flags, const void *payload, size_t len)
{
    if (len > TTRPC_MAX_PAYLOAD)
        return -1;
    struct wq_item *it = malloc(sizeof *it + TTRPC_HEADER_LEN + len);
    if (!it)
        return -1;
    it->next = NULL;
    it->len = TTRPC_HEADER_LEN + len;
    it->off = 0;
    ttrpc_put_header(it->bytes, (uint32_t)len, stream_id, type, flags);
    if (len)
        memcpy(it->bytes + TTRPC_HEADER_LEN, payload, len);
    if (q->tail[lane])
        q->tail[lane]->next = it;
    else
        q->head[lane] = it;
    q->tail[lane] = it;
    q->queued[lane] += it->len;
    return 0;
}

int wq_flush(struct write_queue *q, int fd)
{
    for (;;) {
        /* Finish a partially written frame first: frames must never interleave. */
        int lane = q->partial_lane >= 0 ? q->partial_lane : (q->head[WQ_CONTROL] ? WQ_CONTROL : WQ_DATA);
        struct wq_item *it = q->head[lane];
        if (!it)
            return 0;
        ssize_t w = write(fd, it->bytes + it->off, it->len - it->off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return 1;
            return -1;
        }
        it->off += (size_t)w;
        q->queued[lane] -= (size_t)w;
        if (it->off < it->len) {
            q->partial_lane = lane;
            continue;
        }
        q->partial_lane = -1;
        q->head[lane] = it->next;
        if (!it->next)
            q->tail[lane] = NULL;
        free(it);
    }
}
