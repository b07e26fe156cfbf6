#include "service.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "agent_pb.h"
#include "container.h"
#include "log.h"
#include "reseed.h"
#include "stdio_pump.h"

#define SERVICE_NAME "smolvm.agent.v1.Agent"
#define MAX_ENTROPY_BYTES 65536

static void handle_handshake(uint64_t gen, uint32_t sid, const uint8_t *payload, size_t len)
{
    struct handshake_request req;
    if (agent_decode_handshake(payload, len, &req) < 0) {
        agent_respond_error(gen, sid, RPC_INVALID_ARGUMENT, "Handshake: malformed HandshakeRequest");
        return;
    }
    if (req.protocol_version != AGENT_PROTOCOL_VERSION) {
        agent_respond_error(gen, sid, RPC_FAILED_PRECONDITION,
                            "Handshake: protocol version %u not supported (agent speaks %u)",
                            req.protocol_version, AGENT_PROTOCOL_VERSION);
        return;
    }
    if (req.entropy_len > MAX_ENTROPY_BYTES) {
        agent_respond_error(gen, sid, RPC_INVALID_ARGUMENT, "Handshake: %zu bytes of entropy (max %d)",
                            req.entropy_len, MAX_ENTROPY_BYTES);
        return;
    }
    if (req.host_time_unix_nano) {
        struct timespec ts = { .tv_sec = (time_t)(req.host_time_unix_nano / 1000000000ull),
                               .tv_nsec = (long)(req.host_time_unix_nano % 1000000000ull) };
        if (clock_settime(CLOCK_REALTIME, &ts) < 0)
            LOG_WARN("clock_settime: %s", strerror(errno));
    }
    if (req.entropy_len > 0)
        rng_mix_and_reseed(req.entropy, req.entropy_len);
    struct utsname u;
    if (uname(&u) < 0)
        strcpy(u.release, "unknown");
    pb_writer w;
    pb_writer_init(&w);
    agent_encode_handshake_response(&w, AGENT_PROTOCOL_VERSION, AGENT_VERSION, u.release,
                                    INITIAL_STREAM_CREDIT, MAX_DATA_FRAME, AGENT_PROTOCOL_MINOR);
    agent_respond(gen, sid, WQ_CONTROL, RPC_OK, NULL, &w);
    pb_writer_free(&w);
    g_conn.handshake_done = true;
    LOG_INFO("handshake done (kernel %s)", u.release);
}

/* The handlers of the methods that decode a request, pass it on and free it. */
#define DECODE_AND_CALL(name, T, decode, call, free_fn, method)                                     \
    static void name(uint64_t gen, uint32_t sid, const uint8_t *payload, size_t len)             \
    {                                                                                            \
        T req;                                                                                   \
        if (decode(payload, len, &req) < 0) {                                                    \
            agent_respond_error(gen, sid, RPC_INVALID_ARGUMENT, method ": malformed " method "Request"); \
            return;                                                                              \
        }                                                                                        \
        call(gen, sid, &req);                                                                    \
        free_fn(&req);                                                                           \
    }

DECODE_AND_CALL(handle_create, struct create_container_request, agent_decode_create, container_create,
                agent_create_free, "CreateContainer")
DECODE_AND_CALL(handle_exec, struct exec_process_request, agent_decode_exec, container_exec, agent_exec_free,
                "ExecProcess")
DECODE_AND_CALL(handle_update, struct update_container_request, agent_decode_update, container_update,
                agent_update_free, "UpdateContainer")
DECODE_AND_CALL(handle_watch_oom, struct watch_oom_request, agent_decode_watch_oom, container_watch_oom,
                agent_watch_oom_free, "WatchOom")
DECODE_AND_CALL(handle_resize, struct resize_pty_request, agent_decode_resize, container_resize_pty,
                agent_resize_free, "ResizePty")

static void handle_shutdown(uint64_t gen, uint32_t sid, const uint8_t *payload, size_t len)
{
    LOG_INFO("shutdown requested");
    agent_respond(gen, sid, WQ_CONTROL, RPC_OK, NULL, NULL);
    agent_begin_shutdown();
}

/* Methods after the handshake, with their raw payload. */
static const struct {
    const char *method;
    void (*handler)(uint64_t gen, uint32_t sid, const uint8_t *payload, size_t len);
} payload_methods[] = {
    { "CreateContainer", handle_create }, { "ExecProcess", handle_exec },
    { "ResizePty", handle_resize },       { "UpdateContainer", handle_update },
    { "WatchOom", handle_watch_oom },     { "Reseed", reseed_handle },
    { "Shutdown", handle_shutdown },
};

typedef void (*target_handler)(uint64_t gen, uint32_t sid, const struct process_target *t);

static const struct {
    const char *method;
    target_handler handler;
} target_methods[] = {
    { "StartProcess", container_start },     { "WaitProcess", container_wait },
    { "SignalProcess", container_signal },   { "CloseStdin", container_close_stdin },
    { "ListProcesses", container_list },     { "RemoveContainer", container_remove },
    { "RemoveProcess", container_remove_process },   { "StatsContainer", container_stats },
};

static bool bytes_eq(const uint8_t *b, size_t n, const char *s)
{
    return strlen(s) == n && memcmp(b, s, n) == 0;
}

static void handle_request(uint32_t sid, const uint8_t *data, size_t len)
{
    uint64_t gen = g_conn.gen;
    struct ttrpc_request req;
    if (ttrpc_decode_request(data, len, &req) < 0) {
        agent_respond_error(gen, sid, RPC_INVALID_ARGUMENT, "malformed ttrpc request on stream %u", sid);
        return;
    }
    int slen = req.service_len > 200 ? 200 : (int)req.service_len;
    int mlen = req.method_len > 200 ? 200 : (int)req.method_len;
    if (!bytes_eq(req.service, req.service_len, SERVICE_NAME)) {
        agent_respond_error(gen, sid, RPC_UNIMPLEMENTED, "unknown service %.*s", slen, (const char *)req.service);
        return;
    }
    LOG_DEBUG("request %u: %.*s", sid, mlen, (const char *)req.method);
    bool is_handshake = bytes_eq(req.method, req.method_len, "Handshake");
    if (!g_conn.handshake_done && !is_handshake) {
        agent_respond_error(gen, sid, RPC_FAILED_PRECONDITION, "%.*s: Handshake is required first", mlen,
                            (const char *)req.method);
        return;
    }
    if (is_handshake) {
        handle_handshake(gen, sid, req.payload, req.payload_len);
        return;
    }
    for (size_t i = 0; i < sizeof payload_methods / sizeof payload_methods[0]; i++) {
        if (bytes_eq(req.method, req.method_len, payload_methods[i].method)) {
            payload_methods[i].handler(gen, sid, req.payload, req.payload_len);
            return;
        }
    }
    for (size_t i = 0; i < sizeof target_methods / sizeof target_methods[0]; i++) {
        if (!bytes_eq(req.method, req.method_len, target_methods[i].method))
            continue;
        struct process_target t;
        if (agent_decode_target(req.payload, req.payload_len, &t) < 0) {
            agent_respond_error(gen, sid, RPC_INVALID_ARGUMENT, "%s: malformed request", target_methods[i].method);
            return;
        }
        target_methods[i].handler(gen, sid, &t);
        agent_target_free(&t);
        return;
    }
    agent_respond_error(gen, sid, RPC_UNIMPLEMENTED, "unknown method %s/%.*s", SERVICE_NAME, mlen,
                        (const char *)req.method);
}

void service_on_frame(const struct ttrpc_frame *f)
{
    switch (f->type) {
    case TTRPC_REQUEST:
        if ((f->stream_id & 1) == 0) {
            /* Client-initiated streams are odd; even ids belong to stdio. */
            agent_respond_error(g_conn.gen, f->stream_id, RPC_INVALID_ARGUMENT,
                                "request on even stream id %u (client streams are odd)", f->stream_id);
            return;
        }
        handle_request(f->stream_id, f->payload, f->len);
        return;
    case TTRPC_DATA:
        if (!g_conn.handshake_done) {
            LOG_WARN("data frame on stream %u before the handshake: dropped", f->stream_id);
            return;
        }
        stream_on_host_frame(f);
        return;
    default:
        LOG_WARN("unexpected frame type %u on stream %u: dropped", f->type, f->stream_id);
    }
}

void service_on_oversized(uint32_t stream_id, uint8_t type, uint32_t len)
{
    LOG_WARN("frame of %u bytes on stream %u exceeds %u: skipped", len, stream_id, TTRPC_MAX_PAYLOAD);
    if (type == TTRPC_REQUEST)
        agent_respond_error(g_conn.gen, stream_id, RPC_RESOURCE_EXHAUSTED,
                            "message length %u exceeds maximum message size of %u", len, TTRPC_MAX_PAYLOAD);
}
