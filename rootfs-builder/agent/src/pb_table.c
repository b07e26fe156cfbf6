#include "pb_table.h"

#include <stdlib.h>
#include <string.h>

/* [off, off + size) lies within a struct of struct_size bytes. */
static bool span_ok(size_t struct_size, size_t off, size_t size)
{
    return off <= struct_size && size <= struct_size - off;
}

/* Every offset and size the decoder or free will use for f, within a struct of m->size bytes. */
static bool field_ok(const struct pb_msg *m, const struct pb_field *f)
{
    size_t dst = f->kind == PBK_REP_MSG ? sizeof(void *) : f->size;
    if (!span_ok(m->size, f->off, dst))
        return false;
    if (f->has1 && !span_ok(m->size, f->has1 - 1, sizeof(bool)))
        return false;
    switch (f->kind) {
    case PBK_STRING:
        return f->size == sizeof(char *);
    case PBK_BYTES:
        return f->size == sizeof(const uint8_t *) && span_ok(m->size, f->aux, sizeof(size_t));
    case PBK_U32:
        return f->size == sizeof(uint32_t);
    case PBK_U64:
    case PBK_I64:
        return f->size == sizeof(uint64_t);
    case PBK_BOOL:
        return f->size == sizeof(bool);
    case PBK_MSG:
        return f->sub && f->sub->size == f->size;
    case PBK_REP_STRING:
    case PBK_REP_U32:
        return f->size == sizeof(void *) && span_ok(m->size, f->aux, sizeof(size_t));
    case PBK_REP_MSG:
        return f->sub && f->sub->size == f->size && f->size > 0 && span_ok(m->size, f->aux, sizeof(size_t));
    default:
        return false;
    }
}

static int decode_fields(const struct pb_msg *m, pb_reader *r, uint8_t *obj);

/* Appends one zeroed element of `size` bytes to *arr (count *n, at most max); NULL on failure.
 * The count includes the new element at once so that a failure while filling it still frees it. */
static void *grow(void **arr, size_t *n, size_t size, size_t max)
{
    if (*n >= max || *n >= SIZE_MAX / size - 1)
        return NULL;
    uint8_t *na = realloc(*arr, (*n + 1) * size);
    if (!na)
        return NULL;
    *arr = na;
    memset(na + *n * size, 0, size);
    (*n)++;
    return na + (*n - 1) * size;
}

static int push_u32(uint8_t *obj, const struct pb_field *f, uint64_t v)
{
    uint32_t **arr = (uint32_t **)(obj + f->off);
    size_t *n = (size_t *)(obj + f->aux);
    uint32_t *slot = grow((void **)arr, n, sizeof **arr, f->max);
    if (!slot)
        return -1;
    *slot = (uint32_t)v;
    return 0;
}

static int push_string(pb_reader *r, uint8_t *obj, const struct pb_field *f)
{
    char ***list = (char ***)(obj + f->off);
    size_t *n = (size_t *)(obj + f->aux);
    if (*n >= f->max || *n >= SIZE_MAX / sizeof(char *) - 2)
        return -1;
    char *s = NULL;
    if (pb_read_string(r, &s, f->item_max) < 0)
        return -1;
    char **nl = realloc(*list, (*n + 2) * sizeof **list);
    if (!nl) {
        free(s);
        return -1;
    }
    nl[(*n)++] = s;
    nl[*n] = NULL;
    *list = nl;
    return 0;
}

static int decode_field(const struct pb_msg *m, const struct pb_field *f, pb_reader *r, uint32_t wire,
                        uint8_t *obj)
{
    if (!field_ok(m, f))
        return -1;
    uint8_t *dst = obj + f->off;
    if (f->has1)
        *(bool *)(obj + f->has1 - 1) = true;
    uint64_t v;
    const uint8_t *d;
    size_t n;
    switch (f->kind) {
    case PBK_U32:
    case PBK_U64:
    case PBK_I64:
    case PBK_BOOL:
        if (wire != PB_WIRE_VARINT || pb_read_varint(r, &v) < 0)
            return -1;
        if (f->kind == PBK_U32)
            *(uint32_t *)dst = (uint32_t)v; /* proto3 uint32 semantics: truncation */
        else if (f->kind == PBK_U64)
            *(uint64_t *)dst = v;
        else if (f->kind == PBK_I64)
            *(int64_t *)dst = (int64_t)v;
        else
            *(bool *)dst = v != 0;
        return 0;
    case PBK_STRING:
        return wire == PB_WIRE_LEN ? pb_read_string(r, (char **)dst, f->max) : -1;
    case PBK_BYTES:
        if (wire != PB_WIRE_LEN || pb_read_len(r, &d, &n) < 0 || n > f->max)
            return -1;
        *(const uint8_t **)dst = d;
        *(size_t *)(obj + f->aux) = n;
        return 0;
    case PBK_REP_STRING:
        return wire == PB_WIRE_LEN ? push_string(r, obj, f) : -1;
    case PBK_REP_U32:
        if (wire == PB_WIRE_VARINT)
            return pb_read_varint(r, &v) < 0 ? -1 : push_u32(obj, f, v);
        if (wire != PB_WIRE_LEN || pb_read_len(r, &d, &n) < 0)
            return -1;
        pb_reader packed = pb_reader_make(d, n);
        while (packed.p < packed.end)
            if (pb_read_varint(&packed, &v) < 0 || push_u32(obj, f, v) < 0)
                return -1;
        return 0;
    case PBK_MSG:
    case PBK_REP_MSG: {
        if (wire != PB_WIRE_LEN || pb_read_len(r, &d, &n) < 0)
            return -1;
        pb_reader sub = pb_reader_make(d, n);
        if (f->kind == PBK_MSG) /* a second occurrence merges into the first */
            return decode_fields(f->sub, &sub, dst);
        uint8_t *elem = grow((void **)dst, (size_t *)(obj + f->aux), f->size, f->max);
        return elem ? decode_fields(f->sub, &sub, elem) : -1;
    }
    default:
        return -1;
    }
}

static int decode_fields(const struct pb_msg *m, pb_reader *r, uint8_t *obj)
{
    uint32_t field, wire;
    int rc;
    while ((rc = pb_read_tag(r, &field, &wire)) == 1) {
        const struct pb_field *f = NULL;
        for (size_t i = 0; i < m->nfields && !f; i++)
            if (m->fields[i].num == field)
                f = &m->fields[i];
        if (f ? decode_field(m, f, r, wire, obj) < 0 : pb_skip(r, wire) < 0)
            return -1;
    }
    return rc;
}

/* Frees without zeroing: an inline nested message shares its parent's struct. */
static void free_fields(const struct pb_msg *m, uint8_t *obj)
{
    for (size_t i = 0; i < m->nfields; i++) {
        const struct pb_field *f = &m->fields[i];
        if (!field_ok(m, f))
            continue;
        uint8_t *dst = obj + f->off;
        switch (f->kind) {
        case PBK_STRING:
            free(*(char **)dst);
            break;
        case PBK_REP_STRING: {
            char **list = *(char ***)dst;
            size_t n = *(size_t *)(obj + f->aux);
            for (size_t j = 0; list && j < n; j++)
                free(list[j]);
            free(list);
            break;
        }
        case PBK_REP_U32:
            free(*(uint32_t **)dst);
            break;
        case PBK_MSG:
            free_fields(f->sub, dst);
            break;
        case PBK_REP_MSG: {
            uint8_t *arr = *(uint8_t **)dst;
            size_t n = *(size_t *)(obj + f->aux);
            for (size_t j = 0; arr && j < n; j++)
                free_fields(f->sub, arr + j * f->size);
            free(arr);
            break;
        }
        default: /* scalars, views into the input */
            break;
        }
    }
}

void pb_free(const struct pb_msg *m, void *obj)
{
    free_fields(m, obj);
    memset(obj, 0, m->size);
}

int pb_decode(const struct pb_msg *m, const uint8_t *data, size_t len, void *out)
{
    memset(out, 0, m->size);
    pb_reader r = pb_reader_make(data, len);
    if (decode_fields(m, &r, out) == 0)
        return 0;
    pb_free(m, out);
    return -1;
}

int pb_msg_check(const struct pb_msg *m)
{
    for (size_t i = 0; i < m->nfields; i++) {
        const struct pb_field *f = &m->fields[i];
        if (f->num == 0 || f->num > 0x1fffffff || !field_ok(m, f))
            return -1;
        for (size_t j = 0; j < i; j++)
            if (m->fields[j].num == f->num)
                return -1;
        if ((f->kind == PBK_MSG || f->kind == PBK_REP_MSG) && pb_msg_check(f->sub) < 0)
            return -1;
    }
    return 0;
}
