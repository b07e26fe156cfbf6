/* Host-side unit test of the RPC layer (rpc.c) over a real host connection (host_conn.c on one
 * end of a socketpair; the test is the host on the other), with the container layer, the
 * reseed work and the stdio streams faked. Checks what goes on the wire: the handshake rule,
 * dispatch errors, the answers that wait for the container layer's events (set-up, start,
 * wait on the data lane, release, removal, OOM), and that answers for a host that is gone are
 * dropped (run under ASan/UBSan). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"
#include "agent_pb.h"
#include "container.h"
#include "host_conn.h"
#include "log.h"
#include "pb.h"
#include "process.h"
#include "reseed.h"
#include "rpc.h"
#include "ttrpc.h"

#include "check.h"

/* ================================================================ the faked container layer */

struct container {
    const char *id;
    bool has_cgroup;
    uint64_t oom_kill;
    struct container *next;
};

static struct container c_db = { "db", false, 0, NULL };
static struct container c_web = { "web", true, 0, &c_db };
static struct process p_web, p_e1; /* web's init and its exec "e1" */

static struct fake {
    int create_code, exec_code, start_code, signal_code;
    bool start_reports_at_once; /* process_start reports start_done from within */
    bool finished;              /* process_finished */
    uint32_t last_signal;
    bool last_all;
    int removes, process_removes, stdin_closes, host_frames, handshakes;
    uint64_t handshake_time;
    int shutdowns;
} fake;

static struct container_events events; /* the RPC layer's, as containers_init would get them */

static void fake_reset(void)
{
    memset(&fake, 0, sizeof fake);
    c_web.oom_kill = 0;
    c_web.has_cgroup = true;
}

int container_find(const char *id, struct container **out, char *err, size_t errcap)
{
    for (struct container *c = &c_web; c; c = c->next) {
        if (id && strcmp(c->id, id) == 0) {
            *out = c;
            return RPC_OK;
        }
    }
    snprintf(err, errcap, "container \"%.200s\" not found", id ? id : "");
    return RPC_NOT_FOUND;
}

/* The processes the fake knows: web's init and exec "e1"; db's init is unknown (not needed). */
int container_find_process(const char *container_id, const char *exec_id, struct container **out_c,
                           struct process **out_p, char *err, size_t errcap)
{
    static const struct {
        struct container *c;
        const char *exec_id;
        struct process *p;
    } known[] = { { &c_web, "", &p_web }, { &c_web, "e1", &p_e1 } };
    const char *eid = exec_id ? exec_id : "";
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (container_id && strcmp(known[i].c->id, container_id) == 0 && strcmp(known[i].exec_id, eid) == 0) {
            if (out_c)
                *out_c = known[i].c;
            *out_p = known[i].p;
            return RPC_OK;
        }
    }
    struct container *c;
    int code = container_find(container_id, &c, err, errcap);
    if (code == RPC_OK)
        snprintf(err, errcap, "container \"%s\": exec \"%.200s\" not found", c->id, eid);
    return RPC_NOT_FOUND;
}

int container_find_with_cgroup(const char *id, const char *what, struct container **out, char *err, size_t errcap)
{
    int code = container_find(id, out, err, errcap);
    if (code == RPC_OK && !(*out)->has_cgroup) {
        snprintf(err, errcap, "container \"%s\": %s: the guest has no cgroup v2", (*out)->id, what);
        return RPC_FAILED_PRECONDITION;
    }
    return code;
}

const char *container_id(const struct container *c)
{
    return c->id;
}

struct container *container_first(void)
{
    return &c_web;
}

struct container *container_next(const struct container *c)
{
    return c->next;
}

int container_create(const struct create_container_request *req, struct process **init, char *err, size_t errcap)
{
    if (fake.create_code != RPC_OK) {
        snprintf(err, errcap, "container \"%s\": no disk with serial \"img\" (image slot) appeared within 5000 ms",
                 req->container_id ? req->container_id : "");
        return fake.create_code;
    }
    *init = &p_web;
    return RPC_OK;
}

int container_exec(const struct exec_process_request *req, struct process **out, char *err, size_t errcap)
{
    if (fake.exec_code != RPC_OK) {
        snprintf(err, errcap, "container \"web\" exec \"e1\" already exists");
        return fake.exec_code;
    }
    *out = &p_e1;
    return RPC_OK;
}

int container_signal(struct container *c, struct process *p, uint32_t sig, bool all, char *err, size_t errcap)
{
    fake.last_signal = sig;
    fake.last_all = all;
    if (fake.signal_code != RPC_OK)
        snprintf(err, errcap, "%s: process already finished", process_name(p));
    return fake.signal_code;
}

size_t container_list(struct container *c, uint32_t *pids, const char **exec_ids, size_t cap)
{
    pids[0] = 1;
    exec_ids[0] = "";
    pids[1] = 7;
    exec_ids[1] = "e1";
    return 2;
}

void container_remove(struct container *c)
{
    fake.removes++;
}

void container_remove_process(struct process *p)
{
    fake.process_removes++;
}

int container_update(struct container *c, const struct agent_resources *resources, char *err, size_t errcap)
{
    return RPC_OK;
}

int container_stats(struct container *c, struct container_stats *st, char *err, size_t errcap)
{
    memset(st, 0, sizeof *st);
    st->pids_current = 3;
    return RPC_OK;
}

uint64_t container_oom_kill(const struct container *c)
{
    return c->oom_kill;
}

bool container_has_cgroup(const struct container *c)
{
    return c->has_cgroup;
}

const char *process_name(const struct process *p)
{
    return p == &p_e1 ? "container \"web\" exec \"e1\"" : "container \"web\"";
}

int process_start(struct process *p, char *err, size_t errcap)
{
    if (fake.start_code != RPC_OK) {
        snprintf(err, errcap, "%s cannot be started: it is running", process_name(p));
        return fake.start_code;
    }
    if (fake.start_reports_at_once)
        events.start_done(events.ctx, p, RPC_OK, NULL);
    return RPC_OK;
}

bool process_finished(const struct process *p)
{
    return fake.finished;
}

int process_resize_pty(struct process *p, uint32_t width, uint32_t height, char *err, size_t errcap)
{
    return RPC_OK;
}

void process_close_stdin(struct process *p)
{
    fake.stdin_closes++;
}

void reseed_on_handshake(uint64_t host_time_unix_nano, const uint8_t *entropy, size_t len)
{
    fake.handshakes++;
    fake.handshake_time = host_time_unix_nano;
}

int reseed_apply(const struct reseed_request *req, bool *crng_reseeded, uint32_t *hwrng_bytes, char *err,
                 size_t errcap)
{
    if (req->entropy_len < RESEED_MIN_ENTROPY) {
        snprintf(err, errcap, "Reseed: %zu bytes of entropy (needs %d..%d)", req->entropy_len, RESEED_MIN_ENTROPY,
                 RESEED_MAX_ENTROPY);
        return RPC_INVALID_ARGUMENT;
    }
    *crng_reseeded = true;
    *hwrng_bytes = 64;
    return RPC_OK;
}

void stream_on_host_frame(struct stream_set *set, const struct ttrpc_frame *f)
{
    fake.host_frames++;
}

/* ================================================================ the host's end */

static struct host_conn conn;
static struct rpc rpc;
static struct stream_set streams;
static int host_fd = -1; /* the test's end of the socketpair */

static void conn_frame(void *ctx, const struct ttrpc_frame *f)
{
    rpc_on_frame(&rpc, f);
}

static void conn_oversized(void *ctx, uint32_t sid, uint8_t type, uint32_t len)
{
    rpc_on_oversized(&rpc, sid, type, len);
}

static void conn_nothing(void *ctx)
{
}

static const struct host_conn_ops conn_ops = { conn_frame, conn_oversized, conn_nothing, conn_nothing };

static void on_shutdown(void *ctx)
{
    fake.shutdowns++;
}

/* A new connection (the host reconnected): the old one ends. */
static void connect_host(void)
{
    int agent_fd = conn.fd;
    host_conn_end(&conn, "test reconnects");
    if (agent_fd >= 0)
        close(agent_fd);
    if (host_fd >= 0)
        close(host_fd);
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
    host_fd = sv[1];
    host_conn_begin(&conn, sv[0], "test");
}

/* Sends a frame to the agent and lets it read. */
static void send_frame(uint32_t sid, uint8_t type, uint8_t flags, const void *payload, size_t len)
{
    uint8_t hdr[TTRPC_HEADER_LEN];
    ttrpc_put_header(hdr, (uint32_t)len, sid, type, flags);
    CHECK(write(host_fd, hdr, sizeof hdr) == (ssize_t)sizeof hdr);
    if (len)
        CHECK(write(host_fd, payload, len) == (ssize_t)len);
    host_conn_read(&conn);
}

static void call_service(uint32_t sid, const char *service, const char *method, const pb_writer *payload)
{
    pb_writer w;
    pb_writer_init(&w);
    pb_put_string_field(&w, 1, service);
    pb_put_string_field(&w, 2, method);
    pb_put_bytes_field(&w, 3, payload ? payload->buf : NULL, payload ? payload->len : 0);
    send_frame(sid, TTRPC_REQUEST, 0, w.buf, w.len);
    pb_writer_free(&w);
}

static void call(uint32_t sid, const char *method, const pb_writer *payload)
{
    call_service(sid, "smolvm.agent.v1.Agent", method, payload);
}

/* A ProcessTarget request. */
static void call_target(uint32_t sid, const char *method, const char *cid, const char *eid, uint32_t sig)
{
    pb_writer t;
    pb_writer_init(&t);
    pb_put_string_field(&t, 1, cid);
    pb_put_string_field(&t, 2, eid);
    pb_put_uint_field(&t, 3, sig);
    call(sid, method, &t);
    pb_writer_free(&t);
}

static void handshake(uint32_t sid)
{
    pb_writer h;
    pb_writer_init(&h);
    pb_put_uint_field(&h, 1, AGENT_PROTOCOL_VERSION);
    call(sid, "Handshake", &h);
    pb_writer_free(&h);
}

/* What the agent sent, frame by frame. */
struct sent {
    uint32_t sid;
    uint8_t type, flags;
    int32_t code; /* responses */
    char message[1100];
    uint8_t payload[600];
    size_t len;
};

static struct sent out[32];
static int nout;

static void parse_response(struct sent *s, const uint8_t *data, size_t len)
{
    pb_reader r = pb_reader_make(data, len);
    uint32_t field, wire;
    while (pb_read_tag(&r, &field, &wire) == 1) {
        const uint8_t *d;
        size_t n;
        CHECK(wire == PB_WIRE_LEN && pb_read_len(&r, &d, &n) == 0);
        if (field == 2) {
            CHECK(n <= sizeof s->payload);
            memcpy(s->payload, d, n < sizeof s->payload ? n : sizeof s->payload);
            s->len = n;
            continue;
        }
        pb_reader st = pb_reader_make(d, n);
        uint32_t f2, w2;
        while (pb_read_tag(&st, &f2, &w2) == 1) {
            if (f2 == 1) {
                uint64_t code;
                CHECK(pb_read_varint(&st, &code) == 0);
                s->code = (int32_t)code;
            } else {
                const uint8_t *m;
                size_t mn;
                CHECK(pb_read_len(&st, &m, &mn) == 0 && mn < sizeof s->message);
                memcpy(s->message, m, mn);
                s->message[mn] = 0;
            }
        }
    }
}

static void on_sent(void *ctx, const struct ttrpc_frame *f)
{
    if (nout == (int)(sizeof out / sizeof out[0]))
        return;
    struct sent *s = &out[nout++];
    memset(s, 0, sizeof *s);
    s->sid = f->stream_id;
    s->type = f->type;
    s->flags = f->flags;
    if (f->type == TTRPC_RESPONSE)
        parse_response(s, f->payload, f->len);
    else
        memcpy(s->payload, f->payload, f->len < sizeof s->payload ? f->len : sizeof s->payload);
}

static void on_sent_oversized(void *ctx, uint32_t sid, uint8_t type, uint32_t len)
{
    CHECK(0);
}

/* Flushes the agent's queue and collects what the host received (out[0..nout)). */
static int received(void)
{
    static const struct ttrpc_reader_ops ops = { on_sent, on_sent_oversized };
    host_conn_flush(&conn);
    nout = 0;
    struct ttrpc_reader reader;
    ttrpc_reader_init(&reader, TTRPC_MAX_PAYLOAD);
    uint8_t buf[65536];
    ssize_t n;
    while ((n = read(host_fd, buf, sizeof buf)) > 0)
        CHECK(ttrpc_reader_push(&reader, buf, (size_t)n, &ops, NULL) == 0);
    ttrpc_reader_reset(&reader);
    return nout;
}

static bool payload_is(const struct sent *s, const pb_writer *want)
{
    return s->len == want->len && memcmp(s->payload, want->buf, want->len) == 0;
}

/* ================================================================ the tests */

static void test_handshake_first(void)
{
    connect_host();
    call_target(1, "StartProcess", "web", "", 0);
    send_frame(2, TTRPC_DATA, 0, "x", 1);
    CHECK(received() == 1 && out[0].sid == 1 && out[0].type == TTRPC_RESPONSE &&
          out[0].code == RPC_FAILED_PRECONDITION &&
          strcmp(out[0].message, "StartProcess: Handshake is required first") == 0);
    CHECK(fake.host_frames == 0); /* the data frame before the handshake was dropped */

    pb_writer h;
    pb_writer_init(&h);
    pb_put_uint_field(&h, 1, 2);
    call(3, "Handshake", &h);
    pb_writer_free(&h);
    CHECK(received() == 1 && out[0].code == RPC_FAILED_PRECONDITION &&
          strcmp(out[0].message, "Handshake: protocol version 2 not supported (agent speaks 1)") == 0);

    pb_writer_init(&h);
    pb_put_uint_field(&h, 1, AGENT_PROTOCOL_VERSION);
    pb_put_uint_field(&h, 2, 1700000000000000000ull);
    call(5, "Handshake", &h);
    pb_writer_free(&h);
    CHECK(received() == 1 && out[0].sid == 5 && out[0].code == RPC_OK && fake.handshakes == 1 &&
          fake.handshake_time == 1700000000000000000ull);
    /* HandshakeResponse: version 1, then the agent's version string. */
    CHECK(out[0].len > 4 && out[0].payload[0] == 0x08 && out[0].payload[1] == AGENT_PROTOCOL_VERSION);
    send_frame(2, TTRPC_DATA, 0, "x", 1);
    CHECK(fake.host_frames == 1);

    /* A new connection needs its own handshake. */
    connect_host();
    call_target(1, "WaitProcess", "web", "", 0);
    CHECK(received() == 1 && out[0].code == RPC_FAILED_PRECONDITION);
    handshake(3);
    CHECK(received() == 1 && out[0].code == RPC_OK);
}

static void test_dispatch_errors(void)
{
    call(2, "ListProcesses", NULL);
    CHECK(received() == 1 && out[0].sid == 2 && out[0].code == RPC_INVALID_ARGUMENT &&
          strcmp(out[0].message, "request on even stream id 2 (client streams are odd)") == 0);
    call_service(7, "other.Service", "X", NULL);
    CHECK(received() == 1 && out[0].code == RPC_UNIMPLEMENTED && strcmp(out[0].message, "unknown service other.Service") == 0);
    call(9, "Teleport", NULL);
    CHECK(received() == 1 && out[0].code == RPC_UNIMPLEMENTED &&
          strcmp(out[0].message, "unknown method smolvm.agent.v1.Agent/Teleport") == 0);
    send_frame(11, TTRPC_REQUEST, 0, "\x0a\x05" "ab", 4);
    CHECK(received() == 1 && out[0].code == RPC_INVALID_ARGUMENT &&
          strcmp(out[0].message, "malformed ttrpc request on stream 11") == 0);
    pb_writer bad;
    pb_writer_init(&bad);
    pb_put_uint_field(&bad, 1, 5); /* container_id as a varint */
    call(13, "CreateContainer", &bad);
    CHECK(received() == 1 && out[0].code == RPC_INVALID_ARGUMENT &&
          strcmp(out[0].message, "CreateContainer: malformed CreateContainerRequest") == 0);
    call(15, "SignalProcess", &bad);
    CHECK(received() == 1 && out[0].code == RPC_INVALID_ARGUMENT &&
          strcmp(out[0].message, "SignalProcess: malformed request") == 0);
    pb_writer_free(&bad);
    rpc_on_oversized(&rpc, 17, TTRPC_REQUEST, 5u << 20);
    CHECK(received() == 1 && out[0].sid == 17 && out[0].code == RPC_RESOURCE_EXHAUSTED &&
          strcmp(out[0].message, "message length 5242880 exceeds maximum message size of 4194304") == 0);
    rpc_on_oversized(&rpc, 4, TTRPC_DATA, 5u << 20);
    CHECK(received() == 0); /* an oversized data frame has nobody to answer */
    /* The container layer's errors reach the host as they are. */
    call_target(19, "StartProcess", "nosuch", "", 0);
    CHECK(received() == 1 && out[0].code == RPC_NOT_FOUND && strcmp(out[0].message, "container \"nosuch\" not found") == 0);
    call_target(21, "StatsContainer", "db", "", 0);
    CHECK(received() == 1 && out[0].code == RPC_FAILED_PRECONDITION &&
          strcmp(out[0].message, "container \"db\": stats: the guest has no cgroup v2") == 0);
    call_target(23, "RemoveProcess", "web", "", 0);
    CHECK(received() == 1 && out[0].code == RPC_INVALID_ARGUMENT && fake.process_removes == 0);
}

static void test_setup_answered_later(void)
{
    fake_reset();
    p_web.pid = 1234;
    call(31, "CreateContainer", NULL);
    CHECK(received() == 0); /* waits for the child */
    events.setup_done(events.ctx, &p_web, RPC_OK, NULL);
    pb_writer want;
    pb_writer_init(&want);
    agent_encode_pid_response(&want, 1234);
    CHECK(received() == 1 && out[0].sid == 31 && out[0].code == RPC_OK && payload_is(&out[0], &want));
    pb_writer_free(&want);
    /* Answered once. */
    events.setup_done(events.ctx, &p_web, RPC_OK, NULL);
    CHECK(received() == 0);

    /* A set-up that fails. */
    call(33, "ExecProcess", NULL);
    events.setup_done(events.ctx, &p_e1, RPC_NOT_FOUND, "container \"web\" exec \"e1\": exec: \"x\": not found");
    CHECK(received() == 1 && out[0].sid == 33 && out[0].code == RPC_NOT_FOUND &&
          strcmp(out[0].message, "container \"web\" exec \"e1\": exec: \"x\": not found") == 0);

    /* Refused at once by the container layer. */
    fake.create_code = RPC_NOT_FOUND;
    pb_writer req;
    pb_writer_init(&req);
    pb_put_string_field(&req, 1, "web2");
    call(35, "CreateContainer", &req);
    pb_writer_free(&req);
    CHECK(received() == 1 && out[0].code == RPC_NOT_FOUND &&
          strcmp(out[0].message, "container \"web2\": no disk with serial \"img\" (image slot) appeared within 5000 ms") == 0);
    fake.create_code = RPC_OK;
}

static void test_start(void)
{
    fake_reset();
    p_web.pid = 1234;
    /* Answered when the process exec'd. */
    call_target(41, "StartProcess", "web", "", 0);
    CHECK(received() == 0);
    events.start_done(events.ctx, &p_web, RPC_OK, NULL);
    CHECK(received() == 1 && out[0].sid == 41 && out[0].code == RPC_OK && out[0].len == 3);
    /* Reported from within process_start. */
    fake.start_reports_at_once = true;
    call_target(43, "StartProcess", "web", "", 0);
    CHECK(received() == 1 && out[0].sid == 43 && out[0].code == RPC_OK);
    /* Refused: answered with the error, and nothing waits any more. */
    fake.start_reports_at_once = false;
    fake.start_code = RPC_FAILED_PRECONDITION;
    call_target(45, "StartProcess", "web", "", 0);
    CHECK(received() == 1 && out[0].code == RPC_FAILED_PRECONDITION &&
          strcmp(out[0].message, "container \"web\" cannot be started: it is running") == 0);
    events.start_done(events.ctx, &p_web, RPC_OK, NULL);
    CHECK(received() == 0);
    /* The exec failed. */
    fake.start_code = RPC_OK;
    call_target(47, "StartProcess", "web", "e1", 0);
    events.start_done(events.ctx, &p_e1, RPC_FAILED_PRECONDITION, "container \"web\" exec \"e1\": exec: denied");
    CHECK(received() == 1 && out[0].sid == 47 && out[0].code == RPC_FAILED_PRECONDITION);
}

static void test_wait_behind_output(void)
{
    fake_reset();
    p_e1.exit_status = 3;
    p_e1.exited_at = 1700000000123456789ull;
    p_e1.oom_kill = 1;
    pb_writer want;
    pb_writer_init(&want);
    agent_encode_wait_response(&want, 3, 1700000000123456789ull, 1);

    call_target(51, "WaitProcess", "web", "e1", 0);
    CHECK(received() == 0);
    /* Output and its EOF already queued, then the process finishes, then another answer. */
    host_conn_send(&conn, WQ_DATA, 4, TTRPC_DATA, 0, "out", 3);
    host_conn_send(&conn, WQ_DATA, 4, TTRPC_DATA, TTRPC_FLAG_REMOTE_CLOSED | TTRPC_FLAG_NO_DATA, NULL, 0);
    fake.finished = true;
    events.finished(events.ctx, &p_e1);
    call_target(53, "SignalProcess", "web", "e1", 15);
    CHECK(received() == 4);
    /* The control lane first (the Signal answer), then the data lane in order: output, EOF, Wait. */
    CHECK(out[0].sid == 53 && out[0].type == TTRPC_RESPONSE && fake.last_signal == 15 && !fake.last_all);
    CHECK(out[1].sid == 4 && out[1].type == TTRPC_DATA && out[1].flags == 0);
    CHECK(out[2].sid == 4 && out[2].flags == (TTRPC_FLAG_REMOTE_CLOSED | TTRPC_FLAG_NO_DATA));
    CHECK(out[3].sid == 51 && out[3].type == TTRPC_RESPONSE && out[3].code == RPC_OK && payload_is(&out[3], &want));
    /* A Wait on a finished process is answered at once. */
    call_target(55, "WaitProcess", "web", "e1", 0);
    CHECK(received() == 1 && out[0].sid == 55 && payload_is(&out[0], &want));
    pb_writer_free(&want);
}

static void test_released(void)
{
    fake_reset();
    call(61, "ExecProcess", NULL);
    call_target(63, "WaitProcess", "web", "e1", 0);
    call_target(65, "WaitProcess", "web", "e1", 0);
    call_target(67, "RemoveProcess", "web", "e1", 0);
    CHECK(received() == 0 && fake.process_removes == 1);
    const char *why = "container \"web\" exec \"e1\" was removed";
    events.released(events.ctx, &p_e1, why);
    CHECK(received() == 4);
    /* The set-up, the waits (newest first), then the removal. */
    CHECK(out[0].sid == 61 && out[0].code == RPC_NOT_FOUND && strcmp(out[0].message, why) == 0);
    CHECK(out[1].sid == 65 && out[1].code == RPC_NOT_FOUND && strcmp(out[1].message, why) == 0);
    CHECK(out[2].sid == 63 && out[2].code == RPC_NOT_FOUND);
    CHECK(out[3].sid == 67 && out[3].code == RPC_OK && out[3].len == 0);
    events.released(events.ctx, &p_e1, why);
    CHECK(received() == 0);
}

static void test_oom_and_removal(void)
{
    fake_reset();
    pb_writer w;
    pb_writer_init(&w);
    pb_put_string_field(&w, 1, "web");
    pb_put_uint_field(&w, 2, 0);
    call(71, "WatchOom", &w);
    CHECK(received() == 0);
    events.oom_events(events.ctx); /* nothing new */
    CHECK(received() == 0);
    c_web.oom_kill = 1;
    events.oom_events(events.ctx);
    pb_writer want;
    pb_writer_init(&want);
    agent_encode_watch_oom_response(&want, 1, false);
    CHECK(received() == 1 && out[0].sid == 71 && payload_is(&out[0], &want));
    pb_writer_free(&want);
    /* Seen 1: waits; RemoveContainer: waits; both answered when the container goes. */
    pb_writer_free(&w);
    pb_writer_init(&w);
    pb_put_string_field(&w, 1, "web");
    pb_put_uint_field(&w, 2, 1);
    call(73, "WatchOom", &w);
    call_target(75, "RemoveContainer", "web", "", 0);
    CHECK(received() == 0 && fake.removes == 1);
    events.gone(events.ctx, &c_web, 2);
    pb_writer_init(&want);
    agent_encode_watch_oom_response(&want, 2, true);
    CHECK(received() == 2 && out[0].sid == 73 && payload_is(&out[0], &want) && out[1].sid == 75 && out[1].code == RPC_OK);
    pb_writer_free(&want);

    /* A waiter of a connection that is gone is forgotten, never answered on the next one. */
    call(77, "WatchOom", &w);
    pb_writer_free(&w);
    connect_host();
    handshake(1);
    CHECK(received() == 1);
    c_web.oom_kill = 5;
    events.oom_events(events.ctx);
    events.gone(events.ctx, &c_web, 5);
    CHECK(received() == 0);
}

static void test_gone_host_drops_answers(void)
{
    fake_reset();
    call(81, "CreateContainer", NULL);
    call_target(83, "WaitProcess", "web", "", 0);
    connect_host();
    handshake(1);
    CHECK(received() == 1);
    events.setup_done(events.ctx, &p_web, RPC_OK, NULL);
    fake.finished = true;
    events.finished(events.ctx, &p_web);
    CHECK(received() == 0);
}

static void test_small_methods(void)
{
    fake_reset();
    call_target(91, "CloseStdin", "web", "e1", 0);
    CHECK(received() == 1 && out[0].code == RPC_OK && fake.stdin_closes == 1);
    call_target(93, "ListProcesses", "web", "", 0);
    pb_writer want;
    pb_writer_init(&want);
    const uint32_t pids[2] = { 1, 7 };
    const char *const ids[2] = { "", "e1" };
    agent_encode_list_response(&want, pids, ids, 2);
    CHECK(received() == 1 && payload_is(&out[0], &want));
    pb_writer_free(&want);
    fake.signal_code = RPC_NOT_FOUND;
    call_target(95, "SignalProcess", "web", "e1", 9);
    CHECK(received() == 1 && out[0].code == RPC_NOT_FOUND &&
          strcmp(out[0].message, "container \"web\" exec \"e1\": process already finished") == 0);
    pb_writer r;
    pb_writer_init(&r);
    pb_put_bytes_field(&r, 1, "short", 5);
    call(97, "Reseed", &r);
    CHECK(received() == 1 && out[0].code == RPC_INVALID_ARGUMENT &&
          strcmp(out[0].message, "Reseed: 5 bytes of entropy (needs 32..65536)") == 0);
    pb_writer_free(&r);
    call(99, "Shutdown", NULL);
    CHECK(received() == 1 && out[0].code == RPC_OK && fake.shutdowns == 1);
}

int main(void)
{
    log_set_fd(-1); /* the agent's log lines are expected here, not wanted */
    host_conn_init(&conn, &conn_ops, NULL);
    rpc_init(&rpc, &conn, &streams, on_shutdown, NULL);
    events = rpc_container_events(&rpc);
    test_handshake_first();
    test_dispatch_errors();
    test_setup_answered_later();
    test_start();
    test_wait_behind_output();
    test_released();
    test_oom_and_removal();
    test_gone_host_drops_answers();
    test_small_methods();
    int agent_fd = conn.fd;
    host_conn_end(&conn, "test done");
    close(agent_fd);
    close(host_fd);
    printf("rpc: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
