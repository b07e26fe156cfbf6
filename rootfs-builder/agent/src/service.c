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

static void handle_create(uint64_t gen, uint32_t sid, const uint8_t *payload, size_t len)
{
    struct create_container_request req;
    if (agent_decode_create(payload, len, &req) < 0) {
        agent_respond_error(gen, sid, RPC_INVALID_ARGUMENT, "CreateContainer: malformed CreateContainerRequest");
        return;
    }
    container_create(gen, sid, &req);
    agent_create_free(&req);
}

static void handle_exec(uint64_t gen, uint32_t sid, const uint8_t *payload, size_t len)
{
    struct exec_process_request req;
    if (agent_decode_exec(payload, len, &req) < 0) {
        agent_respond_error(gen, sid, RPC_INVALID_ARGUMENT, "ExecProcess: malformed ExecProcessRequest");
        return;
    }
    container_exec(gen, sid, &req);
    agent_exec_free(&req);
}

static void handle_update(uint64_t gen, uint32_t sid, const uint8_t *payload, size_t len)
{
    struct update_container_request req;
    if (agent_decode_update(payload, len, &req) < 0) {
        agent_respond_error(gen, sid, RPC_INVALID_ARGUMENT, "UpdateContainer: malformed UpdateContainerRequest");
        return;
    }
    container_update(gen, sid, &req);
    agent_update_free(&req);
}

static void handle_watch_oom(uint64_t gen, uint32_t sid, const uint8_t *payload, size_t len)
{
    struct watch_oom_request req;
    if (agent_decode_watch_oom(payload, len, &req) < 0) {
        agent_respond_error(gen, sid, RPC_INVALID_ARGUMENT, "WatchOom: malformed WatchOomRequest");
        return;
    }
    container_watch_oom(gen, sid, &req);
    agent_watch_oom_free(&req);
}

static void handle_resize(uint64_t gen, uint32_t sid, const uint8_t *payload, size_t len)
{
    struct resize_pty_request req;
    if (agent_decode_resize(payload, len, &req) < 0) {
        agent_respond_error(gen, sid, RPC_INVALID_ARGUMENT, "ResizePty: malformed ResizePtyRequest");
        return;
    }
    container_resize_pty(gen, sid, &req);
    agent_resize_free(&req);
}

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
    if (bytes_eq(req.method, req.method_len, "CreateContainer")) {
        handle_create(gen, sid, req.payload, req.payload_len);
        return;
    }
    if (bytes_eq(req.method, req.method_len, "ExecProcess")) {
        handle_exec(gen, sid, req.payload, req.payload_len);
        return;
    }
    if (bytes_eq(req.method, req.method_len, "ResizePty")) {
        handle_resize(gen, sid, req.payload, req.payload_len);
        return;
    }
    if (bytes_eq(req.method, req.method_len, "UpdateContainer")) {
        handle_update(gen, sid, req.payload, req.payload_len);
        return;
    }
    if (bytes_eq(req.method, req.method_len, "WatchOom")) {
        handle_watch_oom(gen, sid, req.payload, req.payload_len);
        return;
    }
    if (bytes_eq(req.method, req.method_len, "Reseed")) {
        reseed_handle(gen, sid, req.payload, req.payload_len);
        return;
    }
    if (bytes_eq(req.method, req.method_len, "Shutdown")) {
        LOG_INFO("shutdown requested");
        agent_respond(gen, sid, WQ_CONTROL, RPC_OK, NULL, NULL);
        agent_begin_shutdown();
        return;
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
