/* The ttrpc service smolvm.agent.v1.Agent (kata's rpc.rs): decodes each request, enforces the
 * handshake, calls the container layer (container.h, process.h), encodes the answer and queues
 * it on the host connection. It alone knows the request and response messages and the
 * connection. Answers that wait (CreateContainer and ExecProcess until the child is set up,
 * StartProcess until it exec'd, WaitProcess until it finished, RemoveContainer and
 * RemoveProcess until the kill is reaped, WatchOom until an OOM kill) are kept here and
 * completed by the container layer's events. Data frames go to the stdio streams. */
#ifndef SMOLVM_RPC_H
#define SMOLVM_RPC_H

#include <stdint.h>

#include "container.h"
#include "host_conn.h"
#include "stdio_pump.h"
#include "ttrpc.h"

struct rpc_pending;

struct rpc {
    struct host_conn *conn;
    struct stream_set *streams;
    uint64_t handshake_gen; /* the connection generation whose Handshake succeeded (0: none) */
    struct rpc_pending *pending; /* answers that wait, newest first */
    /* Shutdown was answered: the agent's owner kills, syncs and powers off. */
    void (*shutdown)(void *ctx);
    void *shutdown_ctx;
};

void rpc_init(struct rpc *r, struct host_conn *conn, struct stream_set *streams, void (*shutdown)(void *ctx),
              void *shutdown_ctx);
/* The container layer's events, answering what waits here (for containers_init). */
struct container_events rpc_container_events(struct rpc *r);

/* A frame from the host (host_conn_ops.frame). */
void rpc_on_frame(struct rpc *r, const struct ttrpc_frame *f);
/* A frame over the size limit, skipped (host_conn_ops.oversized). */
void rpc_on_oversized(struct rpc *r, uint32_t stream_id, uint8_t type, uint32_t len);

#endif
