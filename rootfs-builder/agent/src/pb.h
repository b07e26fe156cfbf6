/* A small protobuf wire-format reader and writer. The reader never reads past its end and
 * rejects anything malformed (overlong varints, lengths past the end, groups, field 0);
 * unknown fields are skipped by the callers with pb_skip(). */
#ifndef SMOLVM_PB_H
#define SMOLVM_PB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum pb_wire { PB_WIRE_VARINT = 0, PB_WIRE_I64 = 1, PB_WIRE_LEN = 2, PB_WIRE_I32 = 5 };

typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} pb_reader;

static inline pb_reader pb_reader_make(const uint8_t *data, size_t len)
{
    pb_reader r = { data, data + len };
    return r;
}

/* 1: a tag was read; 0: clean end of message; -1: malformed. */
int pb_read_tag(pb_reader *r, uint32_t *field, uint32_t *wire);
/* 0 or -1 (malformed). */
int pb_read_varint(pb_reader *r, uint64_t *value);
int pb_read_len(pb_reader *r, const uint8_t **data, size_t *len);
int pb_skip(pb_reader *r, uint32_t wire);
/* Reads a length-delimited field as a NUL-terminated malloc'd string (max_len bytes at most,
 * no embedded NUL). 0, or -1 (malformed, too long or out of memory). */
int pb_read_string(pb_reader *r, char **out, size_t max_len);

typedef struct {
    uint8_t *buf;
    size_t len;
    size_t cap;
    bool failed; /* out of memory: the contents are garbage */
} pb_writer;

void pb_writer_init(pb_writer *w);
void pb_writer_free(pb_writer *w);
void pb_put_raw(pb_writer *w, const void *data, size_t len);
void pb_put_varint(pb_writer *w, uint64_t value);
void pb_put_tag(pb_writer *w, uint32_t field, enum pb_wire wire);
/* proto3 scalars: zero values are omitted. */
void pb_put_uint_field(pb_writer *w, uint32_t field, uint64_t value);
void pb_put_bytes_field(pb_writer *w, uint32_t field, const void *data, size_t len);
/* Omitted when empty or NULL. */
void pb_put_string_field(pb_writer *w, uint32_t field, const char *s);
/* Embeds another writer's contents as a message field (always written, even when empty). */
void pb_put_message_field(pb_writer *w, uint32_t field, const pb_writer *msg);

#endif
