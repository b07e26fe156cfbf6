/* Stdio pumps between a process's pipes and its streams on the host connection, with the
 * per-stream credit of agent.proto: stdout/stderr are read only while the host has granted
 * credit (and the data lane is not full); stdin bytes are written to the pipe without
 * blocking and their credit is returned once written. When the connection goes away the
 * streams are detached: output is drained and dropped, stdin is closed, so no process
 * blocks on a host that is gone. */
#ifndef SMOLVM_STDIO_PUMP_H
#define SMOLVM_STDIO_PUMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agent.h"
#include "ttrpc.h"

struct process;

enum stream_dir { STREAM_OUT, STREAM_IN };

struct stream {
    struct stream *next;
    uint32_t id; /* 0 once detached from the connection */
    enum stream_dir dir;
    int fd;      /* the agent's pipe end, -1 once closed */
    struct process *proc;
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

/* Takes ownership of fd (non-blocking, close-on-exec), closing it on failure. NULL when out
 * of memory. */
struct stream *stream_open(enum stream_dir dir, uint32_t id, int fd, struct process *proc);
/* Gives a stream opened with fd -1 its fd (terminal: the pty master arrives after the
 * stream ids were claimed); takes ownership. */
void stream_set_fd(struct stream *s, int fd);
/* Closes the pipe and frees the stream (no EOF frame). */
void stream_destroy(struct stream *s);
bool stream_id_in_use(uint32_t id);
/* Is this output stream finished (EOF handled)? NULL counts as finished. */
bool stream_out_done(const struct stream *s);
/* A type-3 frame from the host: stdin data/EOF, or a credit grant for an output stream. */
void stream_on_host_frame(const struct ttrpc_frame *f);
/* epoll readiness of the stream's pipe. */
void stream_on_ready(void *stream, uint32_t events);
/* Re-evaluates every stream's epoll interest (after the data lane drained). */
void stream_update_all(void);
/* Host connection lost. */
void stream_detach_all(void);
/* Ends an output stream now (EOF frame if attached), dropping unread output. */
void stream_force_eof(struct stream *s);
/* CloseStdin: EOF once the buffered bytes are written. */
void stream_close_stdin(struct stream *s);

#endif
