/* Table-driven protobuf decoding: a message is described by a table of its fields (number, kind,
 * limits, where the value goes in the C struct); one generic decoder and one generic free walk it.
 *
 * The wire type is implied by the kind: scalars need VARINT, strings/bytes/messages need LEN,
 * repeated uint32 takes either (packed or not); any other wire type is an error. Unknown fields
 * are skipped. A scalar or string seen twice keeps the last value, a message seen twice is merged,
 * repeated fields append up to their cap (checked before anything is allocated).
 *
 * Destinations are checked twice: at compile time the PB_* macros only accept a member of the
 * struct with exactly the expected C type (_Generic), and at run time every offset and size is
 * checked against the table's struct size before it is used. */
#ifndef SMOLVM_PB_TABLE_H
#define SMOLVM_PB_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pb.h"

enum pb_kind {
    PBK_STRING,     /* char *, malloc'd, NUL-terminated, at most max bytes, no embedded NUL */
    PBK_BYTES,      /* const uint8_t * into the input + size_t length at aux; at most max bytes */
    PBK_U32,        /* uint32_t (proto3 truncation) */
    PBK_U64,        /* uint64_t */
    PBK_I64,        /* int64_t (two's-complement varint) */
    PBK_BOOL,       /* bool */
    PBK_MSG,        /* nested struct decoded with sub (may be the parent struct itself: off 0) */
    PBK_REP_STRING, /* char ** NULL-terminated + size_t count at aux; at most max entries */
    PBK_REP_U32,    /* uint32_t * + size_t count at aux, packed or not; at most max entries */
    PBK_REP_MSG,    /* array of structs (element size `size`) + size_t count at aux; at most max */
};

struct pb_msg;

/* Offsets and sizes are 16-bit: PB_MESSAGE asserts that the struct is smaller than 64 KiB. */
struct pb_field {
    uint32_t num;
    uint16_t off;             /* destination */
    uint16_t size;            /* sizeof destination; for PBK_REP_MSG the element size */
    uint16_t aux;             /* PBK_BYTES: length; repeated: count (size_t) */
    uint16_t has1;            /* 1 + offset of a bool set when the field is seen; 0: none */
    uint8_t kind;             /* enum pb_kind */
    uint32_t max;             /* string/bytes: max length; repeated: max count */
    uint32_t item_max;        /* PBK_REP_STRING: max length of one entry */
    const struct pb_msg *sub; /* PBK_MSG, PBK_REP_MSG */
};

struct pb_msg {
    const struct pb_field *fields;
    size_t nfields;
    size_t size; /* sizeof the struct the offsets are relative to */
};

/* Zeroes *out, decodes; 0, or -1 (malformed input, a limit exceeded, a bad table, out of
 * memory) with everything freed and *out zeroed again. */
int pb_decode(const struct pb_msg *m, const uint8_t *data, size_t len, void *out);
/* Frees what pb_decode allocated and zeroes the struct. */
void pb_free(const struct pb_msg *m, void *obj);
/* Checks a table and its nested tables (offsets, sizes, distinct field numbers); 0 or -1. */
int pb_msg_check(const struct pb_msg *m);

#define PB_NO_MAX UINT32_MAX

/* The offset of T.member, accepted only if the member has exactly type CT. */
#define PB_OFF_(T, member, CT) _Generic(((T *)0)->member, CT: offsetof(T, member))
#define PB_HAS(T, member) (PB_OFF_(T, member, bool) + 1)

/* Field initializers; the optional trailing arguments are further designated initializers
 * (e.g. .has1 = PB_HAS(T, has_x)). */
#define PB_STRING(T, n, m, maxlen, ...)                                                             \
    { .num = (n), .kind = PBK_STRING, .off = PB_OFF_(T, m, char *), .size = sizeof(char *),          \
      .max = (maxlen), __VA_ARGS__ }
#define PB_BYTES(T, n, m, lenm, maxlen, ...)                                                        \
    { .num = (n), .kind = PBK_BYTES, .off = PB_OFF_(T, m, const uint8_t *),                          \
      .size = sizeof(const uint8_t *), .aux = PB_OFF_(T, lenm, size_t), .max = (maxlen), __VA_ARGS__ }
#define PB_U32(T, n, m, ...)                                                                        \
    { .num = (n), .kind = PBK_U32, .off = PB_OFF_(T, m, uint32_t), .size = sizeof(uint32_t), __VA_ARGS__ }
#define PB_U64(T, n, m, ...)                                                                        \
    { .num = (n), .kind = PBK_U64, .off = PB_OFF_(T, m, uint64_t), .size = sizeof(uint64_t), __VA_ARGS__ }
#define PB_I64(T, n, m, ...)                                                                        \
    { .num = (n), .kind = PBK_I64, .off = PB_OFF_(T, m, int64_t), .size = sizeof(int64_t), __VA_ARGS__ }
#define PB_BOOL(T, n, m, ...)                                                                       \
    { .num = (n), .kind = PBK_BOOL, .off = PB_OFF_(T, m, bool), .size = sizeof(bool), __VA_ARGS__ }
/* A nested message whose struct is member m (of type ST) of T. */
#define PB_MSG(T, n, m, ST, subm, ...)                                                              \
    { .num = (n), .kind = PBK_MSG, .off = PB_OFF_(T, m, ST), .size = sizeof(ST), .sub = &(subm),     \
      __VA_ARGS__ }
/* A nested message whose fields live in T itself (its table describes T too). */
#define PB_MSG_INLINE(T, n, subm, ...)                                                              \
    { .num = (n), .kind = PBK_MSG, .off = 0, .size = sizeof(T), .sub = &(subm), __VA_ARGS__ }
#define PB_REP_STRING(T, n, m, cntm, maxcount, maxlen, ...)                                         \
    { .num = (n), .kind = PBK_REP_STRING, .off = PB_OFF_(T, m, char **), .size = sizeof(char **),    \
      .aux = PB_OFF_(T, cntm, size_t), .max = (maxcount), .item_max = (maxlen), __VA_ARGS__ }
#define PB_REP_U32(T, n, m, cntm, maxcount, ...)                                                    \
    { .num = (n), .kind = PBK_REP_U32, .off = PB_OFF_(T, m, uint32_t *), .size = sizeof(uint32_t *), \
      .aux = PB_OFF_(T, cntm, size_t), .max = (maxcount), __VA_ARGS__ }
#define PB_REP_MSG(T, n, m, cntm, ET, subm, maxcount, ...)                                          \
    { .num = (n), .kind = PBK_REP_MSG, .off = PB_OFF_(T, m, ET *), .size = sizeof(ET),               \
      .aux = PB_OFF_(T, cntm, size_t), .max = (maxcount), .sub = &(subm), __VA_ARGS__ }

#define PB_MESSAGE(var, T, ...)                                                                     \
    _Static_assert(sizeof(T) < UINT16_MAX, #T " too large for 16-bit field offsets");               \
    static const struct pb_field var##_fields[] = { __VA_ARGS__ };                                 \
    static const struct pb_msg var = { var##_fields, sizeof var##_fields / sizeof var##_fields[0], \
                                       sizeof(T) }

#endif
