/* Stdio pumps between a process's pipes and its streams on the host connection, with the
 * per-stream credit of agent.proto: stdout/stderr are read only while the host has granted
 * credit (and the data lane is not full); stdin bytes are written to the pipe without
 * blocking and their credit is returned once written. When the connection goes away the
 * streams are detached: output is drained and dropped, stdin is closed, so no process
 * blocks on a host that is gone. The streams know their owner (a process) only as a pointer
 * handed back when an output ends, and the connection only through a stream_link. */
#ifndef SMOLVM_STDIO_PUMP_H
#define SMOLVM_STDIO_PUMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "event_loop.h"
#include "ttrpc.h"

/* What the streams need of the host connection, and nothing more. */
struct stream_link {
    /* Queues a data frame (type 3) on the lane for the host; dropped when none is connected. */
    void (*send)(void *conn, enum wq_lane lane, uint32_t stream_id, uint8_t flags, const void *payload, size_t len);
    /* Bytes waiting on the data lane (output is read only below DATA_QUEUE_LIMIT). */
    size_t (*data_queued)(const void *conn);
    void *conn;
};

/* Every stream of the agent: stream ids are unique across processes. */
struct stream_set {
    struct stream *head;
    struct stream_link link;
    /* An output stream's end was handled (its EOF frame queued, or dropped when detached);
     * owner is what stream_open was given. Set by the streams' owners (process.h). */
    void (*output_done)(void *owner);
};

enum stream_dir { STREAM_OUT, STREAM_IN };

struct stream {
    struct stream *next;
    struct stream_set *set;
    uint32_t id; /* 0 once detached from the connection */
    enum stream_dir dir;
    int fd;      /* the agent's pipe end, -1 once closed */
    void *owner; /* told through the set's output_done */
    struct watch watch;
    uint32_t registered_events; /* 0: not in epoll */
    /* STREAM_OUT */
    uint32_t credit;
    bool done; /* EOF seen and (if attached) its frame queued */
    /* STREAM_IN */
    uint8_t *buf;
    size_t len;
    uint32_t window; /* bytes the host may still send without new credit */
    bool eof_requested;
};

void stream_set_init(struct stream_set *set, const struct stream_link *link);
/* Takes ownership of fd (non-blocking, close-on-exec), closing it on failure. NULL when out
 * of memory. */
struct stream *stream_open(struct stream_set *set, enum stream_dir dir, uint32_t id, int fd, void *owner);
/* Gives a stream opened with fd -1 its fd (terminal: the pty master arrives after the
 * stream ids were claimed); takes ownership. */
void stream_set_fd(struct stream *s, int fd);
/* Closes the pipe and frees the stream (no EOF frame). */
void stream_destroy(struct stream *s);
bool stream_id_in_use(const struct stream_set *set, uint32_t id);
/* Is this output stream finished (EOF handled)? NULL counts as finished. */
bool stream_out_done(const struct stream *s);
/* A type-3 frame from the host: stdin data/EOF, or a credit grant for an output stream. */
void stream_on_host_frame(struct stream_set *set, const struct ttrpc_frame *f);
/* Re-evaluates every stream's epoll interest (after the data lane drained). */
void stream_update_all(struct stream_set *set);
/* Host connection lost. */
void stream_detach_all(struct stream_set *set);
/* Ends an output stream now (EOF frame if attached), dropping unread output. */
void stream_force_eof(struct stream *s);
/* CloseStdin: EOF once the buffered bytes are written. */
void stream_close_stdin(struct stream *s);

#endif
