#include "rpc.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "agent.h"
#include "agent_pb.h"
#include "log.h"
#include "process.h"
#include "reseed.h"

#define SERVICE_NAME "smolvm.agent.v1.Agent"
#define MAX_ENTROPY_BYTES 65536
/* Room for any message of the container layer (longer ones are cut, as ttrpc answers were). */
#define ERR_MAX 1024
#define MAX_LISTED_PIDS 4096

/* ---------------------------------------------------------------- answering */

static void answer(struct rpc *r, uint64_t gen, uint32_t sid, enum wq_lane lane, const pb_writer *payload)
{
    host_conn_respond(r->conn, gen, sid, lane, RPC_OK, NULL, payload);
}

static void answer_error(struct rpc *r, uint64_t gen, uint32_t sid, int32_t code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void answer_error(struct rpc *r, uint64_t gen, uint32_t sid, int32_t code, const char *fmt, ...)
{
    char msg[ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    LOG_DEBUG("stream %u: error %d: %s", sid, code, msg);
    host_conn_respond(r->conn, gen, sid, WQ_CONTROL, code, msg, NULL);
}

/* The answer to a request the container layer answered with a result: OK (empty) or the error. */
static void answer_result(struct rpc *r, uint64_t gen, uint32_t sid, int code, const char *err)
{
    if (code == RPC_OK)
        answer(r, gen, sid, WQ_CONTROL, NULL);
    else
        answer_error(r, gen, sid, code, "%s", err);
}

/* CreateContainerResponse, ExecProcessResponse and StartProcessResponse: { pid }. */
static void answer_pid(struct rpc *r, uint64_t gen, uint32_t sid, const struct process *p)
{
    pb_writer w;
    pb_writer_init(&w);
    agent_encode_pid_response(&w, (uint32_t)p->pid);
    answer(r, gen, sid, WQ_CONTROL, &w);
    pb_writer_free(&w);
}

/* ---------------------------------------------------------------- answers that wait */

enum pending_kind {
    PENDING_SETUP,            /* CreateContainer, ExecProcess: the process's set-up */
    PENDING_START,            /* StartProcess: its exec */
    PENDING_WAIT,             /* WaitProcess: its end */
    PENDING_REMOVE_PROCESS,   /* RemoveProcess: the exec's reaping */
    PENDING_REMOVE_CONTAINER, /* RemoveContainer: the container's end */
    PENDING_OOM,              /* WatchOom: an OOM kill past `seen` */
};

struct rpc_pending {
    struct rpc_pending *next;
    enum pending_kind kind;
    const void *target; /* the process, or the container (REMOVE_CONTAINER, OOM) */
    uint64_t gen;
    uint32_t stream_id;
    uint64_t seen; /* OOM: the count the caller has seen */
};

/* A pending answer for request sid of connection gen; NULL when out of memory. */
static struct rpc_pending *pending_new(enum pending_kind kind, uint64_t gen, uint32_t sid)
{
    struct rpc_pending *pd = calloc(1, sizeof *pd);
    if (pd) {
        pd->kind = kind;
        pd->gen = gen;
        pd->stream_id = sid;
    }
    return pd;
}

static void pending_add(struct rpc *r, struct rpc_pending *pd, const void *target)
{
    pd->target = target;
    pd->next = r->pending;
    r->pending = pd;
}

/* Unlinks and returns the newest pending answer of this kind for target; NULL when none. */
static struct rpc_pending *pending_take(struct rpc *r, enum pending_kind kind, const void *target)
{
    for (struct rpc_pending **pp = &r->pending; *pp; pp = &(*pp)->next) {
        struct rpc_pending *pd = *pp;
        if (pd->kind == kind && pd->target == target) {
            *pp = pd->next;
            return pd;
        }
    }
    return NULL;
}

static void pending_drop(struct rpc *r, struct rpc_pending *pd)
{
    for (struct rpc_pending **pp = &r->pending; *pp; pp = &(*pp)->next) {
        if (*pp == pd) {
            *pp = pd->next;
            break;
        }
    }
    free(pd);
}

static bool pending_any(const struct rpc *r, enum pending_kind kind, const void *target)
{
    for (const struct rpc_pending *pd = r->pending; pd; pd = pd->next)
        if (pd->kind == kind && pd->target == target)
            return true;
    return false;
}

/* The process a request names; false when there is none (the request is answered). */
static bool find_process(struct rpc *r, uint64_t gen, uint32_t sid, const struct process_target *t,
                         struct container **c, struct process **p)
{
    char err[ERR_MAX];
    int code = container_find_process(t->container_id, t->exec_id, c, p, err, sizeof err);
    if (code != RPC_OK)
        answer_error(r, gen, sid, code, "%s", err);
    return code == RPC_OK;
}

/* The container a request names, with a cgroup when `cgroup_use` names what it is for; false
 * when there is none (the request is answered). */
static bool find_container(struct rpc *r, uint64_t gen, uint32_t sid, const char *id, const char *cgroup_use,
                           struct container **c)
{
    char err[ERR_MAX];
    int code = cgroup_use ? container_find_with_cgroup(id, cgroup_use, c, err, sizeof err)
                          : container_find(id, c, err, sizeof err);
    if (code != RPC_OK)
        answer_error(r, gen, sid, code, "%s", err);
    return code == RPC_OK;
}

/* The answer to request sid waits for target (`name` in messages); NULL when memory is short
 * (the request is answered). */
static struct rpc_pending *await(struct rpc *r, uint64_t gen, uint32_t sid, enum pending_kind kind,
                                 const void *target, const char *name)
{
    struct rpc_pending *pd = pending_new(kind, gen, sid);
    if (!pd)
        answer_error(r, gen, sid, RPC_INTERNAL, "%s: out of memory", name);
    else
        pending_add(r, pd, target);
    return pd;
}

/* Answers (and forgets) every pending answer of this kind for target: OK (empty) or the error. */
static void answer_all(struct rpc *r, enum pending_kind kind, const void *target, int32_t code, const char *msg)
{
    struct rpc_pending *pd;
    while ((pd = pending_take(r, kind, target))) {
        answer_result(r, pd->gen, pd->stream_id, code, msg);
        free(pd);
    }
}

static void answer_waits(struct rpc *r, const struct process *p)
{
    if (!pending_any(r, PENDING_WAIT, p))
        return;
    pb_writer w;
    pb_writer_init(&w);
    agent_encode_wait_response(&w, p->exit_status, p->exited_at, p->oom_kill);
    struct rpc_pending *pd;
    while ((pd = pending_take(r, PENDING_WAIT, p))) {
        /* Data lane: behind the EOF frames of its output (agent.proto's ordering rule). */
        answer(r, pd->gen, pd->stream_id, WQ_DATA, &w);
        free(pd);
    }
    pb_writer_free(&w);
}

/* WatchOom callers of c: answered once count passed what they saw, or when c is removed;
 * callers from a connection that is gone are forgotten. */
static void answer_oom(struct rpc *r, const struct container *c, uint64_t count, bool removed)
{
    struct rpc_pending **pp = &r->pending;
    while (*pp) {
        struct rpc_pending *w = *pp;
        if (w->kind != PENDING_OOM || w->target != c ||
            (!removed && count <= w->seen && w->gen == r->conn->gen)) {
            pp = &w->next;
            continue;
        }
        *pp = w->next;
        if (w->gen == r->conn->gen) { /* else: asked on a connection that is gone */
            pb_writer out;
            pb_writer_init(&out);
            agent_encode_watch_oom_response(&out, count, removed);
            answer(r, w->gen, w->stream_id, WQ_CONTROL, &out);
            pb_writer_free(&out);
        }
        free(w);
    }
}

/* The answer to a set-up (SETUP) or a start (START) the container layer reports. */
static void answer_step(struct rpc *r, enum pending_kind kind, const struct process *p, int32_t code,
                        const char *message)
{
    struct rpc_pending *pd = pending_take(r, kind, p);
    if (!pd)
        return;
    if (code == RPC_OK)
        answer_pid(r, pd->gen, pd->stream_id, p);
    else
        answer_error(r, pd->gen, pd->stream_id, code, "%s", message);
    free(pd);
}

static void on_setup_done(void *ctx, struct process *p, int32_t code, const char *message)
{
    answer_step(ctx, PENDING_SETUP, p, code, message);
}

static void on_start_done(void *ctx, struct process *p, int32_t code, const char *message)
{
    answer_step(ctx, PENDING_START, p, code, message);
}

static void on_finished(void *ctx, struct process *p)
{
    answer_waits(ctx, p);
}

static void on_released(void *ctx, struct process *p, const char *message)
{
    struct rpc *r = ctx;
    answer_step(r, PENDING_SETUP, p, RPC_NOT_FOUND, message);
    answer_step(r, PENDING_START, p, RPC_NOT_FOUND, message);
    answer_all(r, PENDING_WAIT, p, RPC_NOT_FOUND, message);
    answer_all(r, PENDING_REMOVE_PROCESS, p, RPC_OK, NULL); /* gone, as asked */
}

static void on_gone(void *ctx, struct container *c, uint64_t oom_kill)
{
    struct rpc *r = ctx;
    answer_oom(r, c, oom_kill, true);
    answer_all(r, PENDING_REMOVE_CONTAINER, c, RPC_OK, NULL);
}

static void on_oom_events(void *ctx)
{
    struct rpc *r = ctx;
    for (struct container *c = container_first(); c; c = container_next(c))
        if (container_has_cgroup(c) && pending_any(r, PENDING_OOM, c))
            answer_oom(r, c, container_oom_kill(c), false);
}

struct container_events rpc_container_events(struct rpc *r)
{
    struct container_events ev = {
        .setup_done = on_setup_done,
        .start_done = on_start_done,
        .finished = on_finished,
        .released = on_released,
        .gone = on_gone,
        .oom_events = on_oom_events,
        .ctx = r,
    };
    return ev;
}

/* ---------------------------------------------------------------- the methods */

static void handle_handshake(struct rpc *r, uint64_t gen, uint32_t sid, const uint8_t *payload, size_t len)
{
    struct handshake_request req;
    if (agent_decode_handshake(payload, len, &req) < 0) {
        answer_error(r, gen, sid, RPC_INVALID_ARGUMENT, "Handshake: malformed HandshakeRequest");
        return;
    }
    if (req.protocol_version != AGENT_PROTOCOL_VERSION) {
        answer_error(r, gen, sid, RPC_FAILED_PRECONDITION, "Handshake: protocol version %u not supported (agent speaks %u)",
                     req.protocol_version, AGENT_PROTOCOL_VERSION);
        return;
    }
    if (req.entropy_len > MAX_ENTROPY_BYTES) {
        answer_error(r, gen, sid, RPC_INVALID_ARGUMENT, "Handshake: %zu bytes of entropy (max %d)", req.entropy_len,
                     MAX_ENTROPY_BYTES);
        return;
    }
    reseed_on_handshake(req.host_time_unix_nano, req.entropy, req.entropy_len);
    struct utsname u;
    if (uname(&u) < 0)
        strcpy(u.release, "unknown");
    pb_writer w;
    pb_writer_init(&w);
    agent_encode_handshake_response(&w, AGENT_PROTOCOL_VERSION, AGENT_VERSION, u.release, INITIAL_STREAM_CREDIT,
                                    MAX_DATA_FRAME, AGENT_PROTOCOL_MINOR);
    answer(r, gen, sid, WQ_CONTROL, &w);
    pb_writer_free(&w);
    r->handshake_gen = gen;
    LOG_INFO("handshake done (kernel %s)", u.release);
}

/* CreateContainer (create) or ExecProcess (exec): answered once the child the container layer
 * clones is set up (setup_done), or at once when the call fails. */
static void clone_and_await(struct rpc *r, uint64_t gen, uint32_t sid, const struct create_container_request *create,
                            const struct exec_process_request *exec)
{
    char err[ERR_MAX];
    struct process *p = NULL;
    const char *id = create ? create->container_id : exec->container_id;
    /* Made before the call: the child is cloned by then, and must have someone to answer. */
    struct rpc_pending *pd = pending_new(PENDING_SETUP, gen, sid);
    int code = RPC_INTERNAL;
    if (!pd)
        snprintf(err, sizeof err, "container \"%s\": out of memory", id ? id : "");
    else if (create)
        code = container_create(create, &p, err, sizeof err);
    else
        code = container_exec(exec, &p, err, sizeof err);
    if (code != RPC_OK) {
        free(pd);
        answer_error(r, gen, sid, code, "%s", err);
        return;
    }
    pending_add(r, pd, p);
}

static void create_container(struct rpc *r, uint64_t gen, uint32_t sid, struct create_container_request *req)
{
    clone_and_await(r, gen, sid, req, NULL);
}

static void exec_process(struct rpc *r, uint64_t gen, uint32_t sid, struct exec_process_request *req)
{
    clone_and_await(r, gen, sid, NULL, req);
}

static void resize_pty(struct rpc *r, uint64_t gen, uint32_t sid, struct resize_pty_request *req)
{
    char err[ERR_MAX];
    struct process *p;
    int code = container_find_process(req->container_id, req->exec_id, NULL, &p, err, sizeof err);
    if (code == RPC_OK)
        code = process_resize_pty(p, req->width, req->height, err, sizeof err);
    answer_result(r, gen, sid, code, err);
}

static void update_container(struct rpc *r, uint64_t gen, uint32_t sid, struct update_container_request *req)
{
    struct container *c;
    if (!find_container(r, gen, sid, req->container_id, "update resources", &c))
        return;
    char err[ERR_MAX];
    answer_result(r, gen, sid, container_update(c, &req->resources, err, sizeof err), err);
}

static void watch_oom(struct rpc *r, uint64_t gen, uint32_t sid, struct watch_oom_request *req)
{
    struct container *c;
    if (!find_container(r, gen, sid, req->container_id, "watch OOM kills", &c))
        return;
    char name[160];
    snprintf(name, sizeof name, "container \"%s\"", container_id(c));
    struct rpc_pending *pd = await(r, gen, sid, PENDING_OOM, c, name);
    if (!pd)
        return;
    pd->seen = req->seen;
    /* Already past `seen`: answered at once (and waiters of a gone connection are dropped). */
    answer_oom(r, c, container_oom_kill(c), false);
}

static void reseed(struct rpc *r, uint64_t gen, uint32_t sid, struct reseed_request *req)
{
    char err[ERR_MAX];
    bool reseeded;
    uint32_t hwrng_bytes;
    int code = reseed_apply(req, &reseeded, &hwrng_bytes, err, sizeof err);
    if (code != RPC_OK) {
        answer_error(r, gen, sid, code, "%s", err);
        return;
    }
    pb_writer w;
    pb_writer_init(&w);
    agent_encode_reseed_response(&w, reseeded, hwrng_bytes);
    answer(r, gen, sid, WQ_CONTROL, &w);
    pb_writer_free(&w);
}

/* The handlers of the methods that decode a request, pass it on and free it. */
#define DECODE_AND_CALL(name, T, decode, call, free_fn, method)                                        \
    static void name(struct rpc *r, uint64_t gen, uint32_t sid, const uint8_t *payload, size_t len)    \
    {                                                                                                  \
        T req;                                                                                         \
        if (decode(payload, len, &req) < 0) {                                                          \
            answer_error(r, gen, sid, RPC_INVALID_ARGUMENT, method ": malformed " method "Request");    \
            return;                                                                                    \
        }                                                                                              \
        call(r, gen, sid, &req);                                                                       \
        free_fn(&req);                                                                                 \
    }

DECODE_AND_CALL(handle_create, struct create_container_request, agent_decode_create, create_container,
                agent_create_free, "CreateContainer")
DECODE_AND_CALL(handle_exec, struct exec_process_request, agent_decode_exec, exec_process, agent_exec_free,
                "ExecProcess")
DECODE_AND_CALL(handle_update, struct update_container_request, agent_decode_update, update_container,
                agent_update_free, "UpdateContainer")
DECODE_AND_CALL(handle_watch_oom, struct watch_oom_request, agent_decode_watch_oom, watch_oom, agent_watch_oom_free,
                "WatchOom")
DECODE_AND_CALL(handle_resize, struct resize_pty_request, agent_decode_resize, resize_pty, agent_resize_free,
                "ResizePty")
DECODE_AND_CALL(handle_reseed, struct reseed_request, agent_decode_reseed, reseed, agent_reseed_free, "Reseed")

static void handle_shutdown(struct rpc *r, uint64_t gen, uint32_t sid, const uint8_t *payload, size_t len)
{
    LOG_INFO("shutdown requested");
    answer(r, gen, sid, WQ_CONTROL, NULL);
    r->shutdown(r->shutdown_ctx);
}

/* The methods on one process (StartProcess...) or container, named by a ProcessTarget. */

static void start_process(struct rpc *r, uint64_t gen, uint32_t sid, const struct process_target *t)
{
    struct process *p;
    struct rpc_pending *pd;
    /* Waiting before the call: start_done may come from within it. */
    if (!find_process(r, gen, sid, t, NULL, &p) || !(pd = await(r, gen, sid, PENDING_START, p, process_name(p))))
        return;
    char err[ERR_MAX];
    int code = process_start(p, err, sizeof err);
    if (code != RPC_OK) {
        pending_drop(r, pd);
        answer_error(r, gen, sid, code, "%s", err);
    }
}

static void wait_process(struct rpc *r, uint64_t gen, uint32_t sid, const struct process_target *t)
{
    struct process *p;
    if (find_process(r, gen, sid, t, NULL, &p) && await(r, gen, sid, PENDING_WAIT, p, process_name(p)) &&
        process_finished(p))
        answer_waits(r, p);
}

static void signal_process(struct rpc *r, uint64_t gen, uint32_t sid, const struct process_target *t)
{
    struct container *c;
    struct process *p;
    if (!find_process(r, gen, sid, t, &c, &p))
        return;
    char err[ERR_MAX];
    answer_result(r, gen, sid, container_signal(c, p, t->signal, t->all, err, sizeof err), err);
}

static void close_stdin(struct rpc *r, uint64_t gen, uint32_t sid, const struct process_target *t)
{
    struct process *p;
    if (!find_process(r, gen, sid, t, NULL, &p))
        return;
    process_close_stdin(p);
    answer(r, gen, sid, WQ_CONTROL, NULL);
}

static void list_processes(struct rpc *r, uint64_t gen, uint32_t sid, const struct process_target *t)
{
    struct container *c;
    if (!find_container(r, gen, sid, t->container_id, NULL, &c))
        return;
    static uint32_t pids[MAX_LISTED_PIDS];
    static const char *exec_ids[MAX_LISTED_PIDS];
    size_t n = container_list(c, pids, exec_ids, MAX_LISTED_PIDS);
    pb_writer w;
    pb_writer_init(&w);
    agent_encode_list_response(&w, pids, exec_ids, n);
    answer(r, gen, sid, WQ_CONTROL, &w);
    pb_writer_free(&w);
}

static void remove_container(struct rpc *r, uint64_t gen, uint32_t sid, const struct process_target *t)
{
    struct container *c;
    if (!find_container(r, gen, sid, t->container_id, NULL, &c))
        return;
    char name[160];
    snprintf(name, sizeof name, "container \"%s\"", container_id(c));
    if (await(r, gen, sid, PENDING_REMOVE_CONTAINER, c, name))
        container_remove(c); /* answered when it is gone: maybe at once */
}

static void remove_process(struct rpc *r, uint64_t gen, uint32_t sid, const struct process_target *t)
{
    if (!t->exec_id || !t->exec_id[0]) {
        answer_error(r, gen, sid, RPC_INVALID_ARGUMENT,
                     "container \"%.200s\": RemoveProcess needs an exec id (RemoveContainer removes the init process)",
                     t->container_id ? t->container_id : "");
        return;
    }
    struct process *p;
    if (find_process(r, gen, sid, t, NULL, &p) && await(r, gen, sid, PENDING_REMOVE_PROCESS, p, process_name(p)))
        container_remove_process(p); /* answered when it is released: maybe at once */
}

static void stats_container(struct rpc *r, uint64_t gen, uint32_t sid, const struct process_target *t)
{
    struct container *c;
    if (!find_container(r, gen, sid, t->container_id, "stats", &c))
        return;
    char err[ERR_MAX];
    static struct container_stats st;
    int code = container_stats(c, &st, err, sizeof err);
    if (code != RPC_OK) {
        answer_error(r, gen, sid, code, "%s", err);
        return;
    }
    pb_writer w;
    pb_writer_init(&w);
    agent_encode_stats_response(&w, &st);
    answer(r, gen, sid, WQ_CONTROL, &w);
    pb_writer_free(&w);
}

/* ---------------------------------------------------------------- dispatch */

/* Methods after the handshake, with their raw payload. */
static const struct {
    const char *method;
    void (*handler)(struct rpc *r, uint64_t gen, uint32_t sid, const uint8_t *payload, size_t len);
} payload_methods[] = {
    { "CreateContainer", handle_create }, { "ExecProcess", handle_exec },
    { "ResizePty", handle_resize },       { "UpdateContainer", handle_update },
    { "WatchOom", handle_watch_oom },     { "Reseed", handle_reseed },
    { "Shutdown", handle_shutdown },
};

typedef void (*target_handler)(struct rpc *r, uint64_t gen, uint32_t sid, const struct process_target *t);

static const struct {
    const char *method;
    target_handler handler;
} target_methods[] = {
    { "StartProcess", start_process },     { "WaitProcess", wait_process },
    { "SignalProcess", signal_process },   { "CloseStdin", close_stdin },
    { "ListProcesses", list_processes },   { "RemoveContainer", remove_container },
    { "RemoveProcess", remove_process },   { "StatsContainer", stats_container },
};

static bool bytes_eq(const uint8_t *b, size_t n, const char *s)
{
    return strlen(s) == n && memcmp(b, s, n) == 0;
}

static void handle_request(struct rpc *r, uint32_t sid, const uint8_t *data, size_t len)
{
    uint64_t gen = r->conn->gen;
    struct ttrpc_request req;
    if (ttrpc_decode_request(data, len, &req) < 0) {
        answer_error(r, gen, sid, RPC_INVALID_ARGUMENT, "malformed ttrpc request on stream %u", sid);
        return;
    }
    int slen = req.service_len > 200 ? 200 : (int)req.service_len;
    int mlen = req.method_len > 200 ? 200 : (int)req.method_len;
    if (!bytes_eq(req.service, req.service_len, SERVICE_NAME)) {
        answer_error(r, gen, sid, RPC_UNIMPLEMENTED, "unknown service %.*s", slen, (const char *)req.service);
        return;
    }
    LOG_DEBUG("request %u: %.*s", sid, mlen, (const char *)req.method);
    bool is_handshake = bytes_eq(req.method, req.method_len, "Handshake");
    if (r->handshake_gen != gen && !is_handshake) {
        answer_error(r, gen, sid, RPC_FAILED_PRECONDITION, "%.*s: Handshake is required first", mlen,
                     (const char *)req.method);
        return;
    }
    if (is_handshake) {
        handle_handshake(r, gen, sid, req.payload, req.payload_len);
        return;
    }
    for (size_t i = 0; i < sizeof payload_methods / sizeof payload_methods[0]; i++) {
        if (bytes_eq(req.method, req.method_len, payload_methods[i].method)) {
            payload_methods[i].handler(r, gen, sid, req.payload, req.payload_len);
            return;
        }
    }
    for (size_t i = 0; i < sizeof target_methods / sizeof target_methods[0]; i++) {
        if (!bytes_eq(req.method, req.method_len, target_methods[i].method))
            continue;
        struct process_target t;
        if (agent_decode_target(req.payload, req.payload_len, &t) < 0) {
            answer_error(r, gen, sid, RPC_INVALID_ARGUMENT, "%s: malformed request", target_methods[i].method);
            return;
        }
        target_methods[i].handler(r, gen, sid, &t);
        agent_target_free(&t);
        return;
    }
    answer_error(r, gen, sid, RPC_UNIMPLEMENTED, "unknown method %s/%.*s", SERVICE_NAME, mlen,
                 (const char *)req.method);
}

void rpc_on_frame(struct rpc *r, const struct ttrpc_frame *f)
{
    switch (f->type) {
    case TTRPC_REQUEST:
        if ((f->stream_id & 1) == 0) {
            /* Client-initiated streams are odd; even ids belong to stdio. */
            answer_error(r, r->conn->gen, f->stream_id, RPC_INVALID_ARGUMENT,
                         "request on even stream id %u (client streams are odd)", f->stream_id);
            return;
        }
        handle_request(r, f->stream_id, f->payload, f->len);
        return;
    case TTRPC_DATA:
        if (r->handshake_gen != r->conn->gen) {
            LOG_WARN("data frame on stream %u before the handshake: dropped", f->stream_id);
            return;
        }
        stream_on_host_frame(r->streams, f);
        return;
    default:
        LOG_WARN("unexpected frame type %u on stream %u: dropped", f->type, f->stream_id);
    }
}

void rpc_on_oversized(struct rpc *r, uint32_t stream_id, uint8_t type, uint32_t len)
{
    LOG_WARN("frame of %u bytes on stream %u exceeds %u: skipped", len, stream_id, TTRPC_MAX_PAYLOAD);
    if (type == TTRPC_REQUEST)
        answer_error(r, r->conn->gen, stream_id, RPC_RESOURCE_EXHAUSTED,
                     "message length %u exceeds maximum message size of %u", len, TTRPC_MAX_PAYLOAD);
}

void rpc_init(struct rpc *r, struct host_conn *conn, struct stream_set *streams, void (*shutdown)(void *ctx),
              void *shutdown_ctx)
{
    r->conn = conn;
    r->streams = streams;
    r->handshake_gen = 0;
    r->pending = NULL;
    r->shutdown = shutdown;
    r->shutdown_ctx = shutdown_ctx;
}
