#include "pb.h"

#include <stdlib.h>
#include <string.h>

int pb_read_varint(pb_reader *r, uint64_t *value)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 10; i++) {
        if (r->p >= r->end)
            return -1;
        uint8_t b = *r->p++;
        if (i == 9 && b > 1)
            return -1; /* more than 64 bits */
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *value = v;
            return 0;
        }
    }
    return -1;
}

int pb_read_tag(pb_reader *r, uint32_t *field, uint32_t *wire)
{
    if (r->p == r->end)
        return 0;
    uint64_t tag;
    if (pb_read_varint(r, &tag) < 0)
        return -1;
    uint64_t f = tag >> 3;
    if (f == 0 || f > 0x1fffffff)
        return -1;
    *field = (uint32_t)f;
    *wire = (uint32_t)(tag & 7);
    return 1;
}

int pb_read_len(pb_reader *r, const uint8_t **data, size_t *len)
{
    uint64_t n;
    if (pb_read_varint(r, &n) < 0)
        return -1;
    if (n > (uint64_t)(r->end - r->p))
        return -1;
    *data = r->p;
    *len = (size_t)n;
    r->p += n;
    return 0;
}

int pb_skip(pb_reader *r, uint32_t wire)
{
    uint64_t ignored;
    const uint8_t *d;
    size_t n;
    switch (wire) {
    case PB_WIRE_VARINT:
        return pb_read_varint(r, &ignored);
    case PB_WIRE_I64:
        if (r->end - r->p < 8)
            return -1;
        r->p += 8;
        return 0;
    case PB_WIRE_LEN:
        return pb_read_len(r, &d, &n);
    case PB_WIRE_I32:
        if (r->end - r->p < 4)
            return -1;
        r->p += 4;
        return 0;
    default: /* groups (3, 4) are not proto3; 6 and 7 do not exist */
        return -1;
    }
}

int pb_read_string(pb_reader *r, char **out, size_t max_len)
{
    const uint8_t *d;
    size_t n;
    if (pb_read_len(r, &d, &n) < 0 || n > max_len || memchr(d, 0, n) != NULL)
        return -1;
    char *s = malloc(n + 1);
    if (!s)
        return -1;
    memcpy(s, d, n);
    s[n] = 0;
    free(*out); /* a repeated occurrence of a singular field: last one wins */
    *out = s;
    return 0;
}

void pb_writer_init(pb_writer *w)
{
    memset(w, 0, sizeof *w);
}

void pb_writer_free(pb_writer *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}

void pb_put_raw(pb_writer *w, const void *data, size_t len)
{
    if (w->failed || len == 0)
        return;
    if (len > SIZE_MAX / 2 - w->len) {
        w->failed = true;
        return;
    }
    if (w->len + len > w->cap) {
        size_t cap = w->cap ? w->cap : 64;
        while (cap < w->len + len)
            cap *= 2;
        uint8_t *nb = realloc(w->buf, cap);
        if (!nb) {
            w->failed = true;
            return;
        }
        w->buf = nb;
        w->cap = cap;
    }
    memcpy(w->buf + w->len, data, len);
    w->len += len;
}

void pb_put_varint(pb_writer *w, uint64_t value)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        uint8_t b = value & 0x7f;
        value >>= 7;
        tmp[n++] = b | (value ? 0x80 : 0);
    } while (value);
    pb_put_raw(w, tmp, n);
}

void pb_put_tag(pb_writer *w, uint32_t field, enum pb_wire wire)
{
    pb_put_varint(w, ((uint64_t)field << 3) | (uint64_t)wire);
}

void pb_put_uint_field(pb_writer *w, uint32_t field, uint64_t value)
{
    if (value == 0)
        return;
    pb_put_tag(w, field, PB_WIRE_VARINT);
    pb_put_varint(w, value);
}

void pb_put_bytes_field(pb_writer *w, uint32_t field, const void *data, size_t len)
{
    if (len == 0)
        return;
    pb_put_tag(w, field, PB_WIRE_LEN);
    pb_put_varint(w, len);
    pb_put_raw(w, data, len);
}

void pb_put_string_field(pb_writer *w, uint32_t field, const char *s)
{
    if (s)
        pb_put_bytes_field(w, field, s, strlen(s));
}

void pb_put_message_field(pb_writer *w, uint32_t field, const pb_writer *msg)
{
    if (msg->failed) {
        w->failed = true;
        return;
    }
    pb_put_tag(w, field, PB_WIRE_LEN);
    pb_put_varint(w, msg->len);
    pb_put_raw(w, msg->buf, msg->len);
}
