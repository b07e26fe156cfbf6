/* ttrpc framing: the 10-byte header (u32 BE length, u32 BE stream id, u8 type, u8 flags),
 * an incremental frame reader that never allocates more than the payload limit, the
 * ttrpc Request/Response messages, and the outgoing write queue with two lanes:
 * control frames (responses, credit grants) always go before data frames. */
#ifndef SMOLVM_TTRPC_H
#define SMOLVM_TTRPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pb.h"
#include "rpc_status.h"

#define TTRPC_HEADER_LEN 10
#define TTRPC_MAX_PAYLOAD (4u << 20)

enum ttrpc_type { TTRPC_REQUEST = 1, TTRPC_RESPONSE = 2, TTRPC_DATA = 3 };
enum ttrpc_flag {
    TTRPC_FLAG_REMOTE_CLOSED = 0x01,
    TTRPC_FLAG_REMOTE_OPEN = 0x02,
    TTRPC_FLAG_NO_DATA = 0x04,
    TTRPC_FLAG_CREDIT = 0x08, /* smolvm: flow-control grant, payload = u32 BE bytes */
};

struct ttrpc_frame {
    uint32_t stream_id;
    uint8_t type;
    uint8_t flags;
    const uint8_t *payload;
    uint32_t len;
};

struct ttrpc_reader_ops {
    /* A complete frame; payload is valid only during the call. */
    void (*frame)(void *ctx, const struct ttrpc_frame *frame);
    /* A frame longer than the limit: its payload was skipped without being stored. */
    void (*oversized)(void *ctx, uint32_t stream_id, uint8_t type, uint32_t len);
};

struct ttrpc_reader {
    uint8_t header[TTRPC_HEADER_LEN];
    size_t header_have;
    struct ttrpc_frame cur; /* header of the frame being assembled */
    uint8_t *payload;       /* NULL while discarding an oversized payload */
    uint32_t have;
    bool in_payload;
    uint32_t max_payload;
};

void ttrpc_put_header(uint8_t out[TTRPC_HEADER_LEN], uint32_t len, uint32_t stream_id,
                      uint8_t type, uint8_t flags);
void ttrpc_reader_init(struct ttrpc_reader *r, uint32_t max_payload);
/* Drops a partial frame (a new connection starts from a clean state). */
void ttrpc_reader_reset(struct ttrpc_reader *r);
/* Consumes all n bytes, calling ops for every completed frame. -1 only when out of memory
 * (the reader is then reset). */
int ttrpc_reader_push(struct ttrpc_reader *r, const uint8_t *data, size_t n,
                      const struct ttrpc_reader_ops *ops, void *ctx);

/* ttrpc.Request, pointing into the frame payload. */
struct ttrpc_request {
    const uint8_t *service;
    size_t service_len;
    const uint8_t *method;
    size_t method_len;
    const uint8_t *payload;
    size_t payload_len;
    int64_t timeout_nano;
};
/* 0, or -1 when the bytes are not a valid Request. */
int ttrpc_decode_request(const uint8_t *data, size_t len, struct ttrpc_request *out);
/* ttrpc.Response: status (omitted when code is 0) and payload. */
void ttrpc_encode_response(pb_writer *w, int32_t code, const char *message,
                           const uint8_t *payload, size_t payload_len);

/* --- write queue --- */
enum wq_lane { WQ_CONTROL = 0, WQ_DATA = 1 };

struct wq_item {
    struct wq_item *next;
    size_t len;
    size_t off;
    uint8_t bytes[];
};

struct write_queue {
    struct wq_item *head[2];
    struct wq_item *tail[2];
    size_t queued[2]; /* bytes not yet written, per lane */
    int partial_lane; /* lane whose head is partially written, else -1 */
};

void wq_init(struct write_queue *q);
void wq_clear(struct write_queue *q);
/* Queues one frame. 0, or -1 out of memory / payload too large. */
int wq_push_frame(struct write_queue *q, enum wq_lane lane, uint32_t stream_id, uint8_t type,
                  uint8_t flags, const void *payload, size_t len);
/* Writes as much as fd takes. 0: queue empty; 1: fd would block; -1: error (errno set). */
int wq_flush(struct write_queue *q, int fd);
static inline size_t wq_queued(const struct write_queue *q, enum wq_lane lane)
{
    return q->queued[lane];
}
static inline bool wq_empty(const struct write_queue *q)
{
    return !q->head[0] && !q->head[1];
}

#endif
