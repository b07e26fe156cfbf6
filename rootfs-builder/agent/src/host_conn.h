/* The connection to the host: one ttrpc byte stream at a time (the virtio-serial port or an
 * accepted vsock socket, channel.h hands it over), its frame reader, the outgoing queue with
 * its control and data lanes, and the flow control of both directions: requests are read only
 * while the control lane holds less than CONTROL_QUEUE_LIMIT, and the data lane's room is
 * announced so that output streams read again. It is an object the agent's main makes and
 * passes to whoever sends; it calls upwards only through the ops it was given. */
#ifndef SMOLVM_HOST_CONN_H
#define SMOLVM_HOST_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "pb.h"
#include "ttrpc.h"

struct host_conn_ops {
    /* A complete frame from the host; payload valid only during the call. */
    void (*frame)(void *ctx, const struct ttrpc_frame *f);
    /* A frame beyond TTRPC_MAX_PAYLOAD: skipped without being stored. */
    void (*oversized)(void *ctx, uint32_t stream_id, uint8_t type, uint32_t len);
    /* A flush round is over: the data lane may have room for output again. */
    void (*data_room)(void *ctx);
    /* The connection ended: its queue and reader are cleared, its fd is no longer used. */
    void (*lost)(void *ctx);
};

struct host_conn {
    int fd; /* -1: no host connected */
    /* Changes on every (re)connection: an answer remembers the generation its request came
     * on and is dropped when the host that asked is gone. */
    uint64_t gen;
    bool read_blocked; /* stopped reading requests: control lane full */
    struct ttrpc_reader reader;
    struct write_queue wq;
    const struct host_conn_ops *ops;
    void *ctx;
};

void host_conn_init(struct host_conn *c, const struct host_conn_ops *ops, void *ctx);
static inline bool host_conn_connected(const struct host_conn *c)
{
    return c->fd >= 0;
}
/* A host connected on fd (not owned: the channel closes it); `what` names the channel in the log. */
void host_conn_begin(struct host_conn *c, int fd, const char *what);
/* Ends the connection (why goes to the log) and tells ops->lost. Nothing when not connected. */
void host_conn_end(struct host_conn *c, const char *why);
/* Reads what the host sent (fd readable), as long as the control lane has room. */
void host_conn_read(struct host_conn *c);
/* Writes what fd takes (after every batch of events). */
void host_conn_flush(struct host_conn *c);
/* Nothing left to write. */
bool host_conn_drained(const struct host_conn *c);

/* Queues a frame; dropped when no host is connected. */
void host_conn_send(struct host_conn *c, enum wq_lane lane, uint32_t stream_id, uint8_t type, uint8_t flags,
                    const void *payload, size_t len);
size_t host_conn_queued(const struct host_conn *c, enum wq_lane lane);
/* Queues the ttrpc Response to request stream_id of connection `gen` (dropped when that host is
 * gone): code and message, or RPC_OK and the payload (NULL: empty). A payload whose encoding
 * ran out of memory turns into RPC_INTERNAL. Lane WQ_DATA keeps it behind the data frames
 * already queued (WaitProcess: output EOF before the exit status). */
void host_conn_respond(struct host_conn *c, uint64_t gen, uint32_t stream_id, enum wq_lane lane, int32_t code,
                       const char *message, const pb_writer *payload);

#endif
