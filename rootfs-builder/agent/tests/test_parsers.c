/* Host-side unit tests of the agent's parsers (pb.c, ttrpc.c, agent_pb.c): malformed,
 * truncated and oversized input must be rejected cleanly (run under ASan/UBSan). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent_pb.h"
#include "pb.h"
#include "ttrpc.h"

static int failures;
static int checks;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        checks++;                                                                      \
        if (!(cond)) {                                                                 \
            failures++;                                                                \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);   \
        }                                                                              \
    } while (0)

static void test_varint(void)
{
    uint64_t v;
    const uint8_t one[] = { 0x01 };
    pb_reader r = pb_reader_make(one, sizeof one);
    CHECK(pb_read_varint(&r, &v) == 0 && v == 1 && r.p == r.end);

    const uint8_t max[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };
    r = pb_reader_make(max, sizeof max);
    CHECK(pb_read_varint(&r, &v) == 0 && v == UINT64_MAX);

    const uint8_t too_big[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02 };
    r = pb_reader_make(too_big, sizeof too_big);
    CHECK(pb_read_varint(&r, &v) < 0);

    const uint8_t overlong[] = { 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00 };
    r = pb_reader_make(overlong, sizeof overlong);
    CHECK(pb_read_varint(&r, &v) < 0);

    const uint8_t truncated[] = { 0x80, 0x80 };
    r = pb_reader_make(truncated, sizeof truncated);
    CHECK(pb_read_varint(&r, &v) < 0);

    r = pb_reader_make(NULL, 0);
    CHECK(pb_read_varint(&r, &v) < 0);
}

static void test_tags_and_skip(void)
{
    uint32_t f, w;
    const uint8_t field0[] = { 0x00, 0x01 };
    pb_reader r = pb_reader_make(field0, sizeof field0);
    CHECK(pb_read_tag(&r, &f, &w) < 0);

    r = pb_reader_make(NULL, 0);
    CHECK(pb_read_tag(&r, &f, &w) == 0);

    for (uint32_t wire = 0; wire < 8; wire++) {
        uint8_t msg[16] = { (uint8_t)(1 << 3 | wire), 0x01, 0, 0, 0, 0, 0, 0, 0, 0 };
        r = pb_reader_make(msg, 10);
        CHECK(pb_read_tag(&r, &f, &w) == 1 && f == 1 && w == wire);
        int rc = pb_skip(&r, w);
        if (wire == 3 || wire == 4 || wire == 6 || wire == 7)
            CHECK(rc < 0);
        else
            CHECK(rc == 0);
    }
    /* Fixed-width fields cut short. */
    const uint8_t i64_short[] = { 1 << 3 | 1, 1, 2, 3 };
    r = pb_reader_make(i64_short, sizeof i64_short);
    CHECK(pb_read_tag(&r, &f, &w) == 1 && pb_skip(&r, w) < 0);
    const uint8_t i32_short[] = { 1 << 3 | 5, 1, 2 };
    r = pb_reader_make(i32_short, sizeof i32_short);
    CHECK(pb_read_tag(&r, &f, &w) == 1 && pb_skip(&r, w) < 0);
}

static void test_len_and_string(void)
{
    const uint8_t *d;
    size_t n;
    const uint8_t past_end[] = { 0x05, 'a', 'b' };
    pb_reader r = pb_reader_make(past_end, sizeof past_end);
    CHECK(pb_read_len(&r, &d, &n) < 0);

    /* A length near 2^64 must not wrap the pointer arithmetic. */
    const uint8_t huge[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 'x' };
    r = pb_reader_make(huge, sizeof huge);
    CHECK(pb_read_len(&r, &d, &n) < 0);

    char *s = NULL;
    const uint8_t ok[] = { 0x03, 'a', 'b', 'c' };
    r = pb_reader_make(ok, sizeof ok);
    CHECK(pb_read_string(&r, &s, 16) == 0 && s && strcmp(s, "abc") == 0);
    free(s);
    s = NULL;

    const uint8_t nul[] = { 0x03, 'a', 0, 'c' };
    r = pb_reader_make(nul, sizeof nul);
    CHECK(pb_read_string(&r, &s, 16) < 0 && s == NULL);

    r = pb_reader_make(ok, sizeof ok);
    CHECK(pb_read_string(&r, &s, 2) < 0 && s == NULL); /* too long */
}

static void test_writer(void)
{
    pb_writer w;
    pb_writer_init(&w);
    pb_put_uint_field(&w, 1, 0); /* omitted */
    pb_put_uint_field(&w, 2, 300);
    pb_put_string_field(&w, 3, "hi");
    pb_put_string_field(&w, 4, "");
    pb_put_uint_field(&w, 5, UINT64_MAX);
    CHECK(!w.failed);
    const uint8_t want[] = { 0x10, 0xac, 0x02, 0x1a, 0x02, 'h', 'i', 0x28, 0xff, 0xff, 0xff, 0xff, 0xff,
                             0xff, 0xff, 0xff, 0xff, 0x01 };
    CHECK(w.len == sizeof want && memcmp(w.buf, want, sizeof want) == 0);
    pb_writer_free(&w);
}

/* ---- frame reader ---- */

struct collected {
    int frames;
    int oversized;
    uint32_t last_sid;
    uint8_t last_type, last_flags;
    uint32_t last_len;
    uint8_t last_payload[64];
    uint32_t oversized_len;
};

static void on_frame(void *ctx, const struct ttrpc_frame *f)
{
    struct collected *c = ctx;
    c->frames++;
    c->last_sid = f->stream_id;
    c->last_type = f->type;
    c->last_flags = f->flags;
    c->last_len = f->len;
    memcpy(c->last_payload, f->payload, f->len < sizeof c->last_payload ? f->len : sizeof c->last_payload);
}

static void on_oversized(void *ctx, uint32_t sid, uint8_t type, uint32_t len)
{
    struct collected *c = ctx;
    c->oversized++;
    c->last_sid = sid;
    c->oversized_len = len;
}

static const struct ttrpc_reader_ops ops = { on_frame, on_oversized };

static size_t frame(uint8_t *out, uint32_t sid, uint8_t type, uint8_t flags, const char *payload, uint32_t len)
{
    ttrpc_put_header(out, len, sid, type, flags);
    memcpy(out + TTRPC_HEADER_LEN, payload, len);
    return TTRPC_HEADER_LEN + len;
}

static void test_reader(void)
{
    struct ttrpc_reader r;
    struct collected c;
    uint8_t buf[256];

    /* Byte by byte. */
    ttrpc_reader_init(&r, 64);
    memset(&c, 0, sizeof c);
    size_t n = frame(buf, 7, TTRPC_REQUEST, 0, "hello", 5);
    for (size_t i = 0; i < n; i++)
        CHECK(ttrpc_reader_push(&r, buf + i, 1, &ops, &c) == 0);
    CHECK(c.frames == 1 && c.last_sid == 7 && c.last_type == 1 && c.last_len == 5 &&
          memcmp(c.last_payload, "hello", 5) == 0);

    /* Several frames in one push, including an empty one. */
    memset(&c, 0, sizeof c);
    n = frame(buf, 1, TTRPC_REQUEST, 0, "a", 1);
    n += frame(buf + n, 2, TTRPC_DATA, TTRPC_FLAG_REMOTE_CLOSED | TTRPC_FLAG_NO_DATA, "", 0);
    n += frame(buf + n, 3, TTRPC_REQUEST, 0, "xyz", 3);
    CHECK(ttrpc_reader_push(&r, buf, n, &ops, &c) == 0);
    CHECK(c.frames == 3 && c.last_sid == 3 && c.last_len == 3);

    /* Truncated: a header without its payload yields nothing. */
    memset(&c, 0, sizeof c);
    n = frame(buf, 5, TTRPC_REQUEST, 0, "abcdef", 6);
    CHECK(ttrpc_reader_push(&r, buf, n - 2, &ops, &c) == 0 && c.frames == 0);
    ttrpc_reader_reset(&r); /* a new connection drops the partial frame */
    n = frame(buf, 9, TTRPC_REQUEST, 0, "ok", 2);
    CHECK(ttrpc_reader_push(&r, buf, n, &ops, &c) == 0 && c.frames == 1 && c.last_sid == 9);

    /* Oversized: skipped without allocation, stream stays in sync. */
    memset(&c, 0, sizeof c);
    uint8_t hdr[TTRPC_HEADER_LEN];
    ttrpc_put_header(hdr, 100, 11, TTRPC_REQUEST, 0);
    CHECK(ttrpc_reader_push(&r, hdr, sizeof hdr, &ops, &c) == 0);
    uint8_t junk[100];
    memset(junk, 0xee, sizeof junk);
    CHECK(ttrpc_reader_push(&r, junk, 60, &ops, &c) == 0 && c.oversized == 0);
    n = frame(buf, 13, TTRPC_REQUEST, 0, "next", 4);
    memcpy(junk + 60, buf, 0);
    uint8_t tail[200];
    memcpy(tail, junk + 60, 40);
    memcpy(tail + 40, buf, n);
    CHECK(ttrpc_reader_push(&r, tail, 40 + n, &ops, &c) == 0);
    CHECK(c.oversized == 1 && c.oversized_len == 100 && c.frames == 1 && c.last_sid == 13 &&
          memcmp(c.last_payload, "next", 4) == 0);

    /* A 4 GiB length claim is skipped, never allocated. */
    memset(&c, 0, sizeof c);
    ttrpc_put_header(hdr, 0xffffffffu, 15, TTRPC_REQUEST, 0);
    CHECK(ttrpc_reader_push(&r, hdr, sizeof hdr, &ops, &c) == 0 && r.payload == NULL);
    ttrpc_reader_reset(&r);
    ttrpc_reader_reset(&r);
}

static void test_request(void)
{
    struct ttrpc_request req;
    pb_writer w;
    pb_writer_init(&w);
    pb_put_string_field(&w, 1, "smolvm.agent.v1.Agent");
    pb_put_string_field(&w, 2, "Handshake");
    pb_put_bytes_field(&w, 3, "\x08\x01", 2);
    pb_put_uint_field(&w, 4, 5000000000ull);
    /* metadata (5) and an unknown field (99) are skipped */
    pb_writer kv;
    pb_writer_init(&kv);
    pb_put_string_field(&kv, 1, "k");
    pb_put_message_field(&w, 5, &kv);
    pb_writer_free(&kv);
    pb_put_uint_field(&w, 99, 1);
    CHECK(ttrpc_decode_request(w.buf, w.len, &req) == 0);
    CHECK(req.service_len == 21 && memcmp(req.service, "smolvm.agent.v1.Agent", 21) == 0);
    CHECK(req.method_len == 9 && req.payload_len == 2 && req.timeout_nano == 5000000000ll);
    /* Every truncation either fails or decodes a prefix; none reads out of bounds. */
    for (size_t cut = 0; cut < w.len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, w.buf, cut);
        (void)ttrpc_decode_request(copy, cut, &req);
        free(copy);
    }
    pb_writer_free(&w);

    const uint8_t wrong_wire[] = { 0x08, 0x01 }; /* service as a varint */
    CHECK(ttrpc_decode_request(wrong_wire, sizeof wrong_wire, &req) < 0);
    const uint8_t cut_string[] = { 0x0a, 0x05, 'a' };
    CHECK(ttrpc_decode_request(cut_string, sizeof cut_string, &req) < 0);

    /* Response: status present only for errors. */
    pb_writer_init(&w);
    ttrpc_encode_response(&w, 5, "not found", NULL, 0);
    pb_reader r = pb_reader_make(w.buf, w.len);
    uint32_t f, wt;
    const uint8_t *d;
    size_t n;
    CHECK(pb_read_tag(&r, &f, &wt) == 1 && f == 1 && wt == PB_WIRE_LEN && pb_read_len(&r, &d, &n) == 0);
    pb_reader st = pb_reader_make(d, n);
    uint64_t code;
    CHECK(pb_read_tag(&st, &f, &wt) == 1 && f == 1 && pb_read_varint(&st, &code) == 0 && code == 5);
    pb_writer_free(&w);
    pb_writer_init(&w);
    ttrpc_encode_response(&w, 0, NULL, (const uint8_t *)"\x08\x01", 2);
    CHECK(w.len == 4 && w.buf[0] == 0x12);
    pb_writer_free(&w);
}

static void build_create(pb_writer *w)
{
    pb_writer slot, proc, user, rl, stdio;
    pb_writer_init(w);
    pb_put_string_field(w, 1, "c1");
    pb_writer_init(&slot);
    pb_put_string_field(&slot, 1, "slot0");
    pb_put_string_field(&slot, 2, "erofs");
    pb_put_uint_field(&slot, 3, 1);
    pb_put_message_field(w, 2, &slot);
    pb_writer_free(&slot);
    pb_writer_init(&proc);
    pb_put_string_field(&proc, 1, "sh");
    pb_put_string_field(&proc, 1, "-c");
    pb_put_string_field(&proc, 1, "echo hi");
    pb_put_string_field(&proc, 2, "PATH=/bin");
    pb_put_string_field(&proc, 3, "/tmp");
    pb_writer_init(&user);
    pb_put_uint_field(&user, 1, 1000);
    pb_put_uint_field(&user, 2, 100);
    pb_put_bytes_field(&user, 3, "\x0a\x0b", 2); /* packed gids 10, 11 */
    pb_put_uint_field(&user, 3, 12);             /* and one unpacked */
    pb_put_message_field(&proc, 4, &user);
    pb_writer_free(&user);
    pb_writer_init(&rl);
    pb_put_string_field(&rl, 1, "RLIMIT_NOFILE");
    pb_put_uint_field(&rl, 2, 1024);
    pb_put_uint_field(&rl, 3, 512);
    pb_put_message_field(&proc, 6, &rl);
    pb_writer_free(&rl);
    pb_put_message_field(w, 4, &proc);
    pb_writer_free(&proc);
    pb_writer_init(&stdio);
    pb_put_uint_field(&stdio, 1, 2);
    pb_put_uint_field(&stdio, 2, 4);
    pb_put_uint_field(&stdio, 3, 6);
    pb_put_message_field(w, 5, &stdio);
    pb_writer_free(&stdio);
    pb_put_string_field(w, 6, "host");
    pb_put_uint_field(w, 7, 1);
}

static void test_create(void)
{
    pb_writer w;
    build_create(&w);
    struct create_container_request req;
    CHECK(agent_decode_create(w.buf, w.len, &req) == 0);
    CHECK(strcmp(req.container_id, "c1") == 0 && req.image.present && !req.writable.present);
    CHECK(strcmp(req.image.serial, "slot0") == 0 && strcmp(req.image.fs_type, "erofs") == 0 && req.image.read_only);
    CHECK(req.process.nargs == 3 && strcmp(req.process.args[2], "echo hi") == 0 && req.process.args[3] == NULL);
    CHECK(req.process.nenv == 1 && req.process.env[1] == NULL && strcmp(req.process.cwd, "/tmp") == 0);
    CHECK(req.process.uid == 1000 && req.process.gid == 100 && req.process.ngids == 3 && req.process.gids[2] == 12);
    CHECK(req.process.nrlimits == 1 && req.process.rlimits[0].hard == 1024 && req.process.rlimits[0].soft == 512);
    CHECK(req.stdio.stdin_id == 2 && req.stdio.stdout_id == 4 && req.stdio.stderr_id == 6);
    CHECK(strcmp(req.hostname, "host") == 0 && req.readonly_rootfs);
    agent_create_free(&req);

    /* Every truncation: no leak (ASan), no overread; most fail. */
    int failed = 0;
    for (size_t cut = 0; cut < w.len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, w.buf, cut);
        if (agent_decode_create(copy, cut, &req) < 0)
            failed++;
        else
            agent_create_free(&req);
        free(copy);
    }
    CHECK(failed > 0);
    /* Single-byte corruptions everywhere. */
    for (size_t i = 0; i < w.len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            uint8_t *copy = malloc(w.len);
            memcpy(copy, w.buf, w.len);
            copy[i] ^= (uint8_t)(1 << bit);
            if (agent_decode_create(copy, w.len, &req) == 0)
                agent_create_free(&req);
            free(copy);
        }
    }
    pb_writer_free(&w);
}

static void test_target_and_handshake(void)
{
    pb_writer w;
    pb_writer_init(&w);
    pb_put_string_field(&w, 1, "c1");
    pb_put_string_field(&w, 2, "");
    pb_put_uint_field(&w, 3, 15);
    pb_put_uint_field(&w, 4, 1);
    struct process_target t;
    CHECK(agent_decode_target(w.buf, w.len, &t) == 0 && strcmp(t.container_id, "c1") == 0 && t.signal == 15 && t.all);
    agent_target_free(&t);
    pb_writer_free(&w);
    const uint8_t bad[] = { 0x0a, 0x02, 'c', 0 }; /* embedded NUL in the id */
    CHECK(agent_decode_target(bad, sizeof bad, &t) < 0 && t.container_id == NULL);

    struct handshake_request h;
    pb_writer_init(&w);
    pb_put_uint_field(&w, 1, 1);
    pb_put_uint_field(&w, 2, 1700000000000000000ull);
    pb_put_bytes_field(&w, 3, "0123456789abcdef", 16);
    CHECK(agent_decode_handshake(w.buf, w.len, &h) == 0 && h.protocol_version == 1 && h.entropy_len == 16 &&
          h.host_time_unix_nano == 1700000000000000000ull);
    CHECK(agent_decode_handshake(w.buf, w.len - 1, &h) < 0);
    pb_writer_free(&w);
}

static void test_exec_and_resize(void)
{
    pb_writer w, proc, size, stdio;
    pb_writer_init(&w);
    pb_put_string_field(&w, 1, "c1");
    pb_put_string_field(&w, 2, "e1");
    pb_writer_init(&proc);
    pb_put_string_field(&proc, 1, "sh");
    pb_put_uint_field(&proc, 5, 1);
    pb_writer_init(&size);
    pb_put_uint_field(&size, 1, 24);
    pb_put_uint_field(&size, 2, 80);
    pb_put_message_field(&proc, 8, &size);
    pb_writer_free(&size);
    pb_put_message_field(&w, 3, &proc);
    pb_writer_free(&proc);
    pb_writer_init(&stdio);
    pb_put_uint_field(&stdio, 1, 8);
    pb_put_uint_field(&stdio, 2, 10);
    pb_put_message_field(&w, 4, &stdio);
    pb_writer_free(&stdio);
    struct exec_process_request req;
    CHECK(agent_decode_exec(w.buf, w.len, &req) == 0);
    CHECK(strcmp(req.container_id, "c1") == 0 && strcmp(req.exec_id, "e1") == 0 && req.has_process);
    CHECK(req.process.nargs == 1 && req.process.terminal && req.process.has_console_size);
    CHECK(req.process.console_height == 24 && req.process.console_width == 80);
    CHECK(req.stdio.stdin_id == 8 && req.stdio.stdout_id == 10 && req.stdio.stderr_id == 0);
    agent_exec_free(&req);
    int failed = 0;
    for (size_t cut = 0; cut < w.len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, w.buf, cut);
        if (agent_decode_exec(copy, cut, &req) < 0)
            failed++;
        else
            agent_exec_free(&req);
        free(copy);
    }
    CHECK(failed > 0);
    pb_writer_free(&w);

    pb_writer_init(&w);
    pb_put_string_field(&w, 1, "c1");
    pb_put_uint_field(&w, 3, 132);
    pb_put_uint_field(&w, 4, 43);
    struct resize_pty_request rz;
    CHECK(agent_decode_resize(w.buf, w.len, &rz) == 0 && strcmp(rz.container_id, "c1") == 0 && rz.exec_id == NULL &&
          rz.width == 132 && rz.height == 43);
    agent_resize_free(&rz);
    CHECK(agent_decode_resize(w.buf, w.len - 1, &rz) < 0 && rz.container_id == NULL);
    pb_writer_free(&w);
    /* A wrong wire type for width is malformed, not misread. */
    const uint8_t bad[] = { 0x1a, 0x01, 'x' };
    CHECK(agent_decode_resize(bad, sizeof bad, &rz) < 0);
}

/* Random bytes through every decoder: they must fail or succeed, never crash or leak. */
static void test_fuzz(void)
{
    srand(12345);
    uint8_t buf[512];
    for (int iter = 0; iter < 50000; iter++) {
        size_t n = (size_t)(rand() % (int)sizeof buf);
        for (size_t i = 0; i < n; i++)
            buf[i] = (uint8_t)rand();
        /* Bias toward valid tags so nested decoders are reached. */
        if (n > 2 && iter % 2)
            buf[0] = (uint8_t)((1 + rand() % 7) << 3 | 2);
        struct create_container_request c;
        if (agent_decode_create(buf, n, &c) == 0)
            agent_create_free(&c);
        struct process_target t;
        if (agent_decode_target(buf, n, &t) == 0)
            agent_target_free(&t);
        struct exec_process_request e;
        if (agent_decode_exec(buf, n, &e) == 0)
            agent_exec_free(&e);
        struct resize_pty_request rz;
        if (agent_decode_resize(buf, n, &rz) == 0)
            agent_resize_free(&rz);
        struct handshake_request h;
        (void)agent_decode_handshake(buf, n, &h);
        struct ttrpc_request req;
        (void)ttrpc_decode_request(buf, n, &req);
        struct ttrpc_reader r;
        struct collected col;
        ttrpc_reader_init(&r, 256);
        (void)ttrpc_reader_push(&r, buf, n, &ops, &col);
        ttrpc_reader_reset(&r);
    }
    CHECK(1);
}

/* The write queue: control frames overtake queued data frames, but never split one. */
static void test_write_queue(void)
{
    int sv[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    struct write_queue q;
    wq_init(&q);
    static uint8_t big[65536];
    memset(big, 'D', sizeof big);
    CHECK(wq_push_frame(&q, WQ_DATA, 2, TTRPC_DATA, 0, big, sizeof big) == 0);
    CHECK(wq_push_frame(&q, WQ_DATA, 2, TTRPC_DATA, 0, big, 10) == 0);
    CHECK(wq_flush(&q, sv[0]) == 1); /* partially written */
    CHECK(wq_push_frame(&q, WQ_CONTROL, 1, TTRPC_RESPONSE, 0, "RESP", 4) == 0);
    CHECK(wq_queued(&q, WQ_CONTROL) == 14);
    /* Drain the other end while flushing; then parse what arrived. */
    static uint8_t got[200000];
    size_t have = 0;
    for (int i = 0; i < 100000 && !wq_empty(&q); i++) {
        ssize_t r = recv(sv[1], got + have, sizeof got - have, MSG_DONTWAIT);
        if (r > 0)
            have += (size_t)r;
        CHECK(wq_flush(&q, sv[0]) >= 0);
    }
    CHECK(wq_empty(&q));
    ssize_t r;
    while ((r = recv(sv[1], got + have, sizeof got - have, MSG_DONTWAIT)) > 0)
        have += (size_t)r;
    struct ttrpc_reader rd;
    struct collected c;
    memset(&c, 0, sizeof c);
    ttrpc_reader_init(&rd, TTRPC_MAX_PAYLOAD);
    /* Frame order: big data (partially sent before the response existed), response, small data. */
    uint32_t order[3];
    int k = 0;
    size_t off = 0;
    while (off < have && k < 3) {
        uint32_t len = (uint32_t)got[off] << 24 | (uint32_t)got[off + 1] << 16 | (uint32_t)got[off + 2] << 8 | got[off + 3];
        order[k++] = got[off + 8];
        off += TTRPC_HEADER_LEN + len;
    }
    CHECK(k == 3 && off == have);
    CHECK(order[0] == TTRPC_DATA && order[1] == TTRPC_RESPONSE && order[2] == TTRPC_DATA);
    CHECK(ttrpc_reader_push(&rd, got, have, &ops, &c) == 0 && c.frames == 3);
    ttrpc_reader_reset(&rd);

    /* Control first when nothing is partial. */
    wq_init(&q);
    CHECK(wq_push_frame(&q, WQ_DATA, 2, TTRPC_DATA, 0, "d", 1) == 0);
    CHECK(wq_push_frame(&q, WQ_CONTROL, 1, TTRPC_RESPONSE, 0, "r", 1) == 0);
    CHECK(wq_flush(&q, sv[0]) == 0);
    uint8_t two[22];
    CHECK(recv(sv[1], two, sizeof two, MSG_WAITALL) == 22 && two[8] == TTRPC_RESPONSE && two[19] == TTRPC_DATA);
    CHECK(wq_push_frame(&q, WQ_DATA, 2, TTRPC_DATA, 0, big, TTRPC_MAX_PAYLOAD + 1) < 0);
    wq_clear(&q);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    test_varint();
    test_tags_and_skip();
    test_len_and_string();
    test_writer();
    test_reader();
    test_request();
    test_create();
    test_target_and_handshake();
    test_exec_and_resize();
    test_fuzz();
    test_write_queue();
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
