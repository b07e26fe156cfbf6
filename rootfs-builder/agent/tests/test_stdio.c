/* Host-side unit test of the stdio pumps (stdio_pump.c) through a fake stream_link: output read
 * only within the host's credit and while the data lane has room, its EOF frame and the
 * owner's notice, stdin written and its credit returned, data beyond the credit dropped, and
 * streams detached from a host that is gone (run under ASan/UBSan). */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "agent.h"
#include "event_loop.h"
#include "log.h"
#include "stdio_pump.h"
#include "ttrpc.h"

#include "check.h"

/* ---- the fake connection: what the streams sent */

struct sent {
    enum wq_lane lane;
    uint32_t id;
    uint8_t flags;
    size_t len;
    uint8_t data[64];
};

static struct sent sent[16];
static int nsent;
static size_t data_queued; /* what the data lane holds, as the streams are told */

static void link_send(void *conn, enum wq_lane lane, uint32_t id, uint8_t flags, const void *payload, size_t len)
{
    CHECK(conn == &data_queued);
    if (nsent == (int)(sizeof sent / sizeof sent[0]))
        return;
    struct sent *s = &sent[nsent++];
    s->lane = lane;
    s->id = id;
    s->flags = flags;
    s->len = len;
    if (len)
        memcpy(s->data, payload, len < sizeof s->data ? len : sizeof s->data);
}

static size_t link_queued(const void *conn)
{
    return data_queued;
}

static struct stream_set set;
static int done_calls;
static void *done_owner;

static void on_output_done(void *owner)
{
    done_calls++;
    done_owner = owner;
}

static void reset(void)
{
    nsent = 0;
    data_queued = 0;
    done_calls = 0;
    done_owner = NULL;
}

/* A pipe; the agent's end non-blocking. */
static void make_pipe(int fds[2], bool agent_reads)
{
    CHECK(pipe2(fds, O_CLOEXEC) == 0);
    fcntl(agent_reads ? fds[0] : fds[1], F_SETFL, O_NONBLOCK);
}

/* epoll reports the stream's pipe ready. */
static void ready(struct stream *s)
{
    s->watch.fn(s->watch.obj, EPOLLIN | EPOLLOUT);
}

/* A type-3 frame from the host. */
static void host_frame(uint32_t id, uint8_t flags, const void *payload, uint32_t len)
{
    struct ttrpc_frame f = { .stream_id = id, .type = TTRPC_DATA, .flags = flags, .payload = payload, .len = len };
    stream_on_host_frame(&set, &f);
}

static void grant(uint32_t id, uint32_t bytes)
{
    uint8_t be[4] = { (uint8_t)(bytes >> 24), (uint8_t)(bytes >> 16), (uint8_t)(bytes >> 8), (uint8_t)bytes };
    host_frame(id, TTRPC_FLAG_CREDIT, be, 4);
}

static bool is_eof(const struct sent *s, uint32_t id)
{
    return s->lane == WQ_DATA && s->id == id && s->flags == (TTRPC_FLAG_REMOTE_CLOSED | TTRPC_FLAG_NO_DATA) &&
           s->len == 0;
}

static void test_output(void)
{
    reset();
    int p[2];
    make_pipe(p, true);
    int owner;
    struct stream *s = stream_open(&set, STREAM_OUT, 2, p[0], &owner);
    CHECK(s && stream_id_in_use(&set, 2) && !stream_id_in_use(&set, 4));
    stream_update_all(&set);
    CHECK(s->registered_events == EPOLLIN);
    CHECK(write(p[1], "hello", 5) == 5);
    ready(s);
    CHECK(nsent == 1 && sent[0].lane == WQ_DATA && sent[0].id == 2 && sent[0].flags == 0 && sent[0].len == 5 &&
          memcmp(sent[0].data, "hello", 5) == 0);
    CHECK(s->credit == INITIAL_STREAM_CREDIT - 5 && !stream_out_done(s));
    /* EOF: its frame, then the owner learns it, once. */
    close(p[1]);
    ready(s);
    CHECK(nsent == 2 && is_eof(&sent[1], 2));
    CHECK(done_calls == 1 && done_owner == &owner && stream_out_done(s) && s->fd == -1 && s->registered_events == 0);
    ready(s);
    CHECK(nsent == 2 && done_calls == 1);
    stream_destroy(s);
    CHECK(!stream_id_in_use(&set, 2) && stream_out_done(NULL));
}

static void test_output_credit(void)
{
    reset();
    int p[2];
    make_pipe(p, true);
    struct stream *s = stream_open(&set, STREAM_OUT, 6, p[0], NULL);
    s->credit = 4; /* the host has taken most of its credit */
    CHECK(write(p[1], "0123456789", 10) == 10);
    ready(s);
    /* Only what the credit allows, then no more reading until the host grants more. */
    CHECK(nsent == 1 && sent[0].len == 4 && memcmp(sent[0].data, "0123", 4) == 0);
    CHECK(s->credit == 0 && s->registered_events == 0);
    grant(6, 3);
    CHECK(nsent == 2 && sent[1].len == 3 && memcmp(sent[1].data, "456", 3) == 0 && s->credit == 0);
    grant(6, 100);
    CHECK(nsent == 3 && sent[2].len == 3 && memcmp(sent[2].data, "789", 3) == 0 && s->credit == 97);
    CHECK(s->registered_events == EPOLLIN);
    /* A malformed grant changes nothing; a grant never overflows. */
    host_frame(6, TTRPC_FLAG_CREDIT, "\x00\x01", 2);
    CHECK(s->credit == 97);
    grant(6, 0xffffffffu);
    CHECK(s->credit == 0x7fffffff);
    /* The host may not send data on an output stream. */
    host_frame(6, 0, "no", 2);
    CHECK(nsent == 3);
    close(p[1]);
    stream_destroy(s);
}

static void test_data_lane_full(void)
{
    reset();
    int p[2];
    make_pipe(p, true);
    struct stream *s = stream_open(&set, STREAM_OUT, 8, p[0], NULL);
    CHECK(write(p[1], "abc", 3) == 3);
    data_queued = DATA_QUEUE_LIMIT;
    stream_update_all(&set);
    CHECK(s->registered_events == 0);
    ready(s);
    CHECK(nsent == 0);
    /* The lane drained (host_conn's data_room): reading resumes. */
    data_queued = DATA_QUEUE_LIMIT - 1;
    stream_update_all(&set);
    CHECK(s->registered_events == EPOLLIN);
    ready(s);
    CHECK(nsent == 1 && sent[0].len == 3);
    close(p[1]);
    stream_destroy(s);
}

static void test_stdin(void)
{
    reset();
    int p[2];
    make_pipe(p, false);
    struct stream *s = stream_open(&set, STREAM_IN, 10, p[1], NULL);
    host_frame(10, 0, "abc", 3);
    char buf[16];
    CHECK(read(p[0], buf, sizeof buf) == 3 && memcmp(buf, "abc", 3) == 0);
    /* The credit comes back on the control lane once the bytes are in the pipe. */
    CHECK(nsent == 1 && sent[0].lane == WQ_CONTROL && sent[0].id == 10 && sent[0].flags == TTRPC_FLAG_CREDIT &&
          sent[0].len == 4 && memcmp(sent[0].data, "\x00\x00\x00\x03", 4) == 0);
    CHECK(s->window == INITIAL_STREAM_CREDIT);
    /* Beyond the credit granted: dropped, no credit back. */
    s->window = 2;
    host_frame(10, 0, "toolong", 7);
    CHECK(nsent == 1 && s->len == 0);
    s->window = INITIAL_STREAM_CREDIT;
    /* EOF: the pipe closes once what is buffered is written. */
    host_frame(10, TTRPC_FLAG_REMOTE_CLOSED, "xy", 2);
    CHECK(read(p[0], buf, sizeof buf) == 2 && s->fd == -1);
    CHECK(read(p[0], buf, sizeof buf) == 0);
    CHECK(nsent == 2 && memcmp(sent[1].data, "\x00\x00\x00\x02", 4) == 0);
    /* Data for a closed stdin: its credit comes back at once. */
    host_frame(10, 0, "late", 4);
    CHECK(nsent == 3 && memcmp(sent[2].data, "\x00\x00\x00\x04", 4) == 0);
    close(p[0]);
    stream_destroy(s);
    /* Unknown streams: dropped. */
    host_frame(12, 0, "x", 1);
    CHECK(nsent == 3);
}

static void test_detach(void)
{
    reset();
    int out[2], in[2];
    make_pipe(out, true);
    make_pipe(in, false);
    int owner;
    struct stream *o = stream_open(&set, STREAM_OUT, 14, out[0], &owner);
    struct stream *i = stream_open(&set, STREAM_IN, 16, in[1], &owner);
    /* The host is gone: stdin closes, output is drained and dropped, its end still noticed. */
    stream_detach_all(&set);
    CHECK(o->id == 0 && i->id == 0 && i->fd == -1);
    char c;
    CHECK(read(in[0], &c, 1) == 0);
    CHECK(write(out[1], "lost", 4) == 4);
    close(out[1]);
    ready(o);
    CHECK(nsent == 0 && done_calls == 1 && stream_out_done(o));
    CHECK(!stream_id_in_use(&set, 14));
    close(in[0]);
    stream_destroy(o);
    stream_destroy(i);
}

static void test_force_eof(void)
{
    reset();
    int p[2];
    make_pipe(p, true);
    int owner;
    struct stream *s = stream_open(&set, STREAM_OUT, 18, p[0], &owner);
    CHECK(write(p[1], "unread", 6) == 6);
    /* The process is gone and its output is stuck behind missing credit: it ends now. */
    stream_force_eof(s);
    CHECK(nsent == 1 && is_eof(&sent[0], 18) && stream_out_done(s) && s->fd == -1 && done_calls == 0);
    stream_force_eof(s);
    CHECK(nsent == 1);
    close(p[1]);
    stream_destroy(s);
}

int main(void)
{
    log_set_fd(-1); /* the agent's log lines are expected here, not wanted */
    CHECK(event_loop_init() == 0);
    struct stream_link link = { link_send, link_queued, &data_queued };
    stream_set_init(&set, &link);
    set.output_done = on_output_done;
    test_output();
    test_output_credit();
    test_data_lane_full();
    test_stdin();
    test_detach();
    test_force_eof();
    printf("stdio: %d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
